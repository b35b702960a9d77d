#!/usr/bin/env python
"""LoRA against full training at the same size: trainable share and seconds per step, reward model and DPO.

Trains the embedded model (or --model) on the same small preference set twice per stage, once in full and once
with LoRA (--lora-r, all linear layers), each run in its own process (so its peak RSS is its own), with
checkpoints off so that only training is timed. Prints one line per run and `lora_speedup_dpo=...
lora_speedup_reward=...` last (full s/step over LoRA s/step). Writes --out (JSON). The first step includes
warm-up, so use --steps 4 or more.
    python bench/train_lora.py [--steps 6] [--lora-r 8] [--max-length 128] [--threads 1] [--out lora.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def _pairs(n: int):
    from datasets import Dataset

    from rlaif import ROOT
    from rlaif.store.files import read_jsonl

    rows = read_jsonl(ROOT / "data" / "dry_run_examples.jsonl")
    rows = [rows[i % len(rows)] for i in range(n)]
    return Dataset.from_dict({
        "prompt": [[{"role": "user", "content": r["prompt"]}] for r in rows],
        "chosen": [[{"role": "assistant", "content": r["response_a"]}] for r in rows],
        "rejected": [[{"role": "assistant", "content": r["response_b"]}] for r in rows]})


def _cpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor()


def _one(a, stage: str, r: int) -> dict:
    """One training run in this process; returns its figures and this process's peak RSS."""
    import resource

    from rlaif.config import TrainConfig
    from rlaif.models import resolve
    from rlaif.training.trainers import train_policy, train_reward

    base = resolve(a.model)[0]
    data = _pairs(a.steps * a.batch_size * 2)  # the reward stage holds a quarter out
    cfg = TrainConfig(max_steps=a.steps, batch_size=a.batch_size, max_length=a.max_length,
                      learning_rate=1e-4 if r else 1e-5, threads=a.threads, save_steps=-1, lora_r=r)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / stage
        m = train_reward(base, data, out, cfg, seed=0) if stage == "reward" else train_policy(base, out, data, out,
                                                                                             cfg, seed=0)
    return {"stage": stage, "lora_r": r, "trainable_share": m["trainable_share"],
            "seconds_per_step": m["seconds_per_step"],
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="SmolLM2-135M-Instruct")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="lora.json")
    p.add_argument("--one", nargs=2, metavar=("STAGE", "R"), help=argparse.SUPPRESS)  # internal: one run
    a = p.parse_args()
    if a.one:
        print("RESULT " + json.dumps(_one(a, a.one[0], int(a.one[1]))))
        return 0
    results = {"cpu": _cpu(), "model": a.model, "steps": a.steps, "batch_size": a.batch_size,
               "max_length": a.max_length, "threads": a.threads, "runs": []}
    for stage in ("reward", "dpo"):
        for r in (0, a.lora_r):
            proc = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--one", stage, str(r)],
                                  capture_output=True, text=True)
            lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode or not lines:
                sys.stderr.write(proc.stderr[-3000:])
                return 1
            run = json.loads(lines[-1][len("RESULT "):])
            results["runs"].append(run)
            print(f"{stage} lora_r={r}: trains {100 * run['trainable_share']:.2f}% of the parameters, "
                  f"{run['seconds_per_step']:.2f} s/step, peak RSS {run['peak_rss_gb']:.2f} GB", flush=True)
    by = {(x["stage"], x["lora_r"]): x["seconds_per_step"] for x in results["runs"]}
    for stage in ("reward", "dpo"):
        results[f"lora_speedup_{stage}"] = by[(stage, 0)] / by[(stage, a.lora_r)]
    Path(a.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"cpu={results['cpu']!r}")
    print(f"lora_speedup_dpo={results['lora_speedup_dpo']:.2f} lora_speedup_reward={results['lora_speedup_reward']:.2f}")
    return 0

if __name__ == "__main__":
    sys.exit(main())
