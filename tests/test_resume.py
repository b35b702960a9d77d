"""Crash-safe resume: SIGKILL a real run mid-stage, rerun the same command, get what a clean run gets."""

import signal
import subprocess
import time
from pathlib import Path

import pytest

from rlaif.store.files import read_jsonl

from conftest import pipeline_cmd

pytestmark = pytest.mark.slow  # loads the model in subprocesses, trains, or both

GEN = ["--constitution", "safety.yaml", "--num-prompts", "6", "--max-new-tokens", "16", "--seed", "7",
       "--batch-size", "2", "--engine", "hf", "--dtype", "float32"]


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _run(args, cwd):
    proc = subprocess.run(pipeline_cmd(*args), capture_output=True, text=True, cwd=cwd, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _kill_when(args, cwd, path: Path, at_least: int, marker: Path):
    proc = subprocess.Popen(pipeline_cmd(*args), cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while _lines(path) < at_least and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not marker.exists(), "the stage had finished: nothing was interrupted"


def _strip(records):
    return [{k: v for k, v in r.items() if k not in ("seconds",)} for r in records]


def test_kill_during_generate_then_resume_with_another_batch_size(tmp_path):
    """Samples never depend on the batch: killed at batch size 2, resumed at 3, byte-identical to a clean run."""
    clean, crashed = tmp_path / "clean", tmp_path / "crashed"
    _run([*GEN, "--stages", "generate", "--output-dir", clean], tmp_path)
    _kill_when([*GEN, "--stages", "generate", "--output-dir", crashed], tmp_path, crashed / "pairs.jsonl", 2,
               crashed / "stages" / "generate.done")
    partial = read_jsonl(crashed / "pairs.jsonl")
    assert 2 <= len(partial) < 6
    _run([*GEN, "--stages", "generate", "--output-dir", crashed, "--batch-size", "3"], tmp_path)
    pairs = read_jsonl(crashed / "pairs.jsonl")
    assert len({p["pair_id"] for p in pairs}) == 6 and len(pairs) == 6
    assert _strip(pairs) == _strip(read_jsonl(clean / "pairs.jsonl"))
    assert (crashed / "pairs.jsonl").read_bytes() == (clean / "pairs.jsonl").read_bytes()


def test_kill_during_generate_with_four_samples_per_prompt_then_resume(tmp_path):
    """K = 4: killed once the first prompt's samples are on disk (batch size 1), resumed at batch size 3:
    samples.jsonl and pairs.jsonl byte-identical to a clean run's."""
    k4 = [*GEN, "--stages", "generate", "--samples-per-prompt", "4", "--num-prompts", "4", "--max-new-tokens", "12"]
    clean, crashed = tmp_path / "clean", tmp_path / "crashed"
    _run([*k4, "--output-dir", clean], tmp_path)
    _kill_when([*k4, "--batch-size", "1", "--output-dir", crashed], tmp_path, crashed / "samples.jsonl", 4,
               crashed / "stages" / "generate.done")
    assert 4 <= _lines(crashed / "samples.jsonl") < 16 and not (crashed / "pairs.jsonl").exists()
    _run([*k4, "--output-dir", crashed, "--batch-size", "3"], tmp_path)
    for name in ("samples.jsonl", "pairs.jsonl"):
        assert (crashed / name).read_bytes() == (clean / name).read_bytes(), name
    assert _lines(clean / "samples.jsonl") == 16 and _lines(clean / "pairs.jsonl") == 4 * 6


def test_kill_during_judge_then_resume(tmp_path):
    config = tmp_path / "small-batches.yaml"
    config.write_text("judge:\n  batch_size: 2\n")
    clean, crashed = tmp_path / "clean", tmp_path / "crashed"
    args = [*GEN, "--config", config, "--stages", "generate,judge,preferences"]
    _run([*args, "--output-dir", clean], tmp_path)
    crashed.mkdir()  # the clean run's pairs, so that the kill lands in the judge stage
    (crashed / "pairs.jsonl").write_bytes((clean / "pairs.jsonl").read_bytes())
    cache = crashed / "cache" / "judgments.jsonl"
    _kill_when([*args, "--output-dir", crashed], tmp_path, cache, 2, crashed / "stages" / "judge.done")
    assert 2 <= _lines(cache) < 12 and not (crashed / "judgments.jsonl").exists()
    _run([*args, "--output-dir", crashed], tmp_path)
    for name in ("pairs.jsonl", "judgments.jsonl", "preferences.jsonl"):
        assert (crashed / name).read_bytes() == (clean / name).read_bytes(), name
    keys = [r["key"] for r in read_jsonl(cache)]
    assert len(keys) == len(set(keys)) == 12  # nothing judged twice, nothing lost
