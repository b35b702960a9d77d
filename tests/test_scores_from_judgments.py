"""Scores are a pure function of the judgments present; the judge's key sees every template file; the judge's
signal against its position bias is reported (issue 21, points 1, 2, 8 and the judge bar)."""

import json

import numpy as np
import pytest

from conftest import MINI_CONSTITUTION, run_cli
from rlaif.engines.fake import FakeEngine, _unit
from rlaif.store.files import read_jsonl

SAMPLED = MINI_CONSTITUTION.replace("principles_per_comparison: all", "principles_per_comparison: 1")


def _run(out, constitution, prompts, *extra, stages="generate,judge,preferences"):
    return run_cli("--constitution", constitution, "--prompts", prompts, "--output-dir", out,
                   "--stages", stages, "--batch-size", 2, *extra)


def _files(out):
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted((out / "preferences").rglob("*"))
            if p.is_file()} | {"preferences.jsonl": (out / "preferences.jsonl").read_bytes()}


def test_rerunning_preferences_with_another_seed_changes_no_byte(tmp_path, prompts_file, fake_engine):
    constitution = tmp_path / "sampled.yaml"
    constitution.write_text(SAMPLED)
    out = tmp_path / "run"
    assert _run(out, constitution, prompts_file, "--seed", 0) == 0
    before = _files(out)
    assert len(read_jsonl(out / "preferences.jsonl")) == 5  # every pair judged on its one drawn principle is kept
    assert _run(out, constitution, prompts_file, "--seed", 1, stages="preferences") == 0
    assert _files(out) == before
    summary = json.loads((out / "summary.json").read_text())["preferences"]
    assert summary["unjudged"] == 0 and summary["kept"] == 5 and summary["stale_judgments"] == 0


def test_an_edited_principle_is_never_mixed_with_current_ones(tmp_path, prompts_file, fake_engine, capsys):
    constitution = tmp_path / "mini.yaml"
    constitution.write_text(MINI_CONSTITUTION)
    out = tmp_path / "run"
    assert _run(out, constitution, prompts_file) == 0
    judgments = read_jsonl(out / "judgments.jsonl")
    constitution.write_text(MINI_CONSTITUTION.replace("Choose the more helpful response.",
                                                      "Choose the response that answers the question."))
    capsys.readouterr()
    assert _run(out, constitution, prompts_file, "--margin", 0.0, stages="preferences") == 0
    err = capsys.readouterr().err
    assert "10 judgments were made with principle text that has changed" in err and "judge stage" in err
    # the scores use harm (weight 2) and honest (weight 1) only: the judgments whose text is still current
    p = {(j["pair_id"], j["principle_id"], j["order"]): j["p_a"] for j in judgments}
    for row in read_jsonl(out / "preferences.jsonl"):
        expected = sum(w * (p[(row["pair_id"], k, "ab")] + p[(row["pair_id"], k, "ba")]) / 2
                       for k, w in (("harm", 2.0), ("honest", 1.0))) / 3.0
        assert row["score"] == pytest.approx(expected, abs=1e-12)
        assert {v["principle_id"] for v in row["votes"]} <= {"harm", "honest"}
    assert json.loads((out / "summary.json").read_text())["preferences"]["stale_judgments"] == 10
    # the judge stage re-judges only the edited principle; then nothing is stale
    assert _run(out, constitution, prompts_file, stages="judge,preferences") == 0
    assert "reused 20 judgments from the cache, judged 10" in capsys.readouterr().err
    assert json.loads((out / "summary.json").read_text())["preferences"]["stale_judgments"] == 0


def test_weights_come_from_the_judgments(tmp_path, prompts_file, fake_engine):
    """Scoring reads each judgment's own weight: a weight edited after judging counts only once the judge stage
    has rewritten judgments.jsonl (nothing is re-judged for it: the text is the same)."""
    constitution = tmp_path / "mini.yaml"
    constitution.write_text(MINI_CONSTITUTION)
    out = tmp_path / "run"
    assert _run(out, constitution, prompts_file) == 0
    assert {j["principle_id"]: j["weight"] for j in read_jsonl(out / "judgments.jsonl")} == \
        {"harm": 2.0, "help": 1.0, "honest": 1.0}
    before = _files(out)
    constitution.write_text(MINI_CONSTITUTION.replace("weight: 2.0", "weight: 5.0"))
    assert _run(out, constitution, prompts_file, "--margin", 0.0, stages="preferences") == 0
    assert _files(out) == before
    assert _run(out, constitution, prompts_file, "--margin", 0.0, stages="judge,preferences") == 0
    assert fake_engine.calls["label_logprobs"] == 30  # the first run's judgments only
    assert {j["principle_id"]: j["weight"] for j in read_jsonl(out / "judgments.jsonl")}["harm"] == 5.0
    assert _files(out) != before


TEMPLATE = """{% include "parts/rubric.txt" %}
[Principle] {{ principle.text }}
[User] {{ prompt | fence }}
[Response A] {{ response_a | fence }}
[Response B] {{ response_b | fence }}
Answer A or B.
"""


@pytest.mark.parametrize("edited", ["parts/rubric.txt", "mine.jinja"])
def test_editing_any_file_the_template_loads_rejudges_everything(tmp_path, prompts_file, fake_engine, capsys, edited):
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "rubric.txt").write_text("Judge carefully.\n")
    (tmp_path / "mine.jinja").write_text(TEMPLATE)
    constitution = tmp_path / "mine.yaml"
    constitution.write_text(MINI_CONSTITUTION.replace("judge_logprob.j2", "mine.jinja"))
    out = tmp_path / "run"
    assert _run(out, constitution, prompts_file) == 0
    assert _run(out, constitution, prompts_file, stages="judge") == 0
    assert "reused 30 judgments from the cache, judged 0" in capsys.readouterr().err
    path = tmp_path / edited
    path.write_text(path.read_text().replace("Judge carefully.", "Judge strictly.") if edited.endswith(".txt")
                    else "Read this first.\n" + path.read_text())
    assert _run(out, constitution, prompts_file, stages="judge") == 0
    assert "reused 0 judgments from the cache, judged 30" in capsys.readouterr().err


