#!/usr/bin/env python
"""A reward model as the judge, measured on HH-RLHF harmless pairs whose prompts it never saw.

1. Split ../shared/data/hh-rlhf-harmless-base-test.jsonl.gz (2,312 rows, MIT licence) by prompt: a row goes to
   held-out when sha256("hh-harmless-split:<seed>:<prompt>") falls in the last 20%, so rows sharing a prompt
   share a part. The split is shipped in data/hh-harmless/ (train.jsonl.gz, heldout.jsonl.gz, the rows
   unchanged); this script writes it when missing (--source) and checks it otherwise.
2. Train a reward model with the project's reward stage (python -m rlaif.cli.train_entry --stage reward) from the
   embedded model, on train rows converted to trl's conversational preference format (prompt: the conversation
   before the last Assistant turn as one user message, chosen/rejected: the final turns), the same format
   `rlaif agreement` scores them in. Rows longer than --max-length tokens are left out of training (the trainer
   would cut their final turns), then the first --train-pairs in file order are used.
3. `rlaif agreement --human data/hh-harmless/heldout.jsonl.gz --limit N --judge-model rm:WORK/reward_model` and
   the same command with the embedded generative judge, on the same held-out rows.

Prints the figures (agreement, Wilson 95% interval, n) as JSON and writes them, with the commands, the CPU model
and versions, to docs/hh_reward_<cpu>.json.
    python bench/hh_reward.py [--work DIR] [--limit 300] [--train-pairs 400] [--steps 100] [--out FILE]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

SOURCE = ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"
SPLIT = ROOT / "data" / "hh-harmless"
ASSISTANT = "\n\nAssistant:"
HELDOUT_SHARE = 0.2


def prompt_of(row: dict) -> str:
    """The conversation before the last assistant turn of `chosen` (as the HH reader splits it)."""
    text = row["chosen"]
    return text[:text.rfind(ASSISTANT)].strip()


def held_out(prompt: str, seed: int = 0) -> bool:
    h = hashlib.sha256(f"hh-harmless-split:{seed}:{prompt}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64 >= 1 - HELDOUT_SHARE


def _gzip_lines(path: Path, lines: list[str]) -> None:
    """Byte-identical on every run: no name or time in the gzip header."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as f:
        f.write("".join(line + "\n" for line in lines).encode("utf-8"))
    os.replace(tmp, path)


def split(source: Path) -> dict:
    """Write (or check) data/hh-harmless/{train,heldout}.jsonl.gz. Returns the counts."""
    with gzip.open(source, "rt", encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f if line.strip()]
    parts = {"train": [], "heldout": []}
    for line in lines:
        parts["heldout" if held_out(prompt_of(json.loads(line))) else "train"].append(line)
    for name, rows in parts.items():
        path = SPLIT / f"{name}.jsonl.gz"
        if path.exists():
            with gzip.open(path, "rt", encoding="utf-8") as f:
                if [line.rstrip("\n") for line in f] != rows:
                    sys.exit(f"{path} differs from the split of {source}; delete it to write it again")
        else:
            _gzip_lines(path, rows)
    train_prompts = {prompt_of(json.loads(r)) for r in parts["train"]}
    assert not train_prompts & {prompt_of(json.loads(r)) for r in parts["heldout"]}
    return {name: len(rows) for name, rows in parts.items()}


def preferences(work: Path, n_pairs: int, max_length: int) -> dict:
    """The train part as trl's conversational preference dataset (save_to_disk), read with the HH reader."""
    from datasets import Dataset

    from rlaif.evaluation.humans import read_human_pairs
    from rlaif.models import require
    from rlaif.training.tokenizer import load_tokenizer

    pairs, skipped = read_human_pairs(str(SPLIT / "train.jsonl.gz"), skip_bad_rows=True)
    tok = load_tokenizer(require("SmolLM2-135M-Instruct")[0])
    rows, too_long = [], 0
    for p in pairs:
        chosen, rejected = (p.response_a, p.response_b) if p.labels == ["a"] else (p.response_b, p.response_a)
        row = {"prompt": [{"role": "user", "content": p.prompt}], "chosen": [{"role": "assistant", "content": chosen}],
               "rejected": [{"role": "assistant", "content": rejected}]}
        if max(len(tok.apply_chat_template(row["prompt"] + row[c], tokenize=True, return_dict=True)["input_ids"])
               for c in ("chosen", "rejected")) > max_length:
            too_long += 1
            continue
        rows.append(row)
        if len(rows) >= n_pairs:
            break
    Dataset.from_list(rows).save_to_disk(str(work / "preferences"))
    return {"train_rows_read": len(pairs), "bad_rows_skipped": skipped, "left_out_too_long": too_long,
            "train_pairs": len(rows)}


