"""--rounds N (iterative DPO): each round in RUN/rounds/<r>/, sampled from the policy the round before trained.

The fast tests run the rounds' logic with the counting fake engine and a stand-in for the DPO trainer (a policy
folder with a config.json); the slow one kills a real run on the embedded model in round 2 and resumes it."""

import hashlib
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import pipeline_cmd, run_cli
from rlaif.store.files import read_jsonl
from rlaif.store.splits import prompt_id

STAGES = "generate,judge,preferences,policy"


@pytest.fixture
def fake_dpo(monkeypatch):
    """train_policy stand-in: records the model each round starts from and writes a policy folder."""
    starts = []

    def train_policy(base_model, reward_model, dataset, out_dir, cfg, seed, **kw):
        starts.append(str(base_model))
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "config.json").write_text(json.dumps({"trained_from": str(base_model), "n": len(dataset)}))
        return {"algo": cfg.algo, "n_train": len(dataset), "steps": 1}

    monkeypatch.setattr("rlaif.training.trainers.train_policy", train_policy)
    return starts


def _run(out, constitution, prompts, *extra):
    return run_cli("--constitution", constitution, "--prompts", prompts, "--output-dir", out, "--stages", STAGES,
                   "--num-prompts", 3, "--eval-prompts", 2, "--batch-size", 2, *extra)


