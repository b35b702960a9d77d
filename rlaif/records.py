"""Records that pass between stages, and JSONL helpers. No timing fields: reruns compare equal."""

from __future__ import annotations

from dataclasses import dataclass, field, fields


@dataclass(slots=True)
class Pair:
    pair_id: str
    prompt_id: str
    prompt: str
    response_a: str
    response_b: str
    generator: str = ""
    sampling: dict = field(default_factory=dict)


@dataclass(slots=True)
class Judgment:
    pair_id: str
    principle_id: str
    order: str  # "ab": response_a shown first; "ba": response_b shown first
    p_a: float | None  # probability that response_a is better, in the original A/B order
    verdict: str | None  # "a", "b", "tie", or None when unparseable
    raw_output: object  # label log-probs (dict) or the judge's text
    judge: str
    key: str
    mode: str = "logprob"
    principle_hash: str = ""  # sha256 of the principle text judged with, first 12 hex digits
    weight: float = 1.0  # the principle's weight in the pair's score (its weight for "all", else 1.0)


def to_dict(record) -> dict:
    """The record's fields in order (shallow: asdict's deep copy cost more than the rest of a fake judgment)."""
    return {f.name: getattr(record, f.name) for f in fields(record)}
