"""bench/scale.py runs end to end on a tiny size: pairs really judged (not skipped as identical), its last line
and its JSON as documented. (Its figures are measured by hand, not in tests.)"""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # loads the model in subprocesses, trains, or both

ROOT = Path(__file__).resolve().parent.parent


def test_scale_bench_judges_every_pair_and_prints_its_summary(tmp_path):
    out = tmp_path / "scale.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "scale.py"), "--pairs", "30,60", "--out", str(out)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"rss_growth_mb=-?[\d.]+ overhead_ms_per_judgment=[\d.]+ resume_s_per_million=[\d.]+", last), last
    result = json.loads(out.read_text())
    assert result["cpu_model"] and [s["pairs"] for s in result["sizes"]] == [30, 60]
    for size in result["sizes"]:  # safety.yaml judges one principle per pair, in both orders
        assert size["judgments"] == 2 * size["pairs"], size
        assert size["overhead_ms_per_judgment"] > 0 and size["resume_s"] > 0
