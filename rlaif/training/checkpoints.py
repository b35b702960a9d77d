"""Trainer checkpoints inside the run folder, and which one a rerun resumes from.

A stage that writes `RUN/reward_model` keeps HF/trl checkpoints in `RUN/checkpoints/reward_model/checkpoint-N`
(the trainer's own format: weights, optimizer, scheduler, RNG states, trainer_state.json). The trainer writes
trainer_state.json last, so a folder without a readable one, or whose step does not match its name, was cut
short by a crash: it is deleted, never loaded. A fingerprint of the settings and the data sits beside the
checkpoints; when a rerun trains with other settings or data, the old checkpoints are dropped and training
starts over. The folder is removed once the stage's final model is in place.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
import sys
from pathlib import Path

_NAME = re.compile(r"^checkpoint-(\d+)$")
# Settings that do not change the trained weights: a rerun may change them and still resume.
_NEUTRAL = {"eval_prompts", "report_to", "threads", "save_steps", "rounds"}  # rounds: how many, not how one trains


def folder(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    return out_dir.parent / "checkpoints" / out_dir.name


def save_steps(cfg) -> int:
    """Steps between checkpoints (0 when checkpoints are off)."""
    from rlaif.training.options import trl_max_steps

    if cfg.save_steps < 0:
        return 0
    steps = trl_max_steps(cfg)  # -1: num_train_epochs decides, and auto is HF's default of 500
    return cfg.save_steps or (max(1, min(500, steps // 2)) if steps > 0 else 500)


def fingerprint(stage: str, base_model: str, cfg, seed: int, dataset, extra: str = "") -> str:
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _NEUTRAL}
    h = hashlib.sha256(json.dumps([stage, str(base_model), settings, seed, extra], sort_keys=True).encode())
    for row in dataset.to_list():  # the content, not datasets' _fingerprint (random for a dataset saved anew)
        h.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode())
    return h.hexdigest()


def step_of(path) -> int:
    return int(_NAME.match(Path(path).name).group(1))


def _step(path: Path) -> int | None:
    """The checkpoint's step if it is complete, else None."""
    m = _NAME.match(path.name)
    if not m or not path.is_dir():
        return None
    try:
        state = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return int(m.group(1)) if state.get("global_step") == int(m.group(1)) else None


def prepare(out_dir: Path, fp: str, state, label: str) -> str | None:
    """Make the checkpoint folder ready on every rank; return the newest complete checkpoint to resume from."""
    ckpt = folder(out_dir)
    stamp = ckpt / "fingerprint.txt"
    if state.is_main_process:
        if ckpt.exists() and (not stamp.exists() or stamp.read_text().strip() != fp):
            if any(ckpt.glob("checkpoint-*")):
                print(f"rlaif: {label}: settings or data changed since the checkpoints in {ckpt} were saved; "
                      "training from the start", file=sys.stderr)
            shutil.rmtree(ckpt)
        ckpt.mkdir(parents=True, exist_ok=True)
        stamp.write_text(fp + "\n")
        for path in ckpt.glob("checkpoint-*"):
            if _step(path) is None:
                print(f"rlaif: {label}: ignoring incomplete checkpoint {path.name} (no trainer_state.json)",
                      file=sys.stderr)
                shutil.rmtree(path, ignore_errors=True)
    state.wait_for_everyone()
    done = sorted((s, p) for p in ckpt.glob("checkpoint-*") if (s := _step(p)) is not None)
    if not done:
        return None
    step, path = done[-1]
    if state.is_main_process:
        print(f"rlaif: {label}: resuming from {path} (step {step})", file=sys.stderr)
    return str(path)


def remove(out_dir: Path, state) -> None:
    """Drop the stage's checkpoints once its final folder is in place (main process)."""
    if state.is_main_process:
        ckpt = folder(out_dir)
        shutil.rmtree(ckpt, ignore_errors=True)
        try:
            ckpt.parent.rmdir()  # only when no other stage's checkpoints are left
        except OSError:
            pass
    state.wait_for_everyone()
