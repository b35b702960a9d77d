"""A fake engine with canned, deterministic outputs: for unit tests of logic, never for features."""

from __future__ import annotations

import hashlib
import math
from typing import Callable, Sequence

from rlaif.engines.base import Engine, row_seeds


def _unit(text: str) -> float:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


class FakeEngine(Engine):
    """generate: echoes a seeded token; label_logprobs: p(A) from `score(conversation_text)` or a hash.
    Counts every call so tests can prove what was (not) recomputed."""

    def __init__(self, identity: str = "fake", score: Callable[[str], float] | None = None,
                 reply: Callable[[str], str] | None = None, supports_logprobs: bool = True):
        self.identity = identity
        self.supports_logprobs = supports_logprobs  # False: like an endpoint without log-probs
        self.score = score or _unit
        self.reply = reply or (lambda text: f"Reasoning.\nVerdict: {'A' if _unit(text) > 0.5 else 'B'}")
        self.calls = {"generate": 0, "label_logprobs": 0, "complete": 0}
        self.stats = {"truncated": 0}

    def generate(self, conversations: Sequence[list[dict]], *, seed, max_new_tokens: int,
                 temperature: float, top_p: float) -> list[str]:
        self.calls["generate"] += len(conversations)
        return [f"response to {c[-1]['content'][:20]!r} #{_unit(f'{s}:{c}'):.4f}"
                for s, c in zip(row_seeds(seed, len(conversations)), conversations)]

    def label_logprobs(self, conversations: Sequence[list[dict]], labels: Sequence[str]) -> list[dict]:
        self.calls["label_logprobs"] += len(conversations)
        out = []
        for c in conversations:
            p = min(max(self.score("\n".join(m["content"] for m in c)), 1e-6), 1 - 1e-6)
            if len(labels) > 2:  # a rating scale: a bump of log-probs around label p * (K - 1) (0-based)
                centre = p * (len(labels) - 1)
                out.append({label: -((k - centre) ** 2) / 2 - 1.0 for k, label in enumerate(labels)})
                continue
            out.append({labels[0]: math.log(p), labels[1]: math.log(1 - p)})
        return out

    def complete(self, conversations: Sequence[list[dict]], *, max_new_tokens: int) -> list[str]:
        self.calls["complete"] += len(conversations)
        return [self.reply(c[-1]["content"]) for c in conversations]
