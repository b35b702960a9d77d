"""The training issue's contract, run for real on the embedded model:
`pipeline.py --constitution safety.yaml --num-prompts 8 --max-steps 2 --algo dpo|ppo --output-dir DIR`, with
short samples and 4 held-out prompts to keep it a smoke test (it took most of CI's time at the defaults)."""

import json
import subprocess

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from rlaif.models import resolve

from conftest import pipeline_cmd

pytestmark = pytest.mark.slow  # loads the model in subprocesses, trains, or both
# PPO: one pass over each rollout (trl's default is 4) and 16-token rollouts (the default is 64, from max_length):
# about a third of the policy stage's time; the contract (2 steps, the weights change) is the same
PPO_SHORT = ("--trl", "num_ppo_epochs=1", "--trl", "response_length=16")


@pytest.mark.parametrize("algo", ["dpo", "ppo"])
def test_full_pipeline_trains_and_evaluates(tmp_path, algo):
    out = tmp_path / f"run-{algo}"
    proc = subprocess.run(pipeline_cmd("--constitution", "safety.yaml", "--num-prompts", 8, "--max-steps", 2,
                                       "--algo", algo, "--max-new-tokens", 16, "--eval-prompts", 4,
                                       *(PPO_SHORT if algo == "ppo" else ()), "--output-dir", out),
                          capture_output=True, text=True, cwd=tmp_path, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert 0.0 <= summary["reward_accuracy"] <= 1.0
    assert 0.0 <= summary["policy_win_rate"] <= 1.0
    assert isinstance(summary["reward_base"], float) and isinstance(summary["reward_policy"], float)
    assert summary["policy"]["algo"] == algo and summary["policy"]["steps"] == 2
    assert summary["policy"]["evaluation"]["n_prompts"] == 4  # held out: the 4 prompts after the first 8
    reward = AutoModelForSequenceClassification.from_pretrained(out / "reward_model")
    policy = AutoModelForCausalLM.from_pretrained(out / "policy")
    base = AutoModelForCausalLM.from_pretrained(resolve("SmolLM2-135M-Instruct")[0])
    key = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(policy.state_dict()[key], base.state_dict()[key])
    assert reward.config.num_labels == 1
    for stage in ("generate", "judge", "preferences", "reward", "policy"):
        assert (out / "stages" / f"{stage}.done").exists()
    page = (out / "report.html").read_text()
    assert "policy_win_rate" in page and "<img" in page
