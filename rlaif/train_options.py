"""Training settings checked before anything loads, and those passed straight through to trl's configs."""

from __future__ import annotations

from rlaif.errors import RlaifError

# trl 1.12 DPOConfig.loss_type values (aot_unpaired needs unpaired data, so it is left out)
DPO_LOSSES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
              "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")


def validate(cfg) -> None:
    """One line and exit 2 for a training setting that trl would reject later (or silently misuse)."""
    if cfg.gradient_accumulation_steps < 1:
        raise RlaifError("gradient_accumulation_steps must be at least 1", "--gradient-accumulation-steps",
                         "pass 1 (no accumulation) or more")
    if cfg.warmup_steps < 0 or (1 < cfg.warmup_steps != int(cfg.warmup_steps)):
        raise RlaifError(f"warmup_steps {cfg.warmup_steps} is neither a whole number of steps nor a share in [0, 1)",
                         "--warmup-steps", "pass a share such as 0.1, or a number of steps such as 10")
    if cfg.loss_type not in DPO_LOSSES:
        raise RlaifError(f"unknown DPO loss_type {cfg.loss_type!r}", "--loss-type", f"use one of {', '.join(DPO_LOSSES)}")
    if cfg.lora_r < 0 or (cfg.lora_r and cfg.lora_alpha <= 0):
        raise RlaifError("lora_r must be 0 (off) or positive, and lora_alpha positive", "--lora-r",
                         "pass --lora-r 0, or e.g. --lora-r 8 --lora-alpha 16")


def trl_options(cfg) -> dict:
    """TrainingArguments fields common to every trl config (reward, DPO, RLOO, PPO)."""
    warmup = cfg.warmup_steps
    return {"gradient_accumulation_steps": cfg.gradient_accumulation_steps,
            "warmup_steps": int(warmup) if warmup >= 1 else float(warmup)}
