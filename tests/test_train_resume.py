"""Checkpoints and resume, for real: 4 DPO steps on the embedded model with a checkpoint every 2 steps,
killed with SIGKILL once the step-2 checkpoint is complete, then the same command again. The resumed run
must run steps 3 and 4 only (the second epoch) and end with the same weights as a run that was never
interrupted."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file
from test_train import _dataset

from conftest import ROOT

pytestmark = pytest.mark.slow  # loads the model in subprocesses, trains, or both


def _cmd(prefs, out, save_steps=2):
    return [sys.executable, "-m", "rlaif.cli.train_entry", "--base-model", "SmolLM2-135M-Instruct", "--preferences",
            str(prefs), "--stage", "policy", "--algo", "dpo", "--max-steps", "4", "--save-steps", str(save_steps),
            "--batch-size", "2", "--max-length", "48", "--learning-rate", "1e-5", "--threads", "1",
            "--output-dir", str(out)]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}


def _run(cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def _steps_logged(log: str) -> int:
    return len(re.findall(r"\{'loss': ", log))  # one dict per optimizer step (logging_steps=1)


def _complete(state_file) -> int | None:
    try:
        return json.loads(state_file.read_text())["global_step"]
    except (OSError, ValueError, KeyError):
        return None


def test_kill_and_resume_matches_an_uninterrupted_run(tmp_path):
    prefs = tmp_path / "preferences"
    _dataset().select(range(4)).save_to_disk(str(prefs))  # 4 pairs: steps 3 and 4 fall in the second epoch

    straight = tmp_path / "straight" / "policy"
    log = _run(_cmd(prefs, straight, save_steps=-1))  # no checkpoints: saving must not change the outcome
    assert _steps_logged(log) == 4 and "resuming" not in log
    assert not (straight.parent / "checkpoints" / "policy").exists()

    out = tmp_path / "killed" / "policy"
    ckpt = out.parent / "checkpoints" / "policy"
    with open(tmp_path / "killed.log", "w") as f:
        proc = subprocess.Popen(_cmd(prefs, out), stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=ENV)
        deadline = time.time() + 600
        while _complete(ckpt / "checkpoint-2" / "trainer_state.json") != 2:
            assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
            assert time.time() < deadline, "no step-2 checkpoint after 10 minutes"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
    assert not out.exists(), "the final folder must not exist after a kill"
    # a checkpoint cut short (no trainer_state.json) must be ignored, not loaded
    (ckpt / "checkpoint-3").mkdir(exist_ok=True)
    (ckpt / "checkpoint-3" / "model.safetensors").write_bytes(b"half written")

    log = _run(_cmd(prefs, out))
    assert "ignoring incomplete checkpoint checkpoint-3" in log
    assert re.search(r"resuming from \S*checkpoint-2 \(step 2\)", log), log[-3000:]
    assert _steps_logged(log) == 2, "only steps 3 and 4 may run after the resume"
    metrics = json.loads(next(line for line in log.splitlines() if line.startswith('{"algo"')))
    assert metrics["steps"] == 4 and metrics["resumed_from_step"] == 2
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    assert [h["step"] for h in state["log_history"] if "loss" in h] == [1, 2, 3, 4]
    assert not ckpt.exists(), "checkpoints are dropped once the final folder is in place"

    a, b = load_file(straight / "model.safetensors"), load_file(out / "model.safetensors")
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    print(f"resume: 2 steps before the kill, {_steps_logged(log)} after; max |weight difference| {worst:.2e}")
    assert worst <= 1e-6
