"""LoRA through peft, for real on the embedded model: the reward model and the DPO, RLOO and PPO policies
train an adapter of under 5% of the parameters, and each saved folder is the merged model (an ordinary
transformers folder) with the adapter kept in adapter/."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file
from test_train import PARAM, _dataset
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

from rlaif.config import TrainConfig
from rlaif.models import resolve
from rlaif.training.trainers import train_policy, train_reward

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("train_lora")]  # module fixtures train: one worker

R, ALPHA = 8, 16


def _cfg(**kw):
    return TrainConfig(**{**dict(max_steps=2, batch_size=2, max_length=64, learning_rate=1e-4, threads=1, lora_r=R,
                                 lora_alpha=ALPHA, lora_target_modules="all-linear"), **kw})


@pytest.fixture(scope="module")
def base():
    return resolve("SmolLM2-135M-Instruct")[0]


@pytest.fixture(scope="module")
def base_weights(base):
    return load_file(os.path.join(base, "model.safetensors"))


def _check_merge(folder, base_weights):
    """The merged weight is base + (alpha / r) * B @ A, recomputed here from the saved adapter."""
    config = json.loads((folder / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == R and config["lora_alpha"] == ALPHA
    adapter = load_file(folder / "adapter" / "adapter_model.safetensors")
    assert all("lora_" in k or k.endswith("score.weight") for k in adapter)
    stem = "base_model.model." + PARAM.replace(".weight", "")
    a, b = adapter[f"{stem}.lora_A.weight"], adapter[f"{stem}.lora_B.weight"]
    assert b.abs().max() > 0, "the adapter did not train"
    merged = load_file(folder / "model.safetensors")
    assert not any("lora" in k for k in merged)
    expected = base_weights[PARAM] + (ALPHA / R) * b @ a
    assert torch.allclose(merged[PARAM], expected, atol=1e-6)
    assert not torch.equal(merged[PARAM], base_weights[PARAM])


@pytest.fixture(scope="module")
def reward(base, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora") / "reward_model"
    return out, train_reward(base, _dataset(), out, _cfg(), seed=0)


def test_reward_lora(reward, base_weights, capfd):
    out, m = reward
    assert m["lora_r"] == R and 0 < m["trainable_share"] < 0.05 and m["steps"] == 2
    _check_merge(out, base_weights)
    model = AutoModelForSequenceClassification.from_pretrained(out)  # the score head came with the adapter
    assert model.config.num_labels == 1
    adapter = load_file(out / "adapter" / "adapter_model.safetensors")
    score = next(v for k, v in adapter.items() if k.endswith("score.weight"))
    assert torch.equal(model.score.weight.detach(), score)


@pytest.mark.parametrize("algo", ["dpo", "rloo", "ppo"])
def test_policy_lora(algo, base, base_weights, reward, tmp_path, capfd):
    out = tmp_path / "policy"
    # PPO: one pass over each rollout (trl's default is 4), as in test_train: the contract is the same
    trl = {"num_ppo_epochs": 1} if algo == "ppo" else {}
    m = train_policy(base, reward[0], _dataset(), out, _cfg(algo=algo, trl=trl), seed=0, response_length=8)
    err = capfd.readouterr().err
    line = next(x for x in err.splitlines() if "parameters (" in x)
    print(f"{algo}: {line}; {m['seconds_per_step']:.2f} s/step")
    assert 0 < m["trainable_share"] < 0.05 and m["steps"] == 2
    _check_merge(out, base_weights)
    model = AutoModelForCausalLM.from_pretrained(out)  # an ordinary folder: no peft needed to load it
    assert type(model).__name__ == "LlamaForCausalLM"
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok.apply_chat_template([{"role": "user", "content": "Name a fruit."}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    new = model.generate(**ids, max_new_tokens=5, do_sample=False)[0, ids["input_ids"].shape[1]:]
    assert len(new) > 0 and tok.decode(new, skip_special_tokens=True).strip()


def test_lora_resume_is_exact(base, tmp_path, monkeypatch):
    """A LoRA run resumed from its step-1 checkpoint ends with the adapter of the run that went straight through."""
    import shutil

    from rlaif.training import checkpoints

    cfg = _cfg(max_steps=2, save_steps=1, max_length=48)
    with monkeypatch.context() as m:
        m.setattr(checkpoints, "remove", lambda out_dir, state: None)  # keep the first run's checkpoints
        train_policy(base, tmp_path / "none", _dataset(), tmp_path / "run" / "policy", cfg, seed=0)
    ckpt = tmp_path / "run" / "checkpoints" / "policy"
    shutil.rmtree(ckpt / "checkpoint-2")  # as if killed between step 1's checkpoint and step 2's
    shutil.move(tmp_path / "run" / "policy", tmp_path / "straight")
    m = train_policy(base, tmp_path / "none", _dataset(), tmp_path / "run" / "policy", cfg, seed=0)
    assert m["resumed_from_step"] == 1 and m["steps"] == 2 and not ckpt.exists()
    for name in ("model.safetensors", "adapter/adapter_model.safetensors"):
        a, b = load_file(tmp_path / "straight" / name), load_file(tmp_path / "run" / "policy" / name)
        assert a.keys() == b.keys() and max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6
