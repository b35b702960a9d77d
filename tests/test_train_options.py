"""Gradient accumulation, warmup, DPO's loss_type and the checkpoint settings reach trl's config objects;
bad values stop at the command line with one line and exit 2."""

import pytest

import trl
import trl.experimental.ppo as ppo
from conftest import run_cli
from rlaif.training import trainers as train
from rlaif.config import TrainConfig
from rlaif.models import resolve
from rlaif.training.trainers import train_policy, train_reward
from test_train import _dataset


class Captured(Exception):
    pass


def _capture(monkeypatch, module, name):
    seen = {}

    def fake(*args, **kwargs):
        seen.update(kwargs)
        raise Captured

    if name in ("RLOOTrainer", "GRPOTrainer"):  # imported through trainers._import_online (vllm hidden from trl)
        config_cls = train._import_online(name.removesuffix("Trainer").lower())[0]
        monkeypatch.setattr(train, "_import_online", lambda algo: (config_cls, fake))
    else:
        monkeypatch.setattr(module, name, fake)
    return seen


CFG = dict(max_steps=8, gradient_accumulation_steps=3, warmup_steps=0.25, loss_type="ipo", threads=1, max_length=64)


@pytest.mark.parametrize("algo,module,name", [("dpo", trl, "DPOTrainer"), ("rloo", trl, "RLOOTrainer"),
                                              ("ppo", ppo, "PPOTrainer"), ("grpo", trl, "GRPOTrainer")])
def test_policy_settings_reach_trl(algo, module, name, monkeypatch, tmp_path):
    seen = _capture(monkeypatch, module, name)
    (tmp_path / "reward_model").mkdir()
    (tmp_path / "reward_model" / "config.json").write_text("{}")
    if algo == "ppo":  # PPO loads the reward model itself: give it the base model's folder
        reward = resolve("SmolLM2-135M-Instruct")[0]
    else:
        reward = tmp_path / "reward_model"
    with pytest.raises(Captured):
        train_policy(resolve("SmolLM2-135M-Instruct")[0], reward, _dataset(), tmp_path / "policy",
                     TrainConfig(algo=algo, **CFG), seed=0, response_length=8)
    args = seen["args"]
    assert args.gradient_accumulation_steps == 3 and args.warmup_steps == 0.25
    assert seen.get("peft_config") is None
    if algo == "dpo":
        assert args.loss_type == ["ipo"]
    if algo == "ppo":  # no resume in trl's PPO, so no checkpoints; 8 updates of batch 2 x 3 accumulated
        assert args.save_strategy == "no" and args.total_episodes == 8 * 2 * 3
    else:
        assert args.save_strategy == "steps" and args.save_steps == 4 and args.save_total_limit == 2
        assert args.output_dir == str(tmp_path / "checkpoints" / "policy")


@pytest.mark.parametrize("algo", ["grpo", "rloo"])
@pytest.mark.parametrize("group, batch, per_generation", [(2, 2, 3), (4, 2, 2), (3, 2, 3), (4, 4, 3)])
def test_a_generation_batch_holds_whole_groups(algo, group, batch, per_generation, monkeypatch, tmp_path):
    """--num-generations G: trl's generation batch (batch x steps_per_generation) divides into groups of G
    (trl's own check is the oracle: it raises otherwise). per_generation 3 is trl's default (the accumulation)."""
    name = {"grpo": "GRPOTrainer", "rloo": "RLOOTrainer"}[algo]
    seen = _capture(monkeypatch, trl, name)
    (tmp_path / "reward_model").mkdir()
    (tmp_path / "reward_model" / "config.json").write_text("{}")
    cfg = TrainConfig(algo=algo, **{**CFG, "batch_size": batch, "num_generations": group})
    with pytest.raises(Captured):
        train_policy(resolve("SmolLM2-135M-Instruct")[0], tmp_path / "reward_model", _dataset(), tmp_path / "policy",
                     cfg, seed=0, response_length=8)
    args = seen["args"]
    assert args.num_generations == group and args.steps_per_generation == per_generation
    assert args.generation_batch_size == batch * per_generation and args.generation_batch_size % group == 0


def test_reward_settings_and_lora_reach_trl(monkeypatch, tmp_path):
    seen = _capture(monkeypatch, trl, "RewardTrainer")
    cfg = TrainConfig(**{**CFG, "warmup_steps": 5, "save_steps": 3, "lora_r": 4, "lora_alpha": 8,
                         "lora_target_modules": "q_proj, v_proj"})
    with pytest.raises(Captured):
        train_reward(resolve("SmolLM2-135M-Instruct")[0], _dataset(), tmp_path / "reward_model", cfg, seed=0)
    args, peft = seen["args"], seen["peft_config"]
    assert args.warmup_steps == 5 and args.gradient_accumulation_steps == 3 and args.save_steps == 3
    assert peft.r == 4 and peft.lora_alpha == 8 and set(peft.target_modules) == {"q_proj", "v_proj"}
    assert peft.task_type == "SEQ_CLS"


@pytest.mark.parametrize("flags,where", [
    (["--loss-type", "bogus"], "--loss-type"), (["--gradient-accumulation-steps", "0"], "--gradient-accumulation-steps"),
    (["--warmup-steps", "2.5"], "--warmup-steps"), (["--lora-r", "-1"], "--lora-r"),
    (["--reward", "judge"], "--reward"), (["--reward", "judge", "--algo", "ppo"], "--reward"),
    (["--algo", "grpo", "--num-generations", "1"], "--num-generations"),
])
def test_bad_training_settings_exit_2(flags, where, mini_constitution, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a real run (no --dry-run): nothing may be written
    try:
        rc = run_cli("--constitution", mini_constitution, "--num-prompts", 2, "--output-dir", tmp_path / "run", *flags)
    except SystemExit as e:  # argparse refuses a value outside the field's choices
        rc = e.code
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rlaif: error: ") and where in err[0] and "fix:" in err[0]
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()


def test_flags_set_the_fields(mini_constitution):
    from rlaif.cli import build_parser, make_config

    args = build_parser("run").parse_args(["--constitution", str(mini_constitution), "--save-steps", "3", "--lora-r",
                                           "8", "--lora-alpha", "32", "--lora-target-modules", "q_proj,v_proj",
                                           "--gradient-accumulation-steps", "4", "--warmup-steps", "0.1",
                                           "--loss-type", "hinge"])
    t = make_config(args).train
    assert (t.save_steps, t.lora_r, t.lora_alpha, t.lora_target_modules, t.gradient_accumulation_steps,
            t.warmup_steps, t.loss_type) == (3, 8, 32, "q_proj,v_proj", 4, 0.1, "hinge")
