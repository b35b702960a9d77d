"""Seeded draws that depend on nothing but their parts: the sha256 of the parts joined by ":". No `random`, no
state: the same parts give the same draw in every process and every run. The strings hashed are part of what a
run writes (sample seeds, principles drawn, the order a pair is shown in), so a caller's parts never change."""

from __future__ import annotations

import hashlib


def digest(*parts) -> bytes:
    """sha256 of str(part) for each part, joined by ":" (digest(seed, pair_id, "shown") hashes f"{seed}:{pair_id}:shown")."""
    return hashlib.sha256(":".join(map(str, parts)).encode()).digest()


def coin(*parts) -> bool:
    """A fair coin flip: True when the digest's first byte is below 128."""
    return digest(*parts)[0] < 128