def run(cmd: list[str], log: Path) -> float:
    print("$ " + shlex.join(cmd), flush=True)
    t = time.time()
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode:
        sys.exit(f"failed ({proc.returncode}): see {log}")
    return round(time.time() - t, 1)


def figures(folder: Path) -> dict:
    result = json.loads((folder / "agreement.json").read_text())
    return {name: {k: r.get(k) for k in ("agreement", "agreement_ci95", "n_decided", "n_pairs", "cohen_kappa",
                                         "position_consistency", "prefer_first", "judge_model", "mode", "seconds")}
            for name, r in result.items()}


def machine() -> dict:
    import platform

    import torch
    import transformers
    import trl

    from rlaif.engines.dtype import cpu_model

    return {"cpu_model": cpu_model(), "cpus": os.cpu_count(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__,
            "python": platform.python_version(), "cuda": torch.cuda.is_available(),
            "load_average_start": os.getloadavg()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", type=Path, default=SOURCE)
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "hh-reward")
    ap.add_argument("--limit", type=int, default=300, help="held-out rows judged by both judges")
    ap.add_argument("--train-pairs", type=int, default=400)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--learning-rate", type=float, default=2e-5)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    started = time.time()
    env = machine()
    slug = next((w for w in ("epyc", "xeon") if w in env["cpu_model"].lower()), None)
    slug = slug or re.sub(r"[^a-z0-9]+", "_", env["cpu_model"].lower()).strip("_")
    out = args.out or ROOT / "docs" / f"hh_reward_{slug}.json"
    args.work.mkdir(parents=True, exist_ok=True)
    counts = split(args.source)
    print(f"split: {counts}", flush=True)
    data = preferences(args.work, args.train_pairs, args.max_length)
    print(f"preferences: {data}", flush=True)
    py = sys.executable
    rm = args.work / "reward_model"
    train = [py, "-m", "rlaif.cli.train_entry", "--base-model", "SmolLM2-135M-Instruct", "--stage", "reward",
             "--preferences", str(args.work / "preferences"), "--output-dir", str(rm), "--max-steps", str(args.steps),
             "--batch-size", str(args.batch_size), "--learning-rate", str(args.learning_rate),
             "--max-length", str(args.max_length), "--eval-fraction", "0"]
    heldout = str(SPLIT / "heldout.jsonl.gz")
    common = ["agreement", "--constitution", "safety.yaml", "--human", heldout, "--limit", str(args.limit),
              "--skip-bad-rows"]
    judge_rm = [py, "pipeline.py", *common, "--judge-model", f"rm:{rm}", "--output-dir", str(args.work / "agreement-rm")]
    judge_gen = [py, "pipeline.py", *common, "--output-dir", str(args.work / "agreement-generative")]
    seconds = {"train": run(train, args.work / "train.log")}
    seconds["agreement_rm"] = run(judge_rm, args.work / "agreement-rm.log")
    seconds["agreement_generative"] = run(judge_gen, args.work / "agreement-generative.log")
    rm_fig, gen_fig = figures(args.work / "agreement-rm"), figures(args.work / "agreement-generative")
    trained = json.loads((args.work / "train.log").read_text().strip().splitlines()[-1])
    result = {
        "reward_model_judge": rm_fig["model"], "generative_judge": gen_fig["model"],
        "length_baseline": gen_fig["length"], "random_baseline": gen_fig["random"],
        "split": {**counts, "by": "sha256 of the prompt (the conversation before the last Assistant turn)",
                  "heldout_share": HELDOUT_SHARE},
        "training": {**data, "steps": args.steps, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
                     "max_length": args.max_length, "train_loss": trained.get("train_loss"),
                     "seconds_per_step": trained.get("seconds_per_step")},
        "commands": {"train": shlex.join(train), "agreement_rm": shlex.join(judge_rm),
                     "agreement_generative": shlex.join(judge_gen)},
        "seconds": {**seconds, "total": round(time.time() - started, 1)}, "machine": env}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("reward_model_judge", "generative_judge", "length_baseline",
                                             "random_baseline")}, indent=2))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
