"""Pair scores: pure functions of the judgments present. Nothing is drawn again at scoring time: the
principles a pair was judged on, with their text hashes and weights, are in its judgment records.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Iterable

from rlaif.judging.constitution import Constitution, Principle


def is_identical(pair: dict) -> bool:
    """The two responses are the same text (whitespace at the ends aside): no preference can come of it."""
    return pair["response_a"].strip() == pair["response_b"].strip()


def principle_hash(principle: Principle) -> str:
    """The hash of the principle text a judgment was made with (kept in each judgment)."""
    return _text_hash(principle.text)


@lru_cache(maxsize=256)
def _text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def to_original(first_label_p: float | None, order: str) -> float | None:
    """P(shown-first is better) -> P(response_a is better)."""
    if first_label_p is None:
        return None
    return first_label_p if order == "ab" else 1.0 - first_label_p


def verdict_of(p_a: float | None) -> str | None:
    if p_a is None:
        return None
    return "a" if p_a > 0.5 else "b" if p_a < 0.5 else "tie"


def current_hashes(constitution: Constitution) -> dict[str, str]:
    """principle_id -> the hash of its text now: a judgment made with other text is stale."""
    return {p.id: principle_hash(p) for p in constitution.principles}


def is_current(judgment: dict, current: dict[str, str]) -> bool:
    """Whether a judgment was made with its principle's text as it is now (current_hashes). A record without a
    principle_hash predates them and counts as current."""
    now = current.get(judgment["principle_id"])
    return now is not None and judgment.get("principle_hash", now) == now


def pair_scores(pairs: Iterable[dict], judgments: Iterable[dict], constitution: Constitution, *,
                orders: tuple = ("ab", "ba")) -> dict:
    """pair_id -> score in [0, 1] (P(response_a is better)), a pure function of the judgments present: the mean
    of p_a over `orders` for each principle a pair was judged on, then the mean weighted by each judgment's own
    `weight`. Nothing is drawn again: the principles are those in the judgments. A judgment whose
    `principle_hash` is not the current text of its principle (edited or removed since) is never mixed with
    current ones: it is left out (see is_current). None when no current judgment parsed.
    orders=("ab",) gives single-order scores. A pair of identical responses scores 0.5 (a tie by construction;
    it is never judged)."""
    current, every = current_hashes(constitution), constitution.principles_per_comparison == "all"
    weights = {p.id: float(p.weight) if every else 1.0 for p in constitution.principles}  # records without one
    by = {}
    for r in judgments:
        pid = r["principle_id"]
        if r["p_a"] is not None and r["order"] in orders and is_current(r, current):
            group = by.setdefault(r["pair_id"], {}).setdefault(pid, [r.get("weight", weights[pid]), []])
            group[1].append(r["p_a"])
    scores = {}
    for pair in pairs:
        if is_identical(pair):
            scores[pair["pair_id"]] = 0.5
            continue
        num = den = 0.0
        for weight, ps in by.get(pair["pair_id"], {}).values():
            num += weight * sum(ps) / len(ps)
            den += weight
        scores[pair["pair_id"]] = num / den if den else None
    return scores


def win_rate(scores: list) -> tuple[float | None, dict]:
    """Share of wins for response_a over decided scores (a tie, exactly 0.5, counts half)."""
    decided = [s for s in scores if s is not None]
    wins = sum(s > 0.5 for s in decided)
    ties = sum(s == 0.5 for s in decided)
    rate = (wins + 0.5 * ties) / len(decided) if decided else None
    return rate, {"n": len(scores), "n_judged": len(decided), "wins": wins, "losses": len(decided) - wins - ties,
                  "ties": ties}
