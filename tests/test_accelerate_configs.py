"""configs/accelerate/*.yaml parse, accelerate accepts them, and cpu.yaml really launches a training stage."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

CONFIGS = ROOT / "configs" / "accelerate"
EXPECTED = {  # file -> (distributed_type, num_processes, mixed_precision, use_cpu)
    "cpu.yaml": ("NO", 1, "no", True),
    "single_gpu.yaml": ("NO", 1, "bf16", False),
    "multi_gpu.yaml": ("MULTI_GPU", 8, "bf16", False),
    "deepspeed_zero3.yaml": ("DEEPSPEED", 8, "bf16", False),
}


def test_every_config_is_known():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_accelerate_loads_and_validates_config(name):
    """accelerate's own loader (unknown keys raise) and its launch-argument validation, without launching."""
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    path = str(CONFIGS / name)
    cfg = load_config_from_file(path)
    dist, nproc, mp, cpu = EXPECTED[name]
    assert isinstance(cfg, ClusterConfig)
    assert (cfg.distributed_type.value, cfg.num_processes, str(cfg.mixed_precision), cfg.use_cpu) == (dist, nproc, mp, cpu)
    args = launch_command_parser().parse_args(["--config_file", path, "-m", "rlaif.cli.train_entry"])
    args, _, _ = _validate_launch_command(args)
    assert args.num_processes == nproc
    assert args.multi_gpu == (dist == "MULTI_GPU") and args.use_deepspeed == (dist == "DEEPSPEED")
    if dist == "DEEPSPEED":
        assert cfg.deepspeed_config["zero_stage"] == 3 and args.zero_stage == 3
        assert cfg.deepspeed_config["zero3_save_16bit_model"] is True  # saved folders hold full weights


@pytest.mark.slow
def test_accelerate_launch_cpu_trains_a_loadable_reward_model(tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification

    from rlaif.models import resolve

    rows = [("Name a colour.", "Blue is a colour.", "Potato."), ("What is 1 + 1?", "1 + 1 = 2.", "It is 11."),
            ("Say hello.", "Hello! How can I help?", "Go away."), ("Is fire hot?", "Yes, fire is hot.", "No.")]
    Dataset.from_dict({
        "prompt": [[{"role": "user", "content": p}] for p, _, _ in rows],
        "chosen": [[{"role": "assistant", "content": c}] for _, c, _ in rows],
        "rejected": [[{"role": "assistant", "content": r}] for _, _, r in rows],
        "margin": [0.3] * 4, "pair_id": ["a", "b", "c", "d"],
    }).save_to_disk(tmp_path / "prefs")
    out = tmp_path / "reward_model"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / "cpu.yaml"),
           "-m", "rlaif.cli.train_entry", "--base-model", resolve("SmolLM2-135M-Instruct")[0],
           "--preferences", str(tmp_path / "prefs"), "--output-dir", str(out), "--stage", "reward",
           "--max-steps", "1", "--batch-size", "2", "--max-length", "96", "--threads", "1"]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads(proc.stdout.strip().splitlines()[-1])
    assert metrics["steps"] == 1 and metrics["n_eval"] == 1
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.num_labels == 1 and (Path(out) / "model.safetensors").is_file()
