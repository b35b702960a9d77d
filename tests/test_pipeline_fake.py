"""The pipeline's logic end to end with the counting fake engine (no model)."""

import json

from datasets import load_from_disk

from conftest import run_cli
from rlaif.store.files import read_jsonl


def _run(out, constitution, prompts, *extra):
    return run_cli("--constitution", constitution, "--prompts", prompts, "--output-dir", out,
                   "--stages", "generate,judge,preferences", "--batch-size", 2, *extra)


def test_stages_write_consistent_artifacts(tmp_path, mini_constitution, prompts_file, fake_engine):
    out = tmp_path / "run"
    assert _run(out, mini_constitution, prompts_file) == 0
    pairs = read_jsonl(out / "pairs.jsonl")
    assert len(pairs) == 5 and len({p["pair_id"] for p in pairs}) == 5
    assert all(p["response_a"] != p["response_b"] for p in pairs)  # distinct seeds per sample
    assert pairs[0]["prompt"] == "How do I bake bread?"
    judgments = read_jsonl(out / "judgments.jsonl")
    assert len(judgments) == 5 * 3 * 2  # pairs x principles ("all") x orders
    assert {(j["order"]) for j in judgments} == {"ab", "ba"}
    by = {(j["pair_id"], j["principle_id"], j["order"]): j for j in judgments}
    for (pid, principle, order), j in by.items():
        assert 0 <= j["p_a"] <= 1 and j["verdict"] == ("a" if j["p_a"] > 0.5 else "b")
    # the score is the weight-averaged mean over orders: recompute it for the first kept pair
    prefs = read_jsonl(out / "preferences.jsonl")
    row = prefs[0]
    weights = {"harm": 2.0, "help": 1.0, "honest": 1.0}
    num = sum(w * (by[(row["pair_id"], p, "ab")]["p_a"] + by[(row["pair_id"], p, "ba")]["p_a"]) / 2
              for p, w in weights.items())
    assert abs(row["score"] - num / 4.0) < 1e-9
    assert abs(row["margin"] - abs(row["score"] - 0.5)) < 1e-12
    pair = next(p for p in pairs if p["pair_id"] == row["pair_id"])
    winner = pair["response_a"] if row["score"] > 0.5 else pair["response_b"]
    assert row["chosen"] == [{"role": "assistant", "content": winner}]
    assert row["prompt"] == [{"role": "user", "content": pair["prompt"]}]
    ds = load_from_disk(str(out / "preferences"))
    assert set(["prompt", "chosen", "rejected", "margin"]) <= set(ds.column_names) and len(ds) == len(prefs)
    summary = json.loads((out / "summary.json").read_text())
    counts = summary["preferences"]
    assert counts["kept"] + counts["dropped"] + counts["tied"] + counts["unjudged"] == 5
    assert summary["judge"]["judgments"] == 30 and summary["generate"]["pairs"] == 5
    for stage in ("generate", "judge", "preferences"):
        assert json.loads((out / "stages" / f"{stage}.done").read_text())["seconds"] >= 0
    assert "harm" in (out / "constitution.yaml").read_text()
    assert "num_prompts" in (out / "config.yaml").read_text()


def test_margin_drops_pairs(tmp_path, mini_constitution, prompts_file, fake_engine):
    out = tmp_path / "run"
    assert _run(out, mini_constitution, prompts_file, "--margin", 0.0) == 0
    scores = [abs(r["score"] - 0.5) for r in read_jsonl(out / "preferences.jsonl")]
    threshold = sorted(scores)[len(scores) // 2]
    assert _run(out, mini_constitution, prompts_file, "--margin", threshold, "--stages", "preferences") == 0
    kept = read_jsonl(out / "preferences.jsonl")
    assert len(kept) == sum(s > threshold for s in scores) and all(r["margin"] > threshold for r in kept)
    summary = json.loads((out / "summary.json").read_text())["preferences"]
    assert summary["dropped"] == sum(s <= threshold for s in scores)


def test_edit_one_principle_rejudges_only_it(tmp_path, mini_constitution, prompts_file, fake_engine, capsys):
    out = tmp_path / "run"
    assert _run(out, mini_constitution, prompts_file) == 0
    first = fake_engine.calls["label_logprobs"]
    assert first == 30
    assert _run(out, mini_constitution, prompts_file) == 0  # unchanged: everything from the cache
    assert fake_engine.calls["label_logprobs"] == first
    assert "reused 30 judgments from the cache, judged 0" in capsys.readouterr().err
    mini_constitution.write_text(mini_constitution.read_text().replace(
        "Choose the more helpful response.", "Choose the response that helps the user most."))
    assert _run(out, mini_constitution, prompts_file) == 0
    assert fake_engine.calls["label_logprobs"] == first + 10  # 5 pairs x 2 orders of `help` only
    assert "reused 20 judgments from the cache, judged 10" in capsys.readouterr().err
    judgments = read_jsonl(out / "judgments.jsonl")
    assert len(judgments) == 30 and len({j["key"] for j in judgments}) == 30
    assert fake_engine.calls["generate"] == 10  # generation was not repeated either


def test_judge_identity_is_part_of_the_key(tmp_path, mini_constitution, prompts_file, fake_engine):
    out = tmp_path / "run"
    assert _run(out, mini_constitution, prompts_file) == 0
    fake_engine.identity = "another-judge"
    assert run_cli("--constitution", mini_constitution, "--output-dir", out, "--stages", "judge") == 0
    assert fake_engine.calls["label_logprobs"] == 60


def test_stage_without_pairs_fails_cleanly(tmp_path, mini_constitution, fake_engine, capsys):
    out = tmp_path / "nothing"
    assert run_cli("--constitution", mini_constitution, "--output-dir", out, "--stages", "judge") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pairs.jsonl" in err[0] and not out.exists()