def test_a_computed_include_renders_every_job(tmp_path, prompts_file, fake_engine, capsys):
    """No hash can name the file of `{% include principle.id ~ '.txt' %}` in advance: every job is rendered, so
    its key (a hash of the rendered text) sees the edit."""
    for pid in ("harm", "help", "honest"):
        (tmp_path / f"{pid}.txt").write_text(f"Rubric for {pid}.\n")
    (tmp_path / "mine.jinja").write_text(TEMPLATE.replace('"parts/rubric.txt"', "principle.id ~ '.txt'"))
    constitution = tmp_path / "mine.yaml"
    constitution.write_text(MINI_CONSTITUTION.replace("judge_logprob.j2", "mine.jinja"))
    out = tmp_path / "run"
    assert _run(out, constitution, prompts_file) == 0
    (tmp_path / "help.txt").write_text("Rubric for help, edited.\n")
    capsys.readouterr()
    assert _run(out, constitution, prompts_file, stages="judge") == 0
    assert "reused 20 judgments from the cache, judged 10" in capsys.readouterr().err


def _signal_oracle(judgments):
    """position_consistency, first_position_rate from judgments.jsonl, computed here without the project's code."""
    by = {}
    for j in judgments:
        by.setdefault(j["pair_id"], {}).setdefault(j["order"], []).append((j["weight"], j["p_a"]))
    consistent = []
    for orders in by.values():
        wins = [np.sign(np.average([p for _, p in orders[o]], weights=[w for w, _ in orders[o]]) - 0.5) for o in ("ab", "ba")]
        consistent.append(wins[0] != 0 and wins[0] == wins[1])
    first = [j["p_a"] if j["order"] == "ab" else 1 - j["p_a"] for j in judgments]
    return np.mean(consistent), np.mean(first)


def test_a_judge_weaker_than_its_position_bias_is_reported(tmp_path, mini_constitution, prompts_file, monkeypatch,
                                                           capsys):
    """The default run's case: P(first shown is better) about 0.85 whatever the content, so both orders disagree
    on every pair and every score sits near 0.5. summary.json and the report say so, and the run warns."""
    engine = FakeEngine(score=lambda text: 0.85 + 0.1 * (_unit(text) - 0.5))
    monkeypatch.setattr("rlaif.engines.factory.EnginePool.get", lambda self, model, base_url=None: engine)
    monkeypatch.setattr("rlaif.models.resolve", lambda name: (name, f"fake:{name}"))
    out = tmp_path / "run"
    assert _run(out, mini_constitution, prompts_file) == 0
    err = capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    consistency, first = _signal_oracle(read_jsonl(out / "judgments.jsonl"))
    assert summary["position_consistency"] == pytest.approx(consistency, abs=1e-4) and consistency < 0.6
    assert summary["first_position_rate"] == pytest.approx(first, abs=1e-4) and 0.8 < first < 0.9
    margins = [abs(r["score"] - 0.5) for r in read_jsonl(out / "preferences.jsonl")]
    assert summary["mean_kept_margin"] == pytest.approx(np.mean(margins), abs=1e-4) and len(margins) == 5
    warning = next(line for line in err.splitlines() if "weaker than its position bias" in line)
    assert f"position_consistency={summary['position_consistency']}" in warning and "--margin" in warning
    assert f"first_position_rate={summary['first_position_rate']}" in warning
    html = (out / "report.html").read_text()
    assert html.index("weaker than its position bias") < html.index("<h2>Stages</h2>")


def _shown(text, label):
    return text.split(f"<<<RESPONSE {label}\n")[1].split(f"\nRESPONSE {label}>>>")[0]


def test_a_judge_that_reads_the_content_gets_no_warning(tmp_path, mini_constitution, prompts_file, fake_engine, capsys):
    out = tmp_path / "run"
    fake_engine.score = lambda text: 0.8 if _unit(_shown(text, "A")) > _unit(_shown(text, "B")) else 0.2
    assert _run(out, mini_constitution, prompts_file) == 0
    summary = json.loads((out / "summary.json").read_text())
    consistency, first = _signal_oracle(read_jsonl(out / "judgments.jsonl"))
    assert summary["position_consistency"] == consistency == 1.0
    assert summary["first_position_rate"] == pytest.approx(first, abs=1e-4) == 0.5
    assert "position bias" not in capsys.readouterr().err
    assert "weaker than its position bias" not in (out / "report.html").read_text()


def test_the_judge_bar_counts_no_identical_pair(monkeypatch, mini_constitution):
    from rlaif.stages import judge
    from rlaif.judging.constitution import load

    bars = []

    class Bar(judge.tqdm):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            bars.append(self)

    monkeypatch.setattr(judge, "tqdm", Bar)
    pairs = [{"pair_id": f"p{i}", "prompt": "q", "response_a": f"x{i}", "response_b": f"x{i}" if i % 2 else f"y{i}"}
             for i in range(6)]
    judgments, counts = judge.run_judge(FakeEngine(), pairs, load(str(mini_constitution)), seed=0, mode="logprob",
                                        settings={}, progress=True)
    assert counts["identical"] == 3 and len(judgments) == 3 * 3 * 2
    assert bars[0].n == bars[0].total == 18
