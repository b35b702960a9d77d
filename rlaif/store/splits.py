"""The train/eval split of a run folder, fixed at its first run (splits.json).

The held-out prompts (those after --num-prompts in the prompt file) are recorded the first time a run folder
gets prompts, and every later command on the folder evaluates on those same prompts. A command that would
train on a held-out prompt (an --sft-data demonstration included), or evaluate on a prompt that a preference row
came from, stops before it writes anything.
"""

from __future__ import annotations

import hashlib
import json
from typing import Iterator

from rlaif.errors import RlaifError
from rlaif.store.files import atomic_write_json, iter_jsonl


def prompt_id(prompt: str) -> str:
    """sha256 of the prompt, first 12 hex digits: a pairs.jsonl row's prompt_id (its pair_id ends in the first 8)."""
    return hashlib.sha256(prompt.encode()).hexdigest()[:12]


def _training_prompts(run, new_train: list[str]) -> Iterator[tuple[str, str]]:
    """(prompt_id, where it comes from) for every prompt a preference row could come from (repeats included)."""
    for p in new_train:
        yield prompt_id(p), "--num-prompts"
    for source in (run.pairs, run.preferences_jsonl, run.root / "revisions.jsonl"):  # revisions: SFT and CAI pairs
        for row in iter_jsonl(source):  # streamed: pairs.jsonl may hold millions of rows
            text = row["prompt"] if isinstance(row["prompt"], str) else row["prompt"][0]["content"]
            yield prompt_id(text), source.name


def resolve(run, train_prompts: list[str], eval_prompts: list[str]) -> list[str]:
    """The folder's eval prompts: those recorded in splits.json, else `eval_prompts` (recorded by `record`).
    Raises RlaifError (nothing written) when a training prompt is among them."""
    path = run.root / "splits.json"
    if path.exists():
        eval_prompts = [e["prompt"] for e in json.loads(path.read_text())["eval"]]
    held_out = {prompt_id(p): i for i, p in enumerate(eval_prompts)}
    for pid, source in _training_prompts(run, train_prompts):
        if pid in held_out:
            where = f"{path}" if path.exists() else "--num-prompts"
            raise RlaifError(f"prompt {pid} is held out for evaluation in this run folder, but it is a training "
                             f"prompt (from {source})", where,
                             "train on fewer prompts (a smaller --num-prompts), or use a new --output-dir")
    return eval_prompts


def check_demonstrations(rows: list[tuple[str, list[dict]]], eval_prompts: list[str]) -> None:
    """Raises RlaifError (nothing written) when a demonstration, (where, messages) from rlaif.stages.sft.sft_rows, has a
    held-out prompt as a user turn."""
    held_out = {p.strip(): prompt_id(p) for p in eval_prompts}
    for where, messages in rows:
        for m in messages:
            if m["role"] == "user" and (pid := held_out.get(m["content"].strip())):
                raise RlaifError(f"prompt {pid} is held out for evaluation in this run folder, but this --sft-data "
                                 "demonstration trains on it", where,
                                 "remove the row, or make the prompt a training prompt (a larger --num-prompts, in a "
                                 "new --output-dir)")


def record(run, eval_prompts: list[str], source: str | None) -> None:
    """Write splits.json once, at the folder's first run."""
    path = run.root / "splits.json"
    if not path.exists():
        atomic_write_json(path, {"prompts_file": source, "eval": [{"prompt_id": prompt_id(p), "prompt": p}
                                                                  for p in eval_prompts]})


def summary(run, eval_prompts: list[str]) -> dict:
    """n_train_prompts (distinct prompts that preference rows can come from), n_eval_prompts, eval_overlap."""
    train = {pid for pid, _ in _training_prompts(run, [])}
    return {"n_train_prompts": len(train), "n_eval_prompts": len(eval_prompts),
            "eval_overlap": len(train & {prompt_id(p) for p in eval_prompts})}
