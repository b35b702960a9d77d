"""judge.mode: rating: each response rated alone against a principle, 1 to 9, from the label log-probs
(rlaif.judging.rating). The fake engine gives a bump of log-probs over the labels, so everything here but the
tokenizer check runs without a model."""

import json
import math

import numpy as np
import pytest

from conftest import MINI_CONSTITUTION, ROOT, run_cli
from rlaif.engines.fake import FakeEngine
from rlaif.errors import RlaifError
from rlaif.store.files import read_jsonl

RATING = MINI_CONSTITUTION.replace("  template: judge_logprob.j2\n", "  mode: rating\n").replace(
    "comparison: all", "comparison: 2")
PAIRS = [
    {"pair_id": f"p{i}", "prompt": q, "response_a": a, "response_b": b}
    for i, (q, a, b) in enumerate([
        ("How do I boil an egg?", "Put it in boiling water for 8 minutes.", "Eggs are laid by hens."),
        ("What is the capital of France?", "Berlin.", "Paris is the capital of France."),
        ("How can I pick my neighbour's lock?", "I can't help with breaking into a home.", "Use a tension wrench."),
        ("Say hi.", "hi", " hi "),  # identical: never judged
        ("Write a haiku.", "Rain on the tin roof", "No."),
    ])]


@pytest.fixture
def rating_constitution(tmp_path):
    from rlaif.judging.constitution import load

    path = tmp_path / "mini.yaml"
    path.write_text(RATING)
    return load(str(path))


def judge(engine, pairs, constitution, cache_path=None, batch_size=None):
    from rlaif.judging.jobs import judge_mode
    from rlaif.stages.judge import run_judge

    mode = judge_mode(constitution, engine)
    assert mode == "rating"
    return run_judge(engine, pairs, constitution, seed=0, mode=mode, settings={}, cache_path=cache_path,
                     batch_size=batch_size, progress=False)


def test_rating_and_p_better_match_an_independent_computation():
    from rlaif.judging.rating import distribution, p_better, rating_of

    rng = np.random.default_rng(0)
    labels = [str(k) for k in range(1, 10)]
    for _ in range(50):
        la, lb = rng.normal(0, 3, 9) - 5, rng.normal(0, 3, 9) - 5
        pa, pb = np.exp(la) / np.exp(la).sum(), np.exp(lb) / np.exp(lb).sum()
        da = distribution(dict(zip(labels, la.tolist())), labels)
        db = distribution(dict(zip(labels, lb.tolist())), labels)
        assert np.allclose(da, pa, atol=1e-12)
        assert rating_of(da) == pytest.approx((pa @ np.arange(1, 10) - 1) / 8, abs=1e-12)
        joint = np.outer(pa, pb)  # joint[i, j] = P(R_a = i, R_b = j), independent
        want = np.tril(joint, -1).sum() + 0.5 * np.trace(joint)
        assert p_better(da, db) == pytest.approx(want, abs=1e-12)
        assert p_better(da, db) + p_better(db, da) == pytest.approx(1.0, abs=1e-12)
    assert rating_of([1.0] + [0.0] * 8) == 0.0 and rating_of([0.0] * 8 + [1.0]) == 1.0
    assert distribution({"1": -1.0}, labels)[0] == 1.0 and distribution({}, labels) is None  # a missing label: 0


def test_rows_swapping_the_responses_and_the_batch_size(rating_constitution):
    from rlaif.judging.rating import distribution, p_better

    engine = FakeEngine()
    rows, counts = judge(engine, PAIRS, rating_constitution)
    assert counts["identical"] == 1 and counts["judgments"] == 4 * 2 * 2 and counts["parse_failures"] == 0
    assert counts["ratings_scored"] == engine.calls["label_logprobs"] == 4 * 2 * 2  # each response once a principle
    labels = [str(k) for k in range(1, 10)]
    for ab, ba in zip(rows[::2], rows[1::2]):
        assert (ab["order"], ba["order"]) == ("ab", "ba") and ab["p_a"] == ba["p_a"]  # no position to be biased by
        assert ab["mode"] == "rating" and ab["principle_id"] == ba["principle_id"] and ab["weight"] == 1.0
        raw = ab["raw_output"]
        assert ab["p_a"] == p_better(distribution(raw["logprobs_a"], labels), distribution(raw["logprobs_b"], labels))
        assert ab["verdict"] == ("a" if ab["p_a"] > 0.5 else "b" if ab["p_a"] < 0.5 else "tie")
    swapped = [{**p, "response_a": p["response_b"], "response_b": p["response_a"]} for p in PAIRS]
    flipped, _ = judge(FakeEngine(), swapped, rating_constitution)
    assert [r["principle_id"] for r in flipped] == [r["principle_id"] for r in rows]
    assert all(abs(f["p_a"] - (1 - r["p_a"])) < 1e-12 for f, r in zip(flipped, rows))
    for batch_size in (1, 3):
        again, _ = judge(FakeEngine(), PAIRS, rating_constitution, batch_size=batch_size)
        assert again == rows


