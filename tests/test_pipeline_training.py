"""The training issue's contract, run for real on the embedded model:
`pipeline.py --constitution safety.yaml --num-prompts 8 --max-steps 2 --algo dpo --output-dir DIR`, with
short samples and 4 held-out prompts to keep it a smoke test (it took most of CI's time at the defaults); then
PPO on that run's preferences and reward model (`--stages policy --algo ppo` on a copy of the folder: the stages
before the policy do not depend on the algorithm, so running them again would only repeat the DPO run's)."""

import json
import shutil
import subprocess

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from rlaif.models import resolve

from conftest import pipeline_cmd

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("pipeline_training")]  # the PPO test reuses the DPO run
# PPO: one pass over each rollout (trl's default is 4) and 16-token rollouts (the default is 64, from max_length):
# about a third of the policy stage's time; the contract (2 steps, the weights change) is the same
PPO_SHORT = ("--trl", "num_ppo_epochs=1", "--trl", "response_length=16")
RUN = ("--constitution", "safety.yaml", "--num-prompts", 8, "--max-steps", 2, "--max-new-tokens", 16,
       "--eval-prompts", 4)


def _run(cwd, *args):
    proc = subprocess.run(pipeline_cmd(*RUN, *args), capture_output=True, text=True, cwd=cwd, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def dpo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline") / "run-dpo"
    _run(out.parent, "--algo", "dpo", "--output-dir", out)
    return out


@pytest.fixture
def ppo_run(dpo_run, tmp_path):
    out = tmp_path / "run-ppo"
    shutil.copytree(dpo_run, out, ignore=shutil.ignore_patterns("policy", "policy.done", "report.html"))
    summary = json.loads((out / "summary.json").read_text())
    for key in ("policy", "policy_win_rate", "reward_base", "reward_policy"):  # the PPO run must write its own
        del summary[key]
    (out / "summary.json").write_text(json.dumps(summary))
    _run(tmp_path, "--algo", "ppo", *PPO_SHORT, "--stages", "policy", "--output-dir", out)
    return out


@pytest.mark.parametrize("algo", ["dpo", "ppo"])
def test_full_pipeline_trains_and_evaluates(request, algo):
    out = request.getfixturevalue(f"{algo}_run")
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
