"""Pass-through settings (issue 22, point 4): train.trl / --trl reach the trl config a stage builds, vllm / --vllm
reach vllm.LLM, unknown keys stop with one line before anything loads; --num-train-epochs is first-class."""

import subprocess
import sys
import types
from pathlib import Path

import pytest

from conftest import ROOT, pipeline_cmd
from rlaif.cli import build_parser, make_config
from rlaif.errors import RlaifError


def _cfg(tmp_path, yaml_text, *argv):
    config = tmp_path / "run.yaml"
    config.write_text(yaml_text)
    return make_config(build_parser("run").parse_args(["--config", str(config), *map(str, argv)]))


class Captured(Exception):
    pass


def test_yaml_and_flag_trl_keys_reach_the_dpo_config_the_stage_builds(tmp_path, monkeypatch):
    """The DPOConfig that train_policy hands DPOTrainer (the trainer is replaced by a recorder): YAML and flag keys
    merged, an explicit --trl winning over the first-class --learning-rate, the epochs deciding."""
    import datasets
    import trl

    from rlaif.models import resolve
    from rlaif.training.trainers import train_policy

    def trainer(*args, **kwargs):
        raise Captured(kwargs["args"])

    monkeypatch.setattr(trl, "DPOTrainer", trainer)
    cfg = _cfg(tmp_path, "train:\n  trl: {weight_decay: 0.01, label_smoothing: 0.1}\n  num_train_epochs: 2\n",
               "--trl", "lr_scheduler_type=cosine", "--trl", "learning_rate=1e-4", "--learning-rate", "5e-5")
    pairs = datasets.Dataset.from_list([{"prompt": [{"role": "user", "content": "Hi?"}],
                                         "chosen": [{"role": "assistant", "content": "Hello."}],
                                         "rejected": [{"role": "assistant", "content": "No."}]}])
    with pytest.raises(Captured) as got:
        train_policy(resolve("SmolLM2-135M-Instruct")[0], Path("unused"), pairs, tmp_path / "policy", cfg.train, 0)
    args = got.value.args[0]
    assert type(args).__name__ == "DPOConfig"
    assert args.weight_decay == 0.01 and args.label_smoothing == 0.1 and args.lr_scheduler_type == "cosine"
    assert args.learning_rate == 1e-4  # the explicit --trl wins over --learning-rate
    assert args.num_train_epochs == 2.0 and args.max_steps == -1  # the epochs decide, not the default 8 steps
    assert args.beta == 0.1 and args.output_dir == str(tmp_path / "checkpoints" / "policy")  # the project's own


def test_each_config_takes_the_keys_it_has_and_max_steps_defaults(tmp_path):
    from trl import RewardConfig, SFTConfig

    from rlaif.training.options import trl_config
    from rlaif.training.trainers import _setup

    cfg = _cfg(tmp_path, "train:\n  trl: {label_smoothing: 0.1, weight_decay: 2e-2}\n")
    _, _, common = _setup(cfg.train, 0, tmp_path / "reward_model")
    assert common["max_steps"] == 8 and "num_train_epochs" not in common  # no epochs given: the 8-step default
    reward = trl_config(RewardConfig, cfg.train, **common)  # label_smoothing is DPO's: not handed to RewardConfig
    assert reward.weight_decay == 0.02 and reward.max_steps == 8  # "2e-2" (a string to YAML 1.1) read as a number
    sft = trl_config(SFTConfig, cfg.train, **common)
    assert sft.weight_decay == 0.02
    cfg = _cfg(tmp_path, "", "--max-steps", "5", "--trl", "max_steps=3")
    assert trl_config(RewardConfig, cfg.train, **_setup(cfg.train, 0, tmp_path / "r")[2]).max_steps == 3


def test_max_steps_and_epochs_together_are_refused(tmp_path):
    with pytest.raises(RlaifError, match="both max_steps .* and num_train_epochs"):
        _cfg(tmp_path, "train:\n  max_steps: 4\n", "--num-train-epochs", "1")
    with pytest.raises(RlaifError, match="num_train_epochs must be positive"):
        _cfg(tmp_path, "", "--num-train-epochs", "0")


