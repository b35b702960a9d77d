#!/usr/bin/env python
"""The pipeline's own cost at scale: generate -> judge -> preferences through a fake engine.

The fake engine answers instantly (1.5 KB responses, hash-based verdicts), so what is measured is the
pipeline alone: rendering judge prompts, cache keys and lookups, files, preferences. Not model speed.
Each size runs in a fresh process (peak RSS is that process's), then the judge stage runs again over its
full cache (a resume). Prints one line per size and, last:
    rss_growth_mb=X overhead_ms_per_judgment=Y resume_s_per_million=Z
growth: peak RSS at the largest size minus the smallest; overhead: the judge stage's seconds outside the
engine per judgment, at the largest size; resume: seconds to re-run the judge stage over a full cache, per
million judgments, at the largest size. Targets: < 500 MB, < 0.2 ms, < 60 s.

With --executor ray the generate and judge stages run on 2 Ray replicas (a fake engine each) and the peak RSS
is the driver's (the process that writes the run folder); the fake engine's time is then the replicas', and
`overhead_ms_per_judgment` counts all of the judge stage.

    python bench/scale.py [--quick] [--pairs 10000,100000,1000000] [--executor local|ray] [--workdir DIR]
                          [--out scale.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
FILLER = ("The answer depends on the details, so here is a careful, general walk through the options, the risks "
          "of each, and where to find reliable help. ") * 12  # 1.5 KB with the seeded tag in front


def child(n: int, workdir: Path, stages: str, executor: str = "local") -> dict:
    """One pipeline run in this process; returns its figures."""
    import hashlib
    import math

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from rlaif.cli import main
    from rlaif.engines import factory
    from rlaif.engines.base import row_seeds
    from rlaif.engines.fake import FakeEngine

    class PipelineCostOnly(FakeEngine):
        """A fake engine that counts its own time, so the pipeline's time can be told apart."""

        def __init__(self):
            super().__init__("scale-fake")
            self.seconds = 0.0

        def generate(self, conversations, *, seed, **kw):
            t = time.perf_counter()
            tags = [hashlib.sha256(f"{s}:{c[-1]['content']}".encode()).hexdigest()[:16]
                    for s, c in zip(row_seeds(seed, len(conversations)), conversations)]
            out = [f"#{tag} {FILLER}"[:1536] for tag in tags]
            self.seconds += time.perf_counter() - t
            return out

        def label_logprobs(self, conversations, labels):
            t = time.perf_counter()
            out = []
            for c in conversations:
                p = int(hashlib.sha256(c[-1]["content"].encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
                p = min(max(p, 1e-6), 1 - 1e-6)
                out.append({labels[0]: math.log(p), labels[1]: math.log(1 - p)})
            self.seconds += time.perf_counter() - t
            return out

    engine = PipelineCostOnly()
    factory.EnginePool.get = lambda self, model, base_url=None: engine
    flags = []
    if executor == "ray":  # the generate and judge stages' blocks go to 2 Ray replicas, each with its own fake engine
        from rlaif.engines.replicas import RayEngine

        factory.EnginePool.replicated = lambda self, model, base_url=None, judge=False: RayEngine(
            self.cfg, model, base_url, "fake", build=lambda cfg, spec: PipelineCostOnly())
        flags = ["--executor", "ray", "--ray-replicas", "2", "--ray-cpus-per-replica", "1"]
    import rlaif.models

    rlaif.models.resolve = lambda name: (name, f"fake:{name}")
    out = workdir / "run"
    t = time.perf_counter()
    rc = main(["--constitution", "safety.yaml", "--prompts", str(workdir / "prompts.txt"), "--num-prompts", "0",
               "--output-dir", str(out), "--stages", stages, "--seed", "0", *flags])
    seconds = time.perf_counter() - t
    assert rc == 0, rc
    summary = json.loads((out / "summary.json").read_text())
    judge = summary["judge"]
    return {"pairs": n, "stages": stages, "seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "judgments": judge["judgments"], "judged": judge["judged"], "judge_s": judge["seconds"],
            "engine_s": engine.seconds, "stage_s": {s: summary[s]["seconds"] for s in stages.split(",")}}


def run_child(n: int, workdir: Path, stages: str, executor: str) -> dict:
    cmd = [sys.executable, __file__, "--child", str(n), "--workdir", str(workdir), "--stages", stages,
           "--executor", executor]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"scale: the run at {n} pairs failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description="The pipeline's own cost at scale (fake engine: no model time)")
    ap.add_argument("--pairs", default="10000,100000,1000000", help="comma-separated sizes")
    ap.add_argument("--quick", action="store_true", help="10k and 100k only")
    ap.add_argument("--workdir", help="where the runs go (default: a temporary folder, removed after)")
    ap.add_argument("--out", default="scale.json")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--stages", default="generate,judge,preferences", help=argparse.SUPPRESS)
    ap.add_argument("--executor", choices=("local", "ray"), default="local",
                    help="ray: generate and judge on 2 Ray replicas (a fake engine each); peak RSS is the driver's")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, Path(args.workdir), args.stages, args.executor)))
        return 0
    sizes = [10_000, 100_000] if args.quick else [int(s) for s in args.pairs.split(",")]
    base = Path(args.workdir or tempfile.mkdtemp(prefix="rlaif-scale-"))
    from rlaif.engines.dtype import cpu_model

    machine = {"executor": args.executor, "cpu_model": cpu_model(), "cpus": os.cpu_count(),
               "python": platform.python_version(), "load_average_start": round(os.getloadavg()[0], 2)}
    print("engine: fake (instant answers, 1.5 KB responses): these figures are the pipeline's own cost, not a "
          f"model's; constitution safety.yaml; {machine['cpu_model']}, {machine['cpus']} CPUs", flush=True)
    results = []
    try:
        for n in sizes:
            workdir = base / str(n)
            shutil.rmtree(workdir, ignore_errors=True)
            workdir.mkdir(parents=True)
            with open(workdir / "prompts.txt", "w") as f:
                for i in range(n):
                    f.write(f"Question {i}: how should I store, label and dispose of old household chemicals?\n")
            full = run_child(n, workdir, "generate,judge,preferences", args.executor)
            resume = run_child(n, workdir, "judge", args.executor)
            assert resume["judged"] == 0, resume
            r = {"pairs": n, "judgments": full["judgments"], "peak_rss_mb": round(max(full["peak_rss_mb"], resume["peak_rss_mb"]), 1),
                 "seconds": round(full["seconds"], 1), "stage_seconds": full["stage_s"],
                 "overhead_ms_per_judgment": round((full["judge_s"] - full["engine_s"]) / full["judgments"] * 1000, 4),
                 "engine_s": round(full["engine_s"], 2), "resume_s": round(resume["judge_s"], 2),
                 "resume_peak_rss_mb": round(resume["peak_rss_mb"], 1)}
            results.append(r)
            print(f"pairs={n} judgments={r['judgments']} peak_rss_mb={r['peak_rss_mb']} seconds={r['seconds']} "
                  f"overhead_ms_per_judgment={r['overhead_ms_per_judgment']} resume_s={r['resume_s']} "
                  f"(stages {r['stage_seconds']}, fake engine {r['engine_s']} s)", flush=True)
            if not args.workdir:
                shutil.rmtree(workdir, ignore_errors=True)
    finally:
        if not args.workdir:
            shutil.rmtree(base, ignore_errors=True)
    last = results[-1]
    summary = {"rss_growth_mb": round(last["peak_rss_mb"] - results[0]["peak_rss_mb"], 1),
               "overhead_ms_per_judgment": last["overhead_ms_per_judgment"],
               "resume_s_per_million": round(last["resume_s"] / last["judgments"] * 1e6, 1)}
    machine["load_average_end"] = round(os.getloadavg()[0], 2)
    Path(args.out).write_text(json.dumps({"engine": "fake (pipeline cost only)", **machine, "sizes": results, **summary},
                                         indent=2) + "\n")
    print(" ".join(f"{k}={v}" for k, v in summary.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
