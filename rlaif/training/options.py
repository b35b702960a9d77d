"""Training settings checked before anything loads, and those passed straight through to trl's configs."""

from __future__ import annotations

import dataclasses

from rlaif.config import check_value
from rlaif.errors import RlaifError


def validate(cfg) -> None:
    """One line and exit 2 for a training setting that trl would reject later (or silently misuse). The fields'
    own choices and minimums are checked again here for callers that build a TrainConfig in code."""
    for f in dataclasses.fields(cfg):
        check_value(f, getattr(cfg, f.name), f"train.{f.name}", f"train.{f.name}")
    if cfg.warmup_steps > 1 and cfg.warmup_steps != int(cfg.warmup_steps):
        raise RlaifError(f"warmup_steps {cfg.warmup_steps} is neither a whole number of steps nor a share in [0, 1)",
                         "--warmup-steps", "pass a share such as 0.1, or a number of steps such as 10")


def trl_options(cfg) -> dict:
    """TrainingArguments fields common to every trl config (reward, DPO, RLOO, PPO)."""
    warmup = cfg.warmup_steps
    return {"gradient_accumulation_steps": cfg.gradient_accumulation_steps,
            "warmup_steps": int(warmup) if warmup >= 1 else float(warmup)}
