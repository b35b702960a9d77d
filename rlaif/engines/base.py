"""The interface every engine implements (hf, vllm, openai, fake).

Conversations are lists of chat messages ({"role": ..., "content": ...}); the engine applies the
model's chat template itself, with the generation prompt added.
"""

from __future__ import annotations

import math
from typing import Sequence


class Engine:
    """Base class. `identity` names everything about the engine that changes its outputs
    (model, weights revision, dtype) and nothing that does not (batch size, device)."""

    identity: str = "engine"
    stats: dict  # counters reported in summary.json (requests, tokens, truncated, ...)

    def generate(self, conversations: Sequence[list[dict]], *, seed: int, max_new_tokens: int,
                 temperature: float, top_p: float) -> list[str]:
        """One sampled completion per conversation. Deterministic given `seed` and the inputs."""
        raise NotImplementedError

    def label_logprobs(self, conversations: Sequence[list[dict]], labels: Sequence[str]) -> list[dict]:
        """For each conversation, the log-probability of each label as the first token of the reply.
        A label missing from what the engine can see (e.g. outside an API's top_logprobs) is absent."""
        raise NotImplementedError

    def complete(self, conversations: Sequence[list[dict]], *, max_new_tokens: int) -> list[str]:
        """Greedy completion (for chain-of-thought judging)."""
        raise NotImplementedError

    def close(self) -> None:
        pass


def label_probability(logprobs: dict, first: str, second: str) -> float | None:
    """P(first) renormalised over the two labels; None when either label is missing."""
    if first not in logprobs or second not in logprobs:
        return None
    a, b = logprobs[first], logprobs[second]
    m = max(a, b)
    ea, eb = math.exp(a - m), math.exp(b - m)
    return ea / (ea + eb)