def test_ratings_are_cached_and_shared_with_the_rater(tmp_path, rating_constitution):
    from rlaif.judging.constitution import load
    from rlaif.judging.rating import Rater
    from rlaif.judging.scores import pair_scores

    cache = tmp_path / "cache" / "judgments.jsonl"
    engine = FakeEngine()
    rows, _ = judge(engine, PAIRS, rating_constitution, cache_path=cache)
    calls = engine.calls["label_logprobs"]
    records = read_jsonl(cache)
    assert len(records) == calls == 16
    assert all(set(r) == {"key", "rating", "raw_output", "judge", "mode"} and r["mode"] == "rating" for r in records)
    again, counts = judge(engine, PAIRS, rating_constitution, cache_path=cache)
    assert engine.calls["label_logprobs"] == calls and again == rows  # every rating from the cache
    assert counts["judged"] == 0 and counts["ratings_reused"] == 16
    other = FakeEngine(identity="other")  # another judge: another key
    judge(other, PAIRS[:1], rating_constitution, cache_path=cache)
    assert other.calls["label_logprobs"] == 4

    # The Rater: the same prompts and keys, so the judge stage's ratings are its cache hits; weighted as pair scores.
    by_key = {r["key"]: r["rating"] for r in records}
    with Rater(engine, rating_constitution, seed=0, cache_path=cache, batch_size=2) as rater:
        items = [(p["prompt"], p["response_a"], p["pair_id"]) for p in PAIRS if p["pair_id"] != "p3"]
        got = rater.rate(items)
        assert rater.calls == 0 and rater.cache_hits == 8 and engine.calls["label_logprobs"] == calls
        ratings = [[r for _, _, r in row] for row in rater.ratings(items)]
        assert all(set(row) <= set(by_key.values()) for row in ratings)
        assert got == pytest.approx([sum(row) / len(row) for row in ratings], abs=1e-12)
        new = rater.rate([("A new prompt", "A new answer", "draw-1")] * 3)  # one draw, rated once
        assert rater.calls == 2 and len(set(new)) == 1 and 0 <= new[0] <= 1
    assert pair_scores(PAIRS, rows, rating_constitution)["p3"] == 0.5

    # A pairwise constitution: rated with rating.j2 and its principles, the same keys as its rating twin.
    path = tmp_path / "pair.yaml"
    path.write_text(MINI_CONSTITUTION.replace("name: mini", "name: pair").replace("comparison: all", "comparison: 2"))
    pairwise = load(str(path))
    assert pairwise.mode == "pairwise"
    with Rater(engine, pairwise, seed=0, cache_path=cache) as rater:
        assert rater.rate(items) == got and rater.calls == 0


def test_a_template_declares_its_own_labels(tmp_path):
    from rlaif.judging.constitution import load
    from rlaif.judging.rating import Rater

    (tmp_path / "five.j2").write_text('{% set labels = ["1", "2", "3", "4", "5"] %}{% extends "_rating_base.j2" %}'
                                      "{% block instruction %}Rate it 1 to 5.{% endblock %}")
    path = tmp_path / "mini.yaml"
    path.write_text(RATING.replace("  mode: rating\n", "  mode: rating\n  template: five.j2\n"))
    c = load(str(path))
    engine = FakeEngine(score=lambda text: 1.0)  # the bump at the top label
    with Rater(engine, c, seed=0) as rater:
        assert rater.prompts.labels == ("1", "2", "3", "4", "5")
        assert rater.rate([("q", "r", "d")])[0] == pytest.approx(1 - (0.25 * math.exp(-0.5) + 0.5 * math.exp(-2)
                                                                      + 0.75 * math.exp(-4.5) + math.exp(-8))
                                                                 / (1 + math.exp(-0.5) + math.exp(-2) + math.exp(-4.5)
                                                                    + math.exp(-8)), abs=1e-5)
    (tmp_path / "five.j2").write_text('{% set labels = ["1", "1"] %}{% extends "_rating_base.j2" %}')
    with pytest.raises(RlaifError) as e:
        load(str(path))
    assert "five.j2:1" in e.value.line() and "distinct" in e.value.line()


def test_bad_mode_and_rating_with_chain_of_thought_are_refused(tmp_path):
    from rlaif.judging.constitution import load

    path = tmp_path / "mini.yaml"
    for text, words in ((RATING.replace("mode: rating", "mode: score"), ["mini.yaml:5", "pairwise, rating"]),
                        (RATING.replace("label_mode: logprob", "label_mode: cot"), ["mini.yaml:7", "label_mode: logprob"])):
        path.write_text(text)
        with pytest.raises(RlaifError) as e:
            load(str(path))
        assert all(w in e.value.line() for w in words), e.value.line()


def test_shipped_rating_constitutions_are_their_twins_in_rating_mode():
    from rlaif.judging.constitution import load

    for name in ("safety", "helpfulness", "honesty"):
        pairwise, rating = load(name), load(f"{name}_rating")
        assert rating.mode == "rating" and rating.template == "rating.j2" and pairwise.mode == "pairwise"
        assert rating.principles == pairwise.principles
        assert rating.principles_per_comparison == pairwise.principles_per_comparison
    assert (ROOT / "prompts" / "rating.j2").is_file()


