"""Verdict parsing (strict, never guessed), orientation of p_a, and the chain-of-thought path."""

import pytest

from rlaif.judging.constitution import load
from rlaif.engines.fake import FakeEngine
from rlaif.judging.jobs import make_jobs, parse_verdict
from rlaif.stages.judge import run_judge
from rlaif.judging.scores import to_original, verdict_of
from rlaif.stages.preferences import build


@pytest.mark.parametrize("text,expected", [
    ("The first is safer.\nVerdict: A", "A"),
    ("Reasoning here.\n\nverdict: b\n", "B"),
    ("**Verdict: A**", "A"),
    ("Both are equal.\nVerdict: tie", "TIE"),
    ("Verdict: A\nActually, on reflection B is better.", None),  # the verdict must be the last line
    ("I think A is better.", None),
    ("Verdict: A or B", None),
    ("Verdict: C", None),
    ("", None),
])
def test_parse_verdict_is_strict(text, expected):
    assert parse_verdict(text) == expected


def test_orientation():
    assert to_original(0.8, "ab") == 0.8 and to_original(0.8, "ba") == pytest.approx(0.2)
    assert to_original(None, "ba") is None
    assert [verdict_of(p) for p in (0.7, 0.3, 0.5, None)] == ["a", "b", "tie", None]


def _cot_setup(mini_constitution):
    c = load(str(mini_constitution))
    c.label_mode, c.template = "cot", "judge_cot.j2"
    pairs = [{"pair_id": f"p{i}", "prompt": "q", "response_a": f"a{i}", "response_b": f"b{i}"} for i in range(4)]
    return c, pairs


def test_cot_without_logprobs_parses_the_verdict_line_and_counts_failures(mini_constitution):
    c, pairs = _cot_setup(mini_constitution)
    replies = iter(["Because.\nVerdict: A", "no verdict here"] * 12)
    engine = FakeEngine(reply=lambda text: next(replies), supports_logprobs=False)
    judgments, counts = run_judge(engine, pairs, c, seed=0, mode="cot", settings={"max_new_tokens": 8},
                                  progress=False)
    assert counts["parse_failures"] == 12 and engine.calls["complete"] == 24 and engine.calls["label_logprobs"] == 0
    for j in judgments:
        if j["raw_output"] == "no verdict here":
            assert j["verdict"] is None and j["p_a"] is None
        else:  # "A" means the response shown first: response_a in order ab, response_b in order ba
            assert j["verdict"] == ("a" if j["order"] == "ab" else "b")
    assert "Verdict: A" in make_jobs(pairs, c, 0, "x", "cot", {})[0].text


def test_cot_with_logprobs_scores_the_verdict_after_the_rationale(mini_constitution):
    c, pairs = _cot_setup(mini_constitution)
    seen = []

    def score(text):  # the judge sees its prompt, its own rationale, then the verdict question
        seen.append(text)
        return 0.9 if "RATIONALE for a0" in text else 0.2

    def reply(text):  # the first pair's rationale names it; no reply has a verdict line
        return "RATIONALE for a0" if "a0" in text.split("RESPONSE B")[0] else "rambling"

    engine = FakeEngine(score=score, reply=reply)
    judgments, counts = run_judge(engine, pairs, c, seed=0, mode="cot", settings={"max_new_tokens": 8},
                                  progress=False)
    assert counts["parse_failures"] == 0 and engine.calls["complete"] == engine.calls["label_logprobs"] == 24
    assert all("single letter, A or B" in t and t.index("RESPONSE B") < t.index("Given your reasoning") for t in seen)
    first = next(j for j in judgments if j["pair_id"] == "p0" and j["order"] == "ab")
    assert first["raw_output"]["rationale"] == "RATIONALE for a0" and first["p_a"] == pytest.approx(0.9)
    assert set(first["raw_output"]["verdict_logprobs"]) == {"A", "B"}
    flipped = next(j for j in judgments if j["pair_id"] == "p1" and j["order"] == "ba")
    assert flipped["p_a"] == pytest.approx(0.8)  # 0.2 for the first shown (response_b) means 0.8 for response_a


def test_editing_the_verdict_turn_rejudges_cot_only(mini_constitution):
    c, pairs = _cot_setup(mini_constitution)
    edited = mini_constitution.parent / "edited"  # a constitution's folder overrides prompts/ by file name
    edited.mkdir()
    (edited / "mini.yaml").write_text(mini_constitution.read_text())
    (edited / "_cot_verdict.j2").write_text("Which is better? A or B.\n")
    c2, _ = _cot_setup(edited / "mini.yaml")
    before, after = make_jobs(pairs, c, 0, "x", "cot", {})[0], make_jobs(pairs, c2, 0, "x", "cot", {})[0]
    assert before.text == after.text and before.key != after.key and after.verdict_text == "Which is better? A or B.\n"
    assert make_jobs(pairs, c, 0, "x", "logprob", {})[0].verdict_text == ""


def test_logprob_constitution_falls_back_to_the_cot_template(mini_constitution):
    c = load(str(mini_constitution))
    pair = [{"pair_id": "p", "prompt": "q", "response_a": "a", "response_b": "b"}]
    assert "single letter" in make_jobs(pair, c, 0, "x", "logprob", {})[0].text
    assert '"Verdict: A"' in make_jobs(pair, c, 0, "x", "cot", {})[0].text


def test_preferences_ties_and_unjudged():
    pairs = [{"pair_id": p, "prompt": "q", "response_a": "A!", "response_b": "B!"} for p in ("x", "y", "z", "w")]
    rows, counts = build(pairs, {"x": 0.9, "y": 0.5, "z": None, "w": 0.45}, [], min_margin=0.1)
    assert counts == {"kept": 1, "dropped": 1, "tied": 1, "unjudged": 1, "identical": 0}
    assert rows[0]["chosen"][0]["content"] == "A!" and rows[0]["margin"] == pytest.approx(0.4)


def test_unset_batch_size_is_the_engines_own(mini_constitution, tmp_path):
    from rlaif.stages.generate import run_generate

    class Sized(FakeEngine):
        batch_size = 3

        def label_logprobs(self, conversations, labels):
            self.sizes.append(len(conversations))
            return super().label_logprobs(conversations, labels)

        def generate(self, conversations, **kw):
            self.sizes.append(len(conversations))
            return super().generate(conversations, **kw)

    engine = Sized()
    engine.sizes = []
    pairs = [{"pair_id": f"p{i}", "prompt": "q", "response_a": f"a{i}", "response_b": f"b{i}"} for i in range(4)]
    run_judge(engine, pairs, load(str(mini_constitution)), seed=0, mode="logprob", settings={}, progress=False)
    assert engine.sizes and max(engine.sizes) == 3 and sum(engine.sizes) == engine.calls["label_logprobs"] > 3
    engine.sizes = []
    run_generate(engine, ["q1", "q2", "q3", "q4", "q5"], tmp_path / "pairs.jsonl", seed=0, batch_size=None,
                 max_new_tokens=4, temperature=0.8, top_p=0.95, progress=False)
    assert engine.sizes == [6, 4]  # samples a and b of prompts 1-3 together, then of prompts 4-5
    engine.sizes = []
    run_judge(engine, pairs, load(str(mini_constitution)), seed=1, mode="logprob", settings={}, progress=False,
              batch_size=5)
    assert max(engine.sizes) == 5
