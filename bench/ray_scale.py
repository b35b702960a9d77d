#!/usr/bin/env python
"""Does --executor ray scale? The judge stage on the embedded model, side by side in one run, on the same pairs:
the local executor with 1 torch thread, then Ray with 1 replica, then 2 (1 torch thread and 1 CPU each).

Each configuration judges the same pairs.jsonl (generated once, locally) into a fresh run folder, from an empty
cache, in a fresh process; its time is the judge stage's own (summary.json: engine start included, the Ray
probe and replica start included). Prints one line per configuration and, last:
    scaling_efficiency=X ray_overhead=Y
scaling_efficiency = t(1 replica) / (2 x t(2 replicas)) (target >= 0.8); ray_overhead = t(1 replica) / t(local)
(target <= 1.10). The three runs' files are also compared byte for byte (`same_files`). ray_scale.json records
the CPU model, versions and the load average, as bench/throughput.py does.

    python bench/ray_scale.py [--pairs 64] [--max-new-tokens 48] [--out ray_scale.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
FILES = ("judgments.jsonl", "cache/judgments.jsonl")


def pipeline(out: Path, *args) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(ROOT / "pipeline.py"), "--constitution", "safety.yaml", "--dtype", "float32",
           "--output-dir", str(out), *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=out.parent)
    if proc.returncode != 0:
        sys.exit(f"ray_scale: {' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads((out / "summary.json").read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description="Judge-stage scaling of --executor ray on the embedded model")
    ap.add_argument("--pairs", type=int, default=64, help="pairs judged (each in both orders)")
    ap.add_argument("--max-new-tokens", type=int, default=48, help="response length of the generated pairs")
    ap.add_argument("--out", default="ray_scale.json")
    args = ap.parse_args()
    from throughput import machine

    info = machine()
    print(f"ray_scale: {info['cpu_model']}, {info['cpus']} CPUs; {args.pairs} pairs, judge stage only", flush=True)
    base = Path(tempfile.mkdtemp(prefix="rlaif-ray-scale-"))
    try:
        source = base / "source"
        pipeline(source, "--stages", "generate", "--num-prompts", args.pairs, "--max-new-tokens", args.max_new_tokens,
                 "--threads", 1)
        runs = {"local": (), "ray_1": ("--executor", "ray", "--ray-replicas", 1, "--ray-cpus-per-replica", 1),
                "ray_2": ("--executor", "ray", "--ray-replicas", 2, "--ray-cpus-per-replica", 1)}
        seconds, folders = {}, {}
        for name, extra in runs.items():
            out = folders[name] = base / name
            out.mkdir()
            shutil.copy(source / "pairs.jsonl", out / "pairs.jsonl")
            t = time.perf_counter()
            judge = pipeline(out, "--stages", "judge", *extra)["judge"]
            seconds[name] = judge["seconds"]
            print(f"{name}: judge stage {judge['seconds']} s for {judge['judgments']} judgments "
                  f"(process {time.perf_counter() - t:.1f} s)", flush=True)
        same = all((folders[n] / f).read_bytes() == (folders["local"] / f).read_bytes()
                   for n in ("ray_1", "ray_2") for f in FILES)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    summary = {"scaling_efficiency": round(seconds["ray_1"] / (2 * seconds["ray_2"]), 3),
               "ray_overhead": round(seconds["ray_1"] / seconds["local"], 3)}
    import ray

    info.update(ray=ray.__version__, load_average_end=os.getloadavg())
    Path(args.out).write_text(json.dumps({**info, "pairs": args.pairs, "judge_seconds": seconds, "same_files": same,
                                          **summary}, indent=2) + "\n")
    print(f"same_files={same}")
    print(" ".join(f"{k}={v}" for k, v in summary.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