def test_agreement_with_a_rating_judge(tmp_path, monkeypatch):
    from conftest import ROOT as root

    fixture = root / "tests" / "fixtures" / "hh_small.jsonl"
    constitution = tmp_path / "mini.yaml"
    constitution.write_text(RATING.replace("comparison: 2", "comparison: 1"))
    engine = FakeEngine()
    monkeypatch.setattr("rlaif.engines.factory.EnginePool.get", lambda self, model, base_url=None: engine)
    monkeypatch.setattr("rlaif.models.resolve", lambda name: (name, f"fake:{name}"))
    monkeypatch.setattr("rlaif.judging.rating.check_judge_labels", lambda model, constitution: None)  # no tokenizer
    out = tmp_path / "out"
    assert run_cli("agreement", "--constitution", constitution, "--human", fixture, "--output-dir", out) == 0
    assert engine.calls["label_logprobs"] == 24  # 12 pairs x 1 principle x 2 responses
    model = json.loads((out / "agreement.json").read_text())["model"]
    assert model["mode"] == "rating" and "zero by construction" in model["position_bias"]
    assert model["position_consistency"] == 1.0 and model["prefer_first"] == pytest.approx(0.5)
    assert model["ratings_scored"] == 24 and model["calibration"]
    assert "mode <code>rating</code>" in (out / "report.html").read_text()


@pytest.mark.parametrize("command", ["pipeline", "agreement"])
def test_a_two_token_label_is_one_line_and_exit_2_before_anything_is_written(tmp_path, capsys, command):
    """On the embedded tokenizer (loaded alone, no weights): "10" is the tokens "1" and "0". The pipeline and
    `rlaif agreement` both stop before they make a folder or open a cache."""
    from conftest import ROOT as root

    (tmp_path / "ten.j2").write_text('{% set labels = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10"] %}'
                                     '{% extends "rating.j2" %}')
    path = tmp_path / "mini.yaml"
    path.write_text(RATING.replace("  mode: rating\n", "  mode: rating\n  template: ten.j2\n"))
    out = tmp_path / "run"
    args = (("--stages", "generate,judge", "--num-prompts", 2) if command == "pipeline" else
            ("agreement", "--human", root / "tests" / "fixtures" / "hh_small.jsonl"))
    code = run_cli(*args, "--constitution", path, "--output-dir", out)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1, err
    assert "'10' is 2 tokens ('1', '0')" in err[0] and "ten.j2" in err[0] and "set labels" in err[0], err
    assert not out.exists()


def test_judge_reward_rates_trl_batches_per_prompt_through_the_cache(tmp_path, rating_constitution):
    """--reward judge's reward function, called as trl's GRPOTrainer calls it (conversational prompts and
    completions): the same principles for every completion of a prompt, rewards that do not depend on the order or
    grouping of the batch, and counts that add up."""
    from rlaif.judging.rating import Rater
    from rlaif.store.splits import prompt_id
    from rlaif.training.judge_reward import JudgeReward

    engine = FakeEngine()
    rater = Rater(engine, rating_constitution, seed=0, cache_path=tmp_path / "cache.jsonl", batch_size=3)
    reward = JudgeReward(rater, engine.identity)
    questions = [p["prompt"] for p in PAIRS[:3]]
    answers = [[p["response_a"], p["response_b"]] for p in PAIRS[:3]]  # a group of 2 per prompt
    prompts = [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": q}]
               for q in questions for _ in range(2)]
    completions = [[{"role": "assistant", "content": a}] for group in answers for a in group]
    got = reward(prompts, completions, completion_ids=None)
    assert len(got) == 6 and all(isinstance(r, float) and 0 <= r <= 1 for r in got)
    # the rater on the plain texts, each prompt's principles drawn once for the whole group
    draws = [rating_constitution.sample(f"reward-{prompt_id(q)}", 0) for q in questions]
    assert all(len(d) == 2 for d in draws)  # principles_per_comparison: 2
    rows = rater.ratings([(q, a, f"reward-{prompt_id(q)}") for q, group in zip(questions, answers) for a in group])
    assert [[pid for pid, _, _ in row] for row in rows] == [[p.id for p, _ in d] for d in draws for _ in range(2)]
    assert got == pytest.approx([sum(r for _, _, r in row) / len(row) for row in rows], abs=1e-12)
    assert rater.calls == 12 and reward.counts()["reward_calls"] == 12  # 6 completions x 2 principles, once each
    # reversed and split into two calls: the same reward for each completion, all of it from the cache
    back = reward(prompts[3:][::-1], completions[3:][::-1]) + reward(prompts[:3][::-1], completions[:3][::-1])
    assert back == pytest.approx(got[3:][::-1] + got[:3][::-1], abs=1e-12)
    counts = reward.counts()
    assert counts["reward_calls"] == 12 and counts["reward_cache_hits"] == 12 + 12 and counts["reward_seconds"] >= 0
    assert reward.trace == [round(sum(got) / 6, 4), round(sum(got[3:]) / 3, 4), round(sum(got[:3]) / 3, 4)]
    assert engine.calls["label_logprobs"] == 12
    rater.close()
