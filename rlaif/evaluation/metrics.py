"""Judge-vs-human agreement metrics. Pure functions: no I/O, no model.

Labels and verdicts are "a", "b", "tie", or None (a judge output that could not be parsed).
Every metric returns a plain Python float/int (JSON-serialisable), or None when undefined
(nothing to average over). Nothing is rounded.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import math

DECIDED = ("a", "b")
ORDERS = {"ab": "a", "ba": "b"}  # order -> which original response was shown first


def _same_length(*seqs: Sequence) -> None:
    if len({len(s) for s in seqs}) > 1:
        raise ValueError(f"sequences differ in length: {[len(s) for s in seqs]}")


def _mean(values: Sequence[float | bool]) -> float | None:
    return float(sum(values) / len(values)) if values else None


def majority_label(labels: Sequence[str]) -> str:
    """Most common label among annotators; "tie" when two or more labels share the top count."""
    if not labels:
        raise ValueError("majority_label needs at least one label")
    counts = Counter(labels).most_common()
    if len(counts) > 1 and counts[0][1] == counts[1][1]:
        return "tie"
    return counts[0][0]


def _decided(human: Sequence[str | None], judge: Sequence[str | None]) -> list[tuple[str, str]]:
    """(human, judge) for pairs where both are "a" or "b"."""
    _same_length(human, judge)
    return [(h, j) for h, j in zip(human, judge) if h in DECIDED and j in DECIDED]


def agreement(human: Sequence[str | None], judge: Sequence[str | None]) -> tuple[float | None, int]:
    """(fraction of matches, n_decided) over pairs where both human and judge say "a" or "b"."""
    both = _decided(human, judge)
    return _mean([h == j for h, j in both]), len(both)


Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson_ci(k: int, n: int, z: float = Z95) -> list[float] | None:
    """Wilson score 95% interval [lo, hi] for k successes in n trials; None if n == 0.

    Unlike a percentile bootstrap it does not collapse at the edges: 12 of 12 gives [0.757, 1.0], not [1, 1].
    """
    if n == 0:
        return None
    p, z2 = k / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def agreement_with_ties(human: Sequence[str | None], judge: Sequence[str | None]) -> float | None:
    """Fraction of ALL pairs where the judge verdict equals the human label (None never matches)."""
    _same_length(human, judge)
    return _mean([j is not None and h == j for h, j in zip(human, judge)])


def cohen_kappa(human: Sequence[str | None], judge: Sequence[str | None]) -> float | None:
    """Cohen's kappa over the pairs `agreement` uses (categories a/b); None if there are none.

    kappa = (p_o - p_e) / (1 - p_e), with p_e = P_h(a)P_j(a) + P_h(b)P_j(b).
    When p_e == 1 (both raters used one and the same category throughout) kappa is 0/0: None, undefined.
    """
    both = _decided(human, judge)
    if not both:
        return None
    n = len(both)
    p_o = sum(h == j for h, j in both) / n
    p_e = sum((sum(h == c for h, _ in both) / n) * (sum(j == c for _, j in both) / n) for c in DECIDED)
    if p_e >= 1.0 - 1e-12:
        return None
    return float((p_o - p_e) / (1.0 - p_e))


def position_consistency(verdict_ab: Sequence[str | None], verdict_ba: Sequence[str | None]) -> float | None:
    """Fraction of pairs whose two single-order verdicts (original orientation) are equal.

    A None in either order counts as inconsistent; "tie" == "tie" is consistent.
    """
    _same_length(verdict_ab, verdict_ba)
    return _mean([x is not None and x == y for x, y in zip(verdict_ab, verdict_ba)])


def first_shown_picked(order: str, verdict: str | None) -> bool | None:
    """Did a single-order verdict (original orientation) pick the response shown first?

    None when the verdict is None or "tie". In order "ab" "a" is shown first; in "ba", "b".
    """
    if order not in ORDERS:
        raise ValueError(f"order must be 'ab' or 'ba', got {order!r}")
    if verdict not in DECIDED:
        return None
    return verdict == ORDERS[order]


def prefer_first(records: Sequence[bool | None | tuple[str, str | None] | Mapping[str, object]]) -> float | None:
    """Fraction of decided single-order verdicts that pick the response shown first.

    Each record is either an (order, verdict) tuple, a mapping with "order" and "verdict"
    keys (verdict in the ORIGINAL a/b orientation), or an already computed bool/None from
    `first_shown_picked`. None verdicts and ties are left out.
    """
    picked = []
    for r in records:
        if r is None or isinstance(r, bool):
            picked.append(r)
        elif isinstance(r, Mapping):
            picked.append(first_shown_picked(r["order"], r["verdict"]))  # type: ignore[arg-type]
        else:
            picked.append(first_shown_picked(*r))
    return _mean([p for p in picked if p is not None])


def prefer_longer(pairs_a_len: Sequence[int], pairs_b_len: Sequence[int],
                  verdicts: Sequence[str | None], min_diff: int = 30) -> float | None:
    """Among pairs whose lengths differ by MORE than `min_diff` and whose verdict is a/b,
    the fraction picking the longer response. Lengths: characters after strip."""
    _same_length(pairs_a_len, pairs_b_len, verdicts)
    picks = [(v == "a") == (la > lb) for la, lb, v in zip(pairs_a_len, pairs_b_len, verdicts)
             if v in DECIDED and abs(la - lb) > min_diff]
    return _mean(picks)


def _unique_top(labels: Sequence[str]) -> str | None:
    """The unique most common label, or None when empty or the top count is shared."""
    counts = Counter(labels).most_common()
    if not counts or (len(counts) > 1 and counts[0][1] == counts[1][1]):
        return None
    return counts[0][0]


def human_agreement(label_lists: Sequence[Sequence[str]]) -> float | None:
    """Leave-one-out human-human agreement (a ceiling for the judge).

    For each pair and annotator, compare that annotator's label with the unique most common
    label of the OTHER annotators. Skipped: others empty or without a unique top label, or
    either label "tie". Returns the fraction of matches, None if nothing was compared.
    """
    matches = []
    for labels in label_lists:
        for i, mine in enumerate(labels):
            others = _unique_top(list(labels[:i]) + list(labels[i + 1:]))
            if others is None or mine == "tie" or others == "tie":
                continue
            matches.append(mine == others)
    return _mean(matches)


def judge_agreement_loo(label_lists: Sequence[Sequence[str]], verdicts: Sequence[str | None]) -> float | None:
    """The judge's agreement computed the way `human_agreement` is, so the two compare: for each pair and
    each held-out annotator, the judge's verdict against the unique most common label of the OTHER
    annotators. Skipped: others without a unique top label, a "tie" there, or a judge verdict that is not
    a/b. Returns the fraction of matches, None if nothing was compared."""
    _same_length(label_lists, verdicts)
    matches = []
    for labels, verdict in zip(label_lists, verdicts):
        if verdict not in DECIDED:
            continue
        for i in range(len(labels)):
            others = _unique_top(list(labels[:i]) + list(labels[i + 1:]))
            if others is None or others == "tie":
                continue
            matches.append(verdict == others)
    return _mean(matches)


def brier(p_human_preferred: Sequence[float]) -> float | None:
    """Mean (1 - p)^2 of the judge's probability for the human-preferred response."""
    return _mean([(1.0 - p) ** 2 for p in p_human_preferred])


