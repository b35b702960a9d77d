#!/usr/bin/env python
"""Time from `python pipeline.py label RUN_DIR` to the page answering (GET / returns 200), and one label's
round trip (POST /api/label, appended and fsynced). Prints figures; not a test.

    python bench/label_startup.py [RUN_DIR] [--repeats 5]

Without RUN_DIR it writes a throwaway run folder of 200 pairs with judgments (no model involved).
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def make_run(root: Path, n: int = 200) -> Path:
    (root / "pairs.jsonl").write_text("".join(json.dumps(
        {"pair_id": f"{i:05d}-bench", "prompt_id": str(i), "prompt": f"Prompt {i}?", "response_a": "word " * 60,
         "response_b": "other " * 40, "generator": "bench", "sampling": {}}) + "\n" for i in range(n)))
    (root / "judgments.jsonl").write_text("".join(json.dumps(
        {"pair_id": f"{i:05d}-bench", "principle_id": "harm", "order": o, "p_a": (i % 7) / 7, "verdict": None,
         "raw_output": {}, "judge": "bench", "key": f"{i}{o}", "mode": "logprob"}) + "\n"
        for i in range(n) for o in ("ab", "ba")))
    (root / "constitution.yaml").write_text((ROOT / "constitutions" / "safety.yaml").read_text())
    (root / "config.yaml").write_text("seed: 0\n")
    return root


def once(run_dir: Path) -> tuple[float, float]:
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(ROOT / "pipeline.py"), "label", str(run_dir), "--labeller", "bench"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = proc.stdout.readline().strip()
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    page = r.read()
                    break
            except OSError:
                time.sleep(0.005)
        ready = time.perf_counter() - start
        token = re.search(rb'name="rlaif-token" content="([^"]+)"', page).group(1).decode()
        request = urllib.request.Request(url + "api/label", json.dumps({"index": 0, "choice": "left"}).encode(),
                                         {"Content-Type": "application/json", "X-RLAIF-Token": token})
        t = time.perf_counter()
        urllib.request.urlopen(request, timeout=5).read()
        return ready, time.perf_counter() - t
    finally:
        proc.kill()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", nargs="?")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = make_run(Path(tmp))
        if args.run_dir:  # a copy of the run's inputs: the benchmark's labels never land in a real run
            for name in ("pairs.jsonl", "judgments.jsonl", "constitution.yaml", "config.yaml", "summary.json"):
                if (Path(args.run_dir) / name).exists():
                    shutil.copy(Path(args.run_dir) / name, run_dir / name)
        times = [once(run_dir) for _ in range(args.repeats)]
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    ready = [r for r, _ in times]
    label = [lab for _, lab in times]
    print(f"cpu: {cpu}; python {platform.python_version()}; run {args.run_dir or '(200 generated pairs)'}")
    print(f"rlaif label -> page answers: median {statistics.median(ready):.3f}s, min {min(ready):.3f}s, "
          f"max {max(ready):.3f}s over {len(ready)} starts")
    print(f"one label (POST, append + fsync): median {statistics.median(label) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
