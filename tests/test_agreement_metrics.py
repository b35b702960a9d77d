"""Agreement metrics against independent oracles (statsmodels, scipy) on random data, and small
hand-computed examples (arithmetic in the comments)."""

import json
import random

import pytest
import numpy as np
from scipy.stats import binomtest
from statsmodels.stats.inter_rater import cohens_kappa
from statsmodels.tools.eval_measures import mse

from rlaif.evaluation.metrics import agreement, agreement_with_ties, brier, cohen_kappa, expected_calibration_error, first_shown_picked, human_agreement, judge_agreement_loo, majority_label, position_consistency, prefer_first, prefer_longer, reliability_table, summarize, wilson_ci


def test_majority_label_with_ties():
    assert majority_label(["a"]) == "a"
    assert majority_label(["a", "a", "b"]) == "a"
    assert majority_label(["b", "tie", "b"]) == "b"
    assert majority_label(["a", "b"]) == "tie"  # 1-1
    assert majority_label(["a", "b", "b", "a", "tie"]) == "tie"  # a=2, b=2
    assert majority_label(["a", "b", "tie"]) == "tie"  # three-way 1-1-1
    assert majority_label(["tie", "tie", "a"]) == "tie"  # "tie" is simply the most common
    with pytest.raises(ValueError):
        majority_label([])


HUMAN = ["a", "a", "b", "b", "tie", "a", "b"]
JUDGE = ["a", "b", "b", None, "a", "tie", "b"]


def test_agreement_counts_only_decided_pairs():
    # decided (both a/b): #0 a=a ✓, #1 a≠b ✗, #2 b=b ✓, #6 b=b ✓
    # skipped: #3 judge None, #4 human tie, #5 judge tie  -> 3/4
    assert agreement(HUMAN, JUDGE) == (0.75, 4)
    assert agreement(["tie", "a"], [None, "tie"]) == (None, 0)


def test_agreement_with_ties_over_all_pairs():
    # matches: #0 ✓, #1 ✗, #2 ✓, #3 None ✗, #4 tie≠a ✗, #5 a≠tie ✗, #6 ✓ -> 3/7
    assert agreement_with_ties(HUMAN, JUDGE) == pytest.approx(3 / 7)
    assert agreement_with_ties(["tie"], ["tie"]) == 1.0  # a tie can match a tie
    assert agreement_with_ties(["a"], [None]) == 0.0  # parse failure is a mismatch
    assert agreement_with_ties([], []) is None


def test_cohen_kappa_hand_computed():
    # decided pairs (the last two are ignored: human tie / judge None):
    # human a a a b b b a a ; judge a a b b b a a a
    # p_o = 6/8 = 0.75; human P(a)=5/8, judge P(a)=5/8
    # p_e = (5/8)(5/8) + (3/8)(3/8) = 34/64; kappa = (48/64 - 34/64)/(30/64) = 14/30 = 7/15
    human = ["a", "a", "a", "b", "b", "b", "a", "a", "tie", "a"]
    judge = ["a", "a", "b", "b", "b", "a", "a", "a", "a", None]
    assert cohen_kappa(human, judge) == pytest.approx(7 / 15)
    # perfect disagreement: p_o=0, p_e=.5 -> (0-.5)/.5 = -1
    assert cohen_kappa(["a", "b"], ["b", "a"]) == pytest.approx(-1.0)
    # p_e == 1 (everyone always says "a"): 0/0, undefined, whatever p_o is
    assert cohen_kappa(["a", "a"], ["a", "a"]) is None
    assert cohen_kappa(["tie"], ["a"]) is None


@pytest.mark.parametrize("seed", range(20))
def test_cohen_kappa_matches_statsmodels(seed):
    rng = random.Random(seed)
    n = rng.randint(2, 60)
    labels = ["a", "b", "tie", None]
    human = [rng.choice(labels) for _ in range(n)]
    judge = [h if rng.random() < rng.random() else rng.choice(labels) for h in human]
    both = [(h, j) for h, j in zip(human, judge) if h in ("a", "b") and j in ("a", "b")]
    ours = cohen_kappa(human, judge)
    if len({x for pair in both for x in pair}) < 2:  # one category throughout: kappa is undefined
        assert ours is None
    else:
        table = np.array([[sum(1 for pair in both if pair == (h, j)) for j in "ab"] for h in "ab"])
        with np.errstate(divide="ignore", invalid="ignore"):  # statsmodels' z statistic, unused, may be 0/0
            kappa = cohens_kappa(table).kappa
        assert ours == pytest.approx(kappa, abs=1e-12)


@pytest.mark.parametrize("k,n", [(0, 1), (1, 1), (12, 12), (0, 12), (7, 10), (37, 53), (500, 1000), (999, 1000)])
def test_wilson_interval_matches_scipy(k, n):
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson_ci(k, n) == pytest.approx([ci.low, ci.high], abs=1e-12)


