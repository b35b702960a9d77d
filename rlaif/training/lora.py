"""LoRA through peft: the LoraConfig handed to trl's trainers, and the merged folder saved from the adapter.

With `train.lora_r > 0` the trainer wraps the model itself (`peft_config=`) and trains only the adapter
(plus, for the reward model, its score head). At the end the adapter is saved to `OUT/adapter/`, then
loaded onto a fresh copy of the base model and merged (`merge_and_unload`), so `OUT/` stays an ordinary
transformers folder that `from_pretrained` and vLLM load as they load any other.
"""

from __future__ import annotations

from pathlib import Path

from rlaif.errors import RlaifError

ADAPTER = "adapter"


def peft_config(cfg, task: str):
    """A peft LoraConfig for task "CAUSAL_LM" or "SEQ_CLS", or None when LoRA is off."""
    if cfg.lora_r <= 0:
        return None
    try:
        from peft import LoraConfig
    except ImportError:
        raise RlaifError("--lora-r needs the peft package, which is not installed", "--lora-r",
                         "pip install 'peft==0.21.2' (or reinstall this package), or pass --lora-r 0") from None
    names = [m.strip() for m in cfg.lora_target_modules.split(",") if m.strip()]
    if not names:
        raise RlaifError("no LoRA target modules given", "--lora-target-modules",
                         "pass all-linear or comma-separated module names such as q_proj,v_proj")
    targets = names[0] if names == ["all-linear"] else names
    # SEQ_CLS makes peft train and save the freshly initialised score head too (modules_to_save).
    return LoraConfig(task_type=task, r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                      target_modules=targets, bias="none")


def trainable_share(model) -> dict:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable_params": trainable, "total_params": total, "trainable_share": trainable / total}


def merge_into(staging: Path, base_model: str, load_base) -> None:
    """Merge the adapter saved in staging/adapter into `load_base(base_model)` and save it into staging."""
    from peft import PeftModel

    merged = PeftModel.from_pretrained(load_base(base_model), str(Path(staging) / ADAPTER)).merge_and_unload()
    merged.save_pretrained(staging, safe_serialization=True)