def reliability_table(probs: Sequence[float], outcomes: Sequence[bool], bins: int = 10) -> list[dict]:
    """Per-bin rows {lo, hi, count, mean_p, frac_positive} over `bins` equal-width bins on [0, 1].

    Bin k holds lo <= p < hi; the last bin also holds p == 1.0. Empty bins have None means.
    """
    _same_length(probs, outcomes)
    members: list[list[tuple[float, bool]]] = [[] for _ in range(bins)]
    for p, y in zip(probs, outcomes):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"probability {p} outside [0, 1]")
        members[min(int(p * bins), bins - 1)].append((float(p), bool(y)))
    return [{"lo": k / bins, "hi": (k + 1) / bins, "count": len(m),
             "mean_p": _mean([p for p, _ in m]), "frac_positive": _mean([y for _, y in m])}
            for k, m in enumerate(members)]


def expected_calibration_error(probs: Sequence[float], outcomes: Sequence[bool], bins: int = 10) -> float | None:
    """ECE = sum_k (n_k / N) * |mean p in bin k - fraction positive in bin k|; None if N == 0.

    Meant for p = judge's P(A better) and outcome = (human label == "a").
    """
    table = reliability_table(probs, outcomes, bins)
    n = sum(row["count"] for row in table)
    if n == 0:
        return None
    return float(sum(row["count"] / n * abs(row["mean_p"] - row["frac_positive"])
                     for row in table if row["count"]))


