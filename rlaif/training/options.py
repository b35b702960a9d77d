"""Training settings checked before anything loads, and those passed straight through to trl's configs."""

from __future__ import annotations

import dataclasses
import difflib
import typing

from rlaif.config import DEFAULT_MAX_STEPS, check_value
from rlaif.errors import RlaifError

# train.trl keys the project must own: the trainer's output_dir is the stage's checkpoint folder in the run folder.
RESERVED_TRL = {"output_dir": "the trainer writes its checkpoints into the run folder; choose it with --output-dir"}


def validate(cfg) -> None:
    """One line and exit 2 for a training setting that trl would reject later (or silently misuse). The fields'
    own choices and minimums are checked again here for callers that build a TrainConfig in code."""
    for f in dataclasses.fields(cfg):
        check_value(f, getattr(cfg, f.name), f"train.{f.name}", f"train.{f.name}")
    if cfg.warmup_steps > 1 and cfg.warmup_steps != int(cfg.warmup_steps):
        raise RlaifError(f"warmup_steps {cfg.warmup_steps} is neither a whole number of steps nor a share in [0, 1)",
                         "--warmup-steps", "pass a share such as 0.1, or a number of steps such as 10")
    if cfg.num_train_epochs is not None and cfg.num_train_epochs <= 0:
        raise RlaifError("num_train_epochs must be positive", "--num-train-epochs", "pass a number such as 1 or 0.5")
    if cfg.reward == "judge" and cfg.algo not in ("grpo", "rloo"):
        raise RlaifError(f"--reward judge rates the completions an online trainer samples, and --algo {cfg.algo} "
                         "samples none" if cfg.algo == "dpo" else f"--reward judge is not supported with --algo {cfg.algo}",
                         "--reward", "pass --algo grpo or --algo rloo, or leave --reward at reward_model")
    if cfg.num_train_epochs is not None and cfg.max_steps is not None:
        raise RlaifError(f"both max_steps ({cfg.max_steps}) and num_train_epochs ({cfg.num_train_epochs}) are set, and "
                         "trl would run max_steps steps and ignore the epochs", "--max-steps/--num-train-epochs",
                         "set only one of them (train.max_steps or train.num_train_epochs)")


def trl_max_steps(cfg) -> int:
    """The max_steps trl gets: train.max_steps; else -1 (trl: train num_train_epochs) when num_train_epochs is
    given; else the project's default of 8 steps."""
    if cfg.max_steps is not None:
        return cfg.max_steps
    return -1 if cfg.num_train_epochs is not None else DEFAULT_MAX_STEPS


def trl_options(cfg) -> dict:
    """TrainingArguments fields common to every trl config (reward, DPO, RLOO, PPO)."""
    warmup = cfg.warmup_steps
    epochs = {} if cfg.num_train_epochs is None else {"num_train_epochs": float(cfg.num_train_epochs)}
    return {"gradient_accumulation_steps": cfg.gradient_accumulation_steps,
            "warmup_steps": int(warmup) if warmup >= 1 else float(warmup), **epochs}


# --- train.trl: any field of the trl config a stage builds -------------------------------------------------------

def trl_classes(stages=None, algo: str | None = None) -> list:
    """The trl config classes a run builds: sft -> SFTConfig, reward -> RewardConfig, policy -> the algo's. All six
    when the stages build none (the keys are still checked) or are unknown (stages=None). Imports trl (seconds)."""
    import warnings

    with warnings.catch_warnings():  # trl.experimental warns on import; the check's error is one line
        warnings.simplefilter("ignore")
        from trl import DPOConfig, RewardConfig, SFTConfig
        from trl.experimental.ppo import PPOConfig
        from trl.trainer.grpo_config import GRPOConfig
        from trl.trainer.rloo_config import RLOOConfig  # not `from trl`: that path imports trl's vLLM client

    policy = {"dpo": DPOConfig, "rloo": RLOOConfig, "ppo": PPOConfig, "grpo": GRPOConfig}
    every = [SFTConfig, RewardConfig, *policy.values()]
    if stages is None:
        return every
    built = ([SFTConfig] if "sft" in stages else []) + ([RewardConfig] if "reward" in stages else []) + \
            ([policy[algo]] if "policy" in stages and algo in policy else [])
    return built or every


def _fields(cls) -> dict:
    return {f.name: f for f in dataclasses.fields(cls) if f.init}


def _plain_type(f: dataclasses.Field):
    """int, float or bool when that is the field's type (or its type besides None), else None."""
    kind = f.type
    if not isinstance(kind, type):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        kind = args[0] if len(args) == 1 else None
    return kind if kind in (int, float, bool) else None


def _coerce(f: dataclasses.Field, key: str, value, where: str):
    """A value for a trl field of a plain type: a number for int and float fields (a quoted "1e-5" too), a bool
    for bool fields; a wrong one is refused here rather than deep inside trl. Other types are left to trl."""
    kind = _plain_type(f)
    if kind is None or value is None:
        return value
    if kind is bool:
        ok = isinstance(value, bool)
    else:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (
            kind is float or float(value).is_integer())
    if not ok:
        raise RlaifError(f"train.trl.{key} must be {kind.__name__}, got {value!r}", where,
                         f"pass a {kind.__name__} for trl's {f.name}")
    return value if kind is bool else kind(value)


def check_trl(options: dict, classes: list, where=lambda key: "train.trl") -> None:
    """Refuse a train.trl key that none of `classes` has (one line naming the key, where it came from and the
    nearest valid names), a reserved key, or a value of the wrong plain type."""
    fields = {}
    for cls in classes:
        for name, f in _fields(cls).items():
            fields.setdefault(name, f)
    names = ", ".join(c.__name__ for c in classes)
    for key, value in options.items():
        if key in RESERVED_TRL:
            raise RlaifError(f"train.trl.{key} is set by the project", where(key), RESERVED_TRL[key])
        if key not in fields:
            near = difflib.get_close_matches(key, list(fields), n=3, cutoff=0.6)
            raise RlaifError(f"unknown key `train.trl.{key}`: not a field of trl's {names}", where(key),
                             f"did you mean {' or '.join(near)}?" if near else
                             f"use a field of {names} (see trl's documentation of these configs)")
        for cls in classes:
            if key in _fields(cls):
                _coerce(_fields(cls)[key], key, value, where(key))


def trl_config(cls, cfg, **kwargs):
    """`cls(**kwargs)`, with each train.trl key that `cls` has on top: an explicit train.trl/--trl value wins over
    the project's (its settings and defaults). A key no trl config has is refused (callers that build a
    TrainConfig in code get the check the command line makes before anything loads)."""
    options = cfg.trl or {}
    if options:
        check_trl(options, trl_classes())
    own = _fields(cls)
    return cls(**{**kwargs, **{k: _coerce(own[k], k, v, "train.trl") for k, v in options.items() if k in own}})