def _digests(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_rounds_layout_summary_and_held_out_prompts(tmp_path, mini_constitution, prompts_file, fake_engine, fake_dpo):
    out, one = tmp_path / "rounds", tmp_path / "one"
    assert _run(out, mini_constitution, prompts_file, "--rounds", 3) == 0
    for r in (1, 2, 3):
        d = out / "rounds" / str(r)
        for name in ("pairs.jsonl", "judgments.jsonl", "preferences.jsonl", "preferences/state.json",
                     "cache/judgments.jsonl", "policy/config.json", "summary.json", "splits.json", "eval/pairs.jsonl",
                     *(f"stages/{s}.done" for s in ("generate", "judge", "preferences", "policy", "round"))):
            assert (d / name).exists(), (r, name)
    # round r trains from round r-1's policy; round 1 from the base
    assert fake_dpo[0].endswith("SmolLM2-135M-Instruct")
    assert fake_dpo[1:] == [str(out / "rounds" / str(r) / "policy") for r in (1, 2)]
    # round r > 1 samples with its own seed: not round 1's draws again
    responses = [{p["response_a"] for p in read_jsonl(out / "rounds" / str(r) / "pairs.jsonl")} for r in (1, 2, 3)]
    assert not responses[0] & responses[1] and not responses[1] & responses[2]
    # held out in every round: no round's pairs, preferences or training prompts include an eval prompt
    held_out = {e["prompt_id"] for e in json.loads((out / "splits.json").read_text())["eval"]}
    assert len(held_out) == 2
    for r in (1, 2, 3):
        d = out / "rounds" / str(r)
        assert not {prompt_id(p["prompt"]) for p in read_jsonl(d / "pairs.jsonl")} & held_out
        assert not {prompt_id(p["prompt"][0]["content"]) for p in read_jsonl(d / "preferences.jsonl")} & held_out
        assert {prompt_id(p["prompt"]) for p in read_jsonl(d / "eval" / "pairs.jsonl")} == held_out
        assert json.loads((d / "summary.json").read_text())["eval_overlap"] == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [row["round"] for row in summary["rounds"]] == [1, 2, 3]
    for row in summary["rounds"]:
        assert row["pairs"] == 3 and 0 < row["kept"] <= 3 and row["seconds"] >= 0
        assert 0 <= row["win_rate_vs_base"] <= 1 and row["n_eval_prompts"] == 2 and row["eval_overlap"] == 0
    assert summary["policy_win_rate"] == summary["rounds"][-1]["win_rate_vs_base"]
    # every round against the same base: the base's eval responses are the same in every round
    base_out = [[p["response_b"] for p in read_jsonl(out / "rounds" / str(r) / "eval" / "pairs.jsonl")] for r in (1, 2, 3)]
    assert base_out[0] == base_out[1] == base_out[2]
    # RUN/policy is the last round's
    assert (out / "policy").is_symlink() and (out / "policy").resolve() == (out / "rounds" / "3" / "policy").resolve()
    assert "DPO in rounds" in (out / "report.html").read_text()
    assert not (out / "pairs.jsonl").exists()
    # round 1 is what a one-round run writes, and --rounds 1 makes no rounds/ folder
    assert _run(one, mini_constitution, prompts_file) == 0
    assert not (one / "rounds").exists()
    for name in ("pairs.jsonl", "judgments.jsonl", "preferences.jsonl"):
        assert (one / name).read_bytes() == (out / "rounds" / "1" / name).read_bytes(), name


def test_rerun_skips_finished_rounds_and_adds_rounds(tmp_path, mini_constitution, prompts_file, fake_engine, fake_dpo,
                                                     capsys):
    out = tmp_path / "run"
    assert _run(out, mini_constitution, prompts_file, "--rounds", 2) == 0
    before = _digests(out / "rounds")
    calls = dict(fake_engine.calls)
    assert _run(out, mini_constitution, prompts_file, "--rounds", 2) == 0  # finished: nothing runs again
    assert _digests(out / "rounds") == before and fake_engine.calls == calls and len(fake_dpo) == 2
    assert "round 2 of 2: finished before" in capsys.readouterr().err
    assert _run(out, mini_constitution, prompts_file, "--rounds", 3) == 0  # one more round, from round 2's policy
    assert fake_dpo[2] == str(out / "rounds" / "2" / "policy")
    assert {k: v for k, v in _digests(out / "rounds").items() if not k.startswith("3/")} == before
    assert (out / "policy").resolve() == (out / "rounds" / "3" / "policy").resolve()
    assert [r["round"] for r in json.loads((out / "summary.json").read_text())["rounds"]] == [1, 2, 3]


def test_one_round_and_rounds_folders_are_not_mixed(tmp_path, mini_constitution, prompts_file, fake_engine, fake_dpo,
                                                    capsys):
    one, many = tmp_path / "one", tmp_path / "many"
    assert _run(one, mini_constitution, prompts_file) == 0
    assert _run(many, mini_constitution, prompts_file, "--rounds", 2) == 0
    snapshots = _digests(one), _digests(many)
    capsys.readouterr()
    assert _run(one, mini_constitution, prompts_file, "--rounds", 2) == 2
    assert "one-round run" in capsys.readouterr().err
    assert _run(many, mini_constitution, prompts_file) == 2
    assert "--rounds above 1" in capsys.readouterr().err
    assert (_digests(one), _digests(many)) == snapshots


# --- the real thing: killed in round 2, resumed in round 2 ------------------------------------------------------

REAL = ["--constitution", "safety.yaml", "--num-prompts", "4", "--max-new-tokens", "8", "--max-steps", "1",
        "--eval-prompts", "2", "--dtype", "float32", "--engine", "hf", "--stages", STAGES, "--rounds", "2"]


@pytest.mark.slow
def test_kill_in_round_two_then_resume(tmp_path):
    """SIGKILL once round 2's pairs are on disk; the rerun skips round 1 (its files byte-identical), reuses round 2's
    pairs and finishes round 2 from round 1's policy."""
    out = tmp_path / "run"
    r1, r2 = out / "rounds" / "1", out / "rounds" / "2"
    proc = subprocess.Popen(pipeline_cmd(*REAL, "--output-dir", out), cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not (r2 / "stages" / "generate.done").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert (r1 / "stages" / "round.done").exists() and not (r2 / "stages" / "policy.done").exists()
    before = _digests(r1)
    done = subprocess.run(pipeline_cmd(*REAL, "--output-dir", out), capture_output=True, text=True, cwd=tmp_path,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "round 1 of 2: finished before" in done.stderr and "round 2 of 2: policy" in done.stderr
    assert _digests(r1) == before  # round 1 untouched
    generate = json.loads((r2 / "stages" / "generate.done").read_text())
    assert generate["reused"] == 4 and generate["generated"] == 0  # resumed in round 2, not started over
    assert json.loads((r2 / "summary.json").read_text())["models"]["policy_reference"] == str(r1 / "policy")
    summary = json.loads((out / "summary.json").read_text())
    assert [row["round"] for row in summary["rounds"]] == [1, 2]
    assert all(0 <= row["win_rate_vs_base"] <= 1 for row in summary["rounds"])
    held_out = {e["prompt_id"] for e in json.loads((out / "splits.json").read_text())["eval"]}
    for d in (r1, r2):
        assert not {prompt_id(p["prompt"]) for p in read_jsonl(d / "pairs.jsonl")} & held_out
    assert (out / "policy" / "config.json").exists() and (out / "policy").resolve() == (r2 / "policy").resolve()
