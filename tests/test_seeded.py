"""rlaif.seeded: the strings each seeded draw hashes are part of a run's output, so they are pinned here (the
values below are those of the code before the draws shared one helper)."""

import hashlib

from rlaif.engines.base import request_seed
from rlaif.evaluation.humans import chosen_goes_to_a
from rlaif.evaluation.labels import sample_pairs, shown_order
from rlaif.seeded import coin, digest


def test_digest_hashes_the_parts_joined_by_colons():
    assert digest(3, "00001-ab:cd", "shown") == hashlib.sha256(b"3:00001-ab:cd:shown").digest()
    assert coin(3, "p") == (hashlib.sha256(b"3:p").digest()[0] < 128)


def test_the_draws_callers_make_are_unchanged():
    assert [shown_order(0, f"p{i}") for i in range(8)] == ["ba", "ba", "ab", "ba", "ba", "ab", "ab", "ba"]
    assert [chosen_goes_to_a(0, f"hh-{i:05d}") for i in range(8)] == [True, False, False, False, False, False,
                                                                       True, True]
    assert [p["pair_id"] for p in sample_pairs([{"pair_id": f"p{i}"} for i in range(8)], 3, 0)] == ["p7", "p4", "p3"]
    assert request_seed(0, "00000-abcdef12", "a") == 6692074121426149414