def test_wilson_interval_does_not_collapse_at_the_edges():
    lo, hi = wilson_ci(12, 12)
    assert hi == 1.0 and lo < 0.8  # a percentile bootstrap gives [1.0, 1.0] here
    assert wilson_ci(0, 0) is None


def test_position_consistency():
    # a=a ✓, b≠a ✗, tie=tie ✓, None/None ✗, a/None ✗ -> 2/5
    ab = ["a", "b", "tie", None, "a"]
    ba = ["a", "a", "tie", None, None]
    assert position_consistency(ab, ba) == pytest.approx(0.4)


def test_prefer_first_computes_shown_first_from_order():
    # ab/a: first=a picked ✓; ba/b: first=b picked ✓; ba/a ✗; ab/b ✗; ab/a ✓
    # ab/tie and ba/None are left out -> 3/5
    records = [("ab", "a"), ("ba", "b"), ("ba", "a"), ("ab", "b"), ("ab", "tie"), ("ba", None), ("ab", "a")]
    assert prefer_first(records) == pytest.approx(0.6)
    assert prefer_first([{"order": o, "verdict": v} for o, v in records]) == pytest.approx(0.6)
    assert prefer_first([first_shown_picked(o, v) for o, v in records]) == pytest.approx(0.6)
    assert prefer_first([("ab", None), ("ba", "tie")]) is None
    with pytest.raises(ValueError):
        first_shown_picked("xy", "a")


def test_prefer_longer_needs_diff_over_threshold():
    # #0 |100-10|=90, a, a longer ✓ ; #1 90, a, b longer ✗ ; #2 |50-75|=25 skipped ;
    # #3 |50-81|=31, b, b longer ✓ ; #4 tie skipped ; #5 None skipped -> 2/3
    len_a = [100, 10, 50, 50, 200, 0]
    len_b = [10, 100, 75, 81, 100, 100]
    verdicts = ["a", "a", "a", "b", "tie", None]
    assert prefer_longer(len_a, len_b, verdicts) == pytest.approx(2 / 3)
    assert prefer_longer([50], [80], ["b"]) is None  # diff exactly 30 is not MORE than 30
    assert prefer_longer([50], [80], ["b"], min_diff=20) == 1.0


def test_human_agreement_leave_one_out_with_skips():
    labels = [
        ["a", "a", "b"],  # ann0 vs [a,b] no unique top: skip; ann1 skip; ann2 b vs a ✗
        ["a", "a", "a"],  # each a vs a ✓✓✓
        ["b", "tie", "b"],  # ann0 vs [tie,b] skip; ann1 is tie: skip; ann2 vs [b,tie] skip
        ["a"],  # no other annotator: skip
        ["tie", "tie", "a"],  # ann0/ann1 tie: skip; ann2 vs others' top "tie": skip
        ["a", "b", "b"],  # ann0 a vs b ✗; ann1 vs [a,b] skip; ann2 vs [a,b] skip
    ]
    # 3 matches out of 5 comparisons
    assert human_agreement(labels) == pytest.approx(0.6)
    assert human_agreement([["a"], ["b"]]) is None


def test_brier_matches_statsmodels():
    rng = random.Random(3)
    probs = [rng.random() for _ in range(200)]  # the judge's P(a better)
    human_a = [rng.random() < p for p in probs]
    preferred = [p if a else 1 - p for p, a in zip(probs, human_a)]  # P(the human's choice)
    assert brier(preferred) == pytest.approx(mse(np.array(probs), np.array(human_a, dtype=float)), abs=1e-12)
    assert brier([]) is None


def test_judge_agreement_loo_is_computed_like_human_agreement():
    labels = [["a", "a", "b"], ["a", "a", "a"], ["b", "tie", "b"], ["a"], ["a", "b", "b"]]
    verdicts = ["a", "b", "b", "a", None]
    # pair 0: held out 0 -> others [a,b] no top, 1 -> [a,b] none, 2 -> [a,a] a: judge a ✓
    # pair 1: each held out -> others [a,a]: judge b ✗✗✗
    # pair 2: held out 0 -> [tie,b] none, 1 -> [b,b] b ✓, 2 -> [b,tie] none
    # pair 3: no other annotator; pair 4: judge None -> skipped.  2 of 5
    assert judge_agreement_loo(labels, verdicts) == pytest.approx(0.4)
    assert judge_agreement_loo([["a"]], ["a"]) is None


