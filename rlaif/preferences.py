"""Preferences stage: pair scores -> trl's conversational preference format (prompt/chosen/rejected)."""

from __future__ import annotations

from collections import Counter

from rlaif.judge import is_identical


def build(pairs: list[dict], scores: dict, judgments: list[dict], min_margin: float) -> tuple[list[dict], dict]:
    """Keep a pair when |score - 0.5| > min_margin. margin = |score - 0.5| (0 to 0.5).
    votes: per principle, how many single-order verdicts favoured a and b.
    A pair whose two responses are the same text is never a preference: counted as `identical` and dropped."""
    votes = {}
    for r in judgments:
        if r["verdict"] in ("a", "b"):
            votes.setdefault(r["pair_id"], {}).setdefault(r["principle_id"], Counter())[r["verdict"]] += 1
    rows, counts = [], Counter()
    for pair in pairs:
        if is_identical(pair):
            counts["identical"] += 1
            continue
        score = scores.get(pair["pair_id"])
        if score is None:
            counts["unjudged"] += 1
            continue
        if score == 0.5:
            counts["tied"] += 1
            continue
        margin = abs(score - 0.5)
        if margin <= min_margin:
            counts["dropped"] += 1
            continue
        a_wins = score > 0.5
        chosen, rejected = (pair["response_a"], pair["response_b"]) if a_wins else (pair["response_b"], pair["response_a"])
        rows.append({
            "prompt": [{"role": "user", "content": pair["prompt"]}],
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
            "margin": margin,
            "score": score,
            "pair_id": pair["pair_id"],
            "votes": [{"principle_id": pid, "a": c["a"], "b": c["b"]} for pid, c in votes.get(pair["pair_id"], {}).items()],
        })
        counts["kept"] += 1
    return rows, {k: counts.get(k, 0) for k in ("kept", "dropped", "tied", "unjudged", "identical")}