def summarize(human_labels: list[list[str]], verdicts: list, verdict_ab: list, verdict_ba: list,
              p_a: list[float | None] | None, len_a: list[int], len_b: list[int],
              parse_failures: int | None = None) -> dict:
    """All metrics for one judge run, as a JSON-serialisable dict.

    human_labels: per pair, one label per annotator (reduced with `majority_label`).
    verdicts: per-pair judge verdicts; verdict_ab / verdict_ba: the single-order verdicts in the
    original orientation (empty lists or None when the judge ran in one order only).
    parse_failures: judgments the judge gave no usable answer for, as counted by the caller (a pair
    judged under several principles has several judgments per order); by default the None pair verdicts.
    agreement_ci95: the Wilson score interval of `agreement` on n_decided.
    human_agreement and agreement_loo (the judge against the majority of the other annotators, the one
    figure comparable to human_agreement): present only when some pair has >= 2 annotators.
    calibration {brier, ece, bins}: present only when p_a is given; computed over pairs with a
    human a/b majority and a non-None p_a (outcome for ECE: human majority == "a").
    """
    verdict_ab, verdict_ba = list(verdict_ab or []), list(verdict_ba or [])
    human = [majority_label(labels) for labels in human_labels]
    _same_length(human, verdicts, len_a, len_b)
    for single in (verdict_ab, verdict_ba):
        if single:
            _same_length(human, single)
    value, n_decided = agreement(human, verdicts)
    matches = [h == v for h, v in _decided(human, verdicts)]
    records = [("ab", v) for v in verdict_ab] + [("ba", v) for v in verdict_ba]
    out: dict = {
        "n_pairs": len(human),
        "agreement": value,
        "n_decided": n_decided,
        "agreement_ci95": wilson_ci(sum(matches), len(matches)),
        "agreement_with_ties": agreement_with_ties(human, verdicts),
        "cohen_kappa": cohen_kappa(human, verdicts),
        "position_consistency": (position_consistency(verdict_ab, verdict_ba)
                                 if verdict_ab and verdict_ba else None),
        "prefer_first": prefer_first(records),
        "prefer_longer_judge": prefer_longer(len_a, len_b, verdicts),
        "prefer_longer_human": prefer_longer(len_a, len_b, human),
        "parse_failures": parse_failures if parse_failures is not None else sum(v is None for v in verdicts),
    }
    if any(len(labels) >= 2 for labels in human_labels):
        out["human_agreement"] = human_agreement(human_labels)
        out["agreement_loo"] = judge_agreement_loo(human_labels, verdicts)
    if p_a is not None:
        _same_length(human, p_a)
        kept = [(h, p) for h, p in zip(human, p_a) if h in DECIDED and p is not None]
        probs = [float(p) for _, p in kept]
        outcomes = [h == "a" for h, _ in kept]
        out["calibration"] = {
            "brier": brier([p if is_a else 1.0 - p for is_a, p in zip(outcomes, probs)]),
            "ece": expected_calibration_error(probs, outcomes),
            "bins": reliability_table(probs, outcomes),
        }
    return out
