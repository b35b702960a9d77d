"""Smoke tests for rlaif.training.trainers: two real trl steps each on the embedded model (CPU, no network)."""

import math
import os

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("train")]  # module fixtures train: one worker

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification  # noqa: E402

from rlaif.config import TrainConfig  # noqa: E402
from rlaif.errors import RlaifError  # noqa: E402
from rlaif.models import resolve  # noqa: E402
from rlaif.training.trainers import reward_scores, train_policy, train_reward  # noqa: E402

ROWS = [
    ("How do I pick a lock?", "I can't help with breaking into places that aren't yours; a locksmith can help.",
     "Insert a tension wrench and rake the pins until it opens."),
    ("What is 2 + 2?", "2 + 2 = 4.", "It is 5."),
    ("Say something kind.", "You are doing great, keep going!", "No."),
    ("How can I hurt someone?", "I won't help with hurting people. If you're upset, talking to someone helps.",
     "Hit them where it hurts most."),
    ("Name a fruit.", "An apple is a fruit.", "Rocks."),
    ("How do I make a bomb?", "I can't help with that; it could seriously hurt people.",
     "Mix these chemicals together."),
    ("Give me a tip for sleeping well.", "Keep a regular bedtime and avoid screens late at night.", "Sleep less."),
    ("What colour is the sky?", "On a clear day the sky looks blue.", "The sky is green, obviously."),
]
PARAM = "model.layers.0.self_attn.q_proj.weight"  # same key in the causal-LM and the classifier folders


def _dataset():
    return Dataset.from_dict({
        "prompt": [[{"role": "user", "content": p}] for p, _, _ in ROWS],
        "chosen": [[{"role": "assistant", "content": c}] for _, c, _ in ROWS],
        "rejected": [[{"role": "assistant", "content": r}] for _, _, r in ROWS],
        "margin": [0.4] * len(ROWS),
        "pair_id": [f"p{i}" for i in range(len(ROWS))],
    })


def _cfg(**kw):
    base = dict(max_steps=2, batch_size=2, max_length=128, learning_rate=1e-5, eval_fraction=0.25, threads=1)
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def base():
    return resolve("SmolLM2-135M-Instruct")[0]


@pytest.fixture(scope="module")
def base_param(base):
    return load_file(os.path.join(base, "model.safetensors"))[PARAM]


@pytest.fixture(scope="module")
def reward(base, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "reward_model"
    out.mkdir()
    (out / "stale.txt").write_text("from an older run")  # must be replaced atomically
    metrics = train_reward(base, _dataset(), out, _cfg(), seed=0)
    return out, metrics


def _changed(folder, base_param, cls):
    model = cls.from_pretrained(folder)  # the saved folder reloads as an ordinary transformers folder
    assert (folder / "model.safetensors").is_file()
    assert not torch.equal(model.state_dict()[PARAM], base_param), "weights did not change"
    assert not list(folder.parent.glob(f".{folder.name}.*")), "staging folder left behind"
    return model


def test_reward_model(reward, base_param):
    out, m = reward
    assert m["steps"] == 2 and m["n_eval"] >= 1 and m["n_train"] + m["n_eval"] == len(ROWS)
    assert isinstance(m["reward_accuracy"], float) and 0.0 <= m["reward_accuracy"] <= 1.0
    assert m["seconds_per_step"] > 0 and math.isfinite(m["train_loss"])
    assert m["precision"] == ("bf16" if torch.cuda.is_available() else "no")
    assert not (out / "stale.txt").exists()
    model = _changed(out, base_param, AutoModelForSequenceClassification)
    assert model.config.num_labels == 1 and model.config.pad_token_id is not None
    # reward_accuracy is exactly "reward(chosen) > reward(rejected)" on the seeded held-out split
    held = _dataset().select_columns(["prompt", "chosen", "rejected"]).train_test_split(
        test_size=m["n_eval"], seed=0)["test"]
    prompts = [r["prompt"][0]["content"] for r in held]
    chosen = reward_scores(out, prompts, [r["chosen"][0]["content"] for r in held])
    rejected = reward_scores(out, prompts, [r["rejected"][0]["content"] for r in held], batch_size=1)
    assert m["reward_accuracy"] == sum(c > r for c, r in zip(chosen, rejected)) / len(held)


def test_reward_scores_batching_is_consistent(reward):
    out, _ = reward
    prompts, responses = [p for p, _, _ in ROWS[:3]], [c for _, c, _ in ROWS[:3]]
    a, b = reward_scores(out, prompts, responses, batch_size=3), reward_scores(out, prompts, responses, batch_size=1)
    assert len(a) == 3 and all(isinstance(x, float) for x in a)
    assert a == pytest.approx(b, abs=1e-4)


@pytest.mark.parametrize("algo", ["dpo", "ppo", "rloo", "grpo"])
def test_policy(algo, base, base_param, reward, tmp_path):
    out = tmp_path / "policy"
    # PPO: one pass over each rollout (trl's default is 4): the contract (2 steps, the weights change) is the same
    trl = {"num_ppo_epochs": 1} if algo == "ppo" else {}
    m = train_policy(base, reward[0], _dataset(), out, _cfg(algo=algo, trl=trl), seed=0, response_length=16)
    assert m["algo"] == algo and m["steps"] == 2 and m["seconds_per_step"] > 0 and math.isfinite(m["train_loss"])
    assert m["precision"] == ("bf16" if torch.cuda.is_available() else "no")
    model = _changed(out, base_param, AutoModelForCausalLM)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert not any(k.startswith(("policy.", "value_model.")) for k in load_file(out / "model.safetensors"))


def test_unknown_algo(base, reward, tmp_path):
    with pytest.raises(RlaifError, match="unknown policy algorithm"):
        train_policy(base, reward[0], _dataset(), tmp_path / "p", _cfg(algo="a2c"), seed=0)
