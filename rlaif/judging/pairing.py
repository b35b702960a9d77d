"""Which pairs of a prompt's K samples are judged (--pairing): all, adjacent or random-M.

A pair is (i, j) with i < j, sample i shown as response_a. random-M draws its M pairs from the prompt's key and
the run seed alone (rlaif.seeded), so the same run always judges the same pairs.
"""

from __future__ import annotations

import re
from itertools import combinations

from rlaif.errors import RlaifError
from rlaif.seeded import digest

_RANDOM = re.compile(r"random-(-?\d+)")


def check(spec: str, k: int, where: str = "--pairing") -> None:
    """A valid --pairing for K samples, or one RlaifError: random-M needs 1 <= M <= K(K-1)/2."""
    if spec in ("all", "adjacent"):
        return
    m = _RANDOM.fullmatch(spec)
    if not m:
        raise RlaifError(f"unknown pairing {spec!r}", where, "use all, adjacent or random-M (M pairs per prompt, e.g. random-3)")
    most = k * (k - 1) // 2
    if not 1 <= int(m.group(1)) <= most:
        raise RlaifError(f"{spec}: M must be between 1 and K(K-1)/2 = {most} for K = {k} samples per prompt", where,
                         f"pass random-1 to random-{most}, or all")


def pairs_of(k: int, spec: str, seed: int, key: str) -> list[tuple[int, int]]:
    """The judged pairs (i, j), i < j, of one prompt's K samples, in (i, j) order."""
    every = list(combinations(range(k), 2))
    if spec == "all":
        return every
    if spec == "adjacent":
        return [(i, i + 1) for i in range(k - 1)]
    m = int(_RANDOM.fullmatch(spec).group(1))
    drawn = sorted(every, key=lambda ij: digest(seed, key, "pairing", *ij))[:m]
    return sorted(drawn)
