"""scripts/gpu_check.py --cpu --cli at its small size: the real pipeline.py command line with a random policy
and a larger random judge, all five stages, PPO and RLOO, kill -9 mid-judging then resume, and agreement.
About 1.5-2 minutes on 2 idle cores (seven pipeline processes); longer on a busy machine."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # loads the model in subprocesses, trains, or both

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = Path(__file__).parent / "fixtures" / "hh_small.jsonl"


def test_gpu_check_cli_on_cpu(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--cpu", "--cli", "--size", "small",
                           "--work", str(tmp_path / "work"), "--human", str(FIXTURE)],
                          capture_output=True, text=True, timeout=1200, env=env, cwd=tmp_path)
    out = proc.stdout
    assert proc.returncode == 0, out[-4000:] + proc.stderr[-2000:]
    assert out.strip().splitlines()[-1] == "OK"
    models = re.search(r"models: policy ([\d.]+)M, judge ([\d.]+)M", out)
    assert float(models.group(2)) > float(models.group(1))  # two different models, the judge the larger
    first = out.split("all five stages (dpo): exit 0")[1].split("reward,policy --algo ppo")[0]
    for stage in ("generate", "judge", "preferences", "reward", "policy"):  # seconds and peak RSS per stage
        m = re.search(rf"^  {stage}\s+([\d.]+) s, rss_mib (\d+)$", first, re.M)
        assert m and float(m.group(1)) >= 0 and int(m.group(2)) > 100, (stage, first)
    assert "reward,policy --algo ppo: exit 0" in out and "ppo policy weights changed: True" in out
    assert "reward,policy --algo rloo: exit 0" in out and "rloo policy weights changed: True" in out
    assert "policy --algo grpo --reward judge: exit 0" in out  # d-RLAIF, the judge alive through training
    calls = re.search(r"judge ratings during training: reward_calls (\d+)", out)
    assert calls and int(calls.group(1)) > 0
    assert "killed during judging: exit -9" in out
    killed = re.search(r"killed with (\d+) of (\d+) judgments in the cache: mid-judging", out)
    assert killed and 0 < int(killed.group(1)) < int(killed.group(2))
    assert "{'pairs.jsonl': True, 'judgments.jsonl': True, 'preferences.jsonl': True}" in out
    reused = re.search(r"reused (\d+) judgments from the cache, judged (\d+)", out)
    assert reused and int(reused.group(1)) >= int(killed.group(1))  # the resume kept what was judged before the kill
    assert re.search(r"^agreement \(\d+ HH rows\): exit 0", out, re.M)
    assert (tmp_path / "work" / "agreement" / "agreement.json").is_file()