def test_ece_and_reliability_table():
    probs = [0.05, 0.15, 0.15, 0.95, 1.0, 0.55]
    outcomes = [False, False, True, True, True, False]
    # bin0 [0,.1): p=.05, frac 0 -> |.05-0|=.05, n=1
    # bin1 [.1,.2): mean .15, frac .5 -> .35, n=2
    # bin5 [.5,.6): .55 vs 0 -> .55, n=1
    # bin9 [.9,1.]: mean .975 (1.0 included), frac 1 -> .025, n=2
    # ECE = (1*.05 + 2*.35 + 1*.55 + 2*.025)/6 = 1.35/6 = 0.225
    assert expected_calibration_error(probs, outcomes) == pytest.approx(0.225)
    table = reliability_table(probs, outcomes)
    assert [row["count"] for row in table] == [1, 2, 0, 0, 0, 1, 0, 0, 0, 2]
    assert table[1]["lo"] == pytest.approx(0.1) and table[1]["hi"] == pytest.approx(0.2)
    assert table[1]["mean_p"] == pytest.approx(0.15) and table[1]["frac_positive"] == 0.5
    assert table[9]["mean_p"] == pytest.approx(0.975) and table[9]["hi"] == 1.0
    assert table[2]["mean_p"] is None and table[2]["frac_positive"] is None
    assert reliability_table([0.1, 0.5], [True, True])[1]["count"] == 1  # lower edge belongs to the bin
    assert expected_calibration_error([], []) is None
    with pytest.raises(ValueError):
        reliability_table([1.5], [True])


def test_summarize_hand_computed():
    human_labels = [["a"], ["b", "b", "a"], ["a", "b"], ["b"]]  # majorities: a, b, tie, b
    verdicts = ["a", "b", "tie", None]
    ab = ["a", "a", "b", None]
    ba = ["a", "b", "a", None]
    p_a = [0.9, 0.3, 0.5, None]
    len_a, len_b = [100, 20, 50, 200], [20, 100, 50, 10]
    s = summarize(human_labels, verdicts, ab, ba, p_a, len_a, len_b, parse_failures=2)
    assert set(s) == {"n_pairs", "agreement", "n_decided", "agreement_ci95", "agreement_with_ties",
                      "cohen_kappa", "position_consistency", "prefer_first", "prefer_longer_judge",
                      "prefer_longer_human", "parse_failures", "human_agreement", "agreement_loo", "calibration"}
    assert s["n_pairs"] == 4
    assert (s["agreement"], s["n_decided"]) == (1.0, 2)  # #0 a=a, #1 b=b; #2 human tie, #3 None
    assert s["agreement_ci95"] == pytest.approx(wilson_ci(2, 2)) and s["agreement_ci95"][0] < 0.5
    assert s["agreement_with_ties"] == 0.75  # #0 ✓ #1 ✓ #2 tie=tie ✓ #3 ✗
    assert s["cohen_kappa"] == 1.0  # p_o=1, p_e=.5
    assert s["position_consistency"] == 0.25  # a/a ✓, a/b ✗, b/a ✗, None/None ✗
    # ab: a✓ a✓ b✗ (None out); ba (b first): a✗ b✓ a✗ (None out) -> 3/6
    assert s["prefer_first"] == 0.5
    assert s["prefer_longer_judge"] == 1.0  # #0 a longer ✓, #1 b longer ✓, #2 same len, #3 None
    assert s["prefer_longer_human"] == pytest.approx(2 / 3)  # #0 ✓ #1 ✓ #3 b is shorter ✗
    assert s["parse_failures"] == 2  # as counted by the caller (judgments, not pairs)
    # [b,b,a]: only ann2 a vs b ✗; [a,b]: a vs b ✗, b vs a ✗ -> 0/3
    assert s["human_agreement"] == 0.0
    # judge vs others: [b,b,a]: held out 2 -> [b,b] b, judge b ✓; [a,b]: no unique top among one other? held
    # out 0 -> [b] b, judge tie: skipped (tie) -> 1/1
    assert s["agreement_loo"] == 1.0
    cal = s["calibration"]
    # kept: #0 (human a, p=.9), #1 (human b, p=.3); preferred p: .9, .7 -> (.01+.09)/2
    assert cal["brier"] == pytest.approx(0.05)
    # bin9: .9 vs 1 -> .1 ; bin3: .3 vs 0 -> .3 ; (.1+.3)/2
    assert cal["ece"] == pytest.approx(0.2)
    assert len(cal["bins"]) == 10 and sum(b["count"] for b in cal["bins"]) == 2
    json.dumps(s)  # plain JSON-serialisable values


def test_summarize_optional_keys_and_single_order():
    s = summarize([["a"], ["b"]], ["a", None], [], [], None, [10, 10], [10, 10])
    assert "calibration" not in s and "human_agreement" not in s
    assert s["position_consistency"] is None and s["prefer_first"] is None
    assert s["parse_failures"] == 1  # no single-order verdicts: counts None pair verdicts
    assert s["agreement"] == 1.0 and s["n_decided"] == 1
    empty = summarize([["tie"]], [None], [], [], [None], [1], [1])
    assert empty["agreement"] is None and empty["agreement_ci95"] is None and empty["cohen_kappa"] is None
    assert empty["calibration"]["brier"] is None and empty["calibration"]["ece"] is None