def test_yaml_and_flag_vllm_keys_reach_vllm_llm(tmp_path, monkeypatch):
    """vllm.LLM is replaced by a recorder; the engine is built through the pool, as a run builds it."""
    pytest.importorskip("vllm")
    import vllm

    from rlaif.engines import factory

    seen = []

    def recorder(**kwargs):
        seen.append(kwargs)
        config = types.SimpleNamespace(max_model_len=kwargs.get("max_model_len", 512))
        return types.SimpleNamespace(llm_engine=types.SimpleNamespace(model_config=config), shutdown=lambda: None)

    monkeypatch.setattr(vllm, "LLM", recorder)
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "2")
    monkeypatch.setenv("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    argv = ("--engine", "vllm", "--dtype", "float32", "--seed", "3")
    plain = factory.EnginePool(_cfg(tmp_path, "", *argv)).get("SmolLM2-135M-Instruct")
    cfg = _cfg(tmp_path, "vllm:\n  max_num_seqs: 4\n  kv_cache_dtype: fp8\n", *argv,
               "--vllm", "enforce_eager=true", "--vllm", "seed=5", "--vllm", "max_model_len=256")
    engine = factory.EnginePool(cfg).get("SmolLM2-135M-Instruct")
    args = seen[-1]
    assert args["max_num_seqs"] == 4 and args["kv_cache_dtype"] == "fp8"  # from the YAML
    assert args["enforce_eager"] is True and args["max_model_len"] == 256  # from the flags
    assert args["seed"] == 5 and seen[0]["seed"] == 3  # an explicit --vllm wins over --seed
    assert args["dtype"] == "float32" and args["enable_chunked_prefill"] is False  # the project's own, kept
    assert engine.identity != plain.identity and "max_num_seqs" in engine.identity  # they can change outputs
    engine.close()
    plain.close()


@pytest.mark.parametrize("form", ["trl-yaml", pytest.param("vllm-flag", marks=pytest.mark.vllm)])
def test_unknown_keys_stop_with_one_line_and_no_run_folder(tmp_path, form):
    if form == "vllm-flag":
        pytest.importorskip("vllm")
    config = tmp_path / "bad.yaml"
    if form == "trl-yaml":
        config.write_text("train:\n  trl:\n    weight_decai: 0.1\n")
        extra, want = ["--config", config], [str(config), "`train.trl.weight_decai`", "weight_decay"]
    else:
        config.write_text("seed: 1\n")
        extra, want = ["--config", config, "--vllm", "max_num_seq=4"], ["--vllm", "`vllm.max_num_seq`", "max_num_seqs"]
    run = tmp_path / "run"
    proc = subprocess.run(pipeline_cmd("--output-dir", run, "--stages", "generate,judge", *extra), cwd=tmp_path,
                          capture_output=True, text=True, timeout=180)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("rlaif: error: "), proc.stderr
    assert all(w in lines[0] for w in want), lines[0]
    assert "did you mean" in lines[0] and not run.exists()


def test_train_entry_checks_the_keys_of_its_stage(tmp_path):
    """train_entry's reward stage builds a RewardConfig only: a DPO field is refused there, before anything loads."""
    proc = subprocess.run(pipeline_cmd()[:1] + ["-m", "rlaif.cli.train_entry", "--base-model", "SmolLM2-135M-Instruct",
                                                "--preferences", tmp_path / "none", "--output-dir", tmp_path / "out",
                                                "--stage", "reward", "--trl", "label_smoothing=0.1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=180)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "RewardConfig" in lines[0] and "--trl" in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()


def test_ppo_sized_by_epochs_and_given_trl_keys(tmp_path, monkeypatch):
    """PPO is sized by total_episodes: with num_train_epochs it is left to trl (epochs x prompts), not 8 updates."""
    import trl.experimental.ppo as ppo

    from rlaif.config import TrainConfig
    from rlaif.models import resolve
    from rlaif.training.trainers import train_policy
    from test_train import _dataset

    def trainer(*args, **kwargs):
        raise Captured(kwargs["args"])

    monkeypatch.setattr(ppo, "PPOTrainer", trainer)
    base = resolve("SmolLM2-135M-Instruct")[0]
    cfg = TrainConfig(algo="ppo", num_train_epochs=1.5, threads=1, max_length=64, trl={"num_ppo_epochs": 2})
    with pytest.raises(Captured) as got:
        train_policy(base, base, _dataset(), tmp_path / "policy", cfg, seed=0, response_length=8)
    args = got.value.args[0]
    assert args.total_episodes is None and args.num_train_epochs == 1.5 and args.max_steps == -1
    assert args.num_ppo_epochs == 2


def test_vllm_keys_without_vllm_installed_stop_with_one_line(monkeypatch):
    from rlaif.engines.vllm import check_engine_args

    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm...` raises ImportError, as where it is missing
    monkeypatch.setitem(sys.modules, "vllm.engine.arg_utils", None)
    with pytest.raises(RlaifError) as e:
        check_engine_args({"enforce_eager": True}, lambda key: "--vllm")
    assert e.value.line().startswith("--vllm: `vllm.enforce_eager` is a vLLM engine argument, but vLLM is not "
                                     "installed")
