"""Repeated pair_ids in a human-label file: a different pair under one id is a bad row; an exact repeat is kept
once and counted (issue 21, point 4)."""

import json

from conftest import run_cli
from rlaif.evaluation.humans import read_human_pairs
from rlaif.evaluation.labels import LabelFile

ROWS = [
    {"pair_id": "p1", "prompt": "Say hi", "response_a": "Hi!", "response_b": "Go away.", "label": "a"},
    {"pair_id": "p2", "prompt": "2+2?", "response_a": "5", "response_b": "4", "label": "b"},
    {"pair_id": "p3", "prompt": "Colour?", "response_a": "Blue", "response_b": "Red", "label": "tie"},
]


def write(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_same_id_different_pair_is_a_bad_row(tmp_path, capsys):
    other = dict(ROWS[0], response_b="Hello to you.")  # row 4 reuses p1 for another pair
    path = write(tmp_path / "humans.jsonl", [ROWS[0], ROWS[1], ROWS[2], other])
    out = tmp_path / "out"
    assert run_cli("agreement", "--human", path, "--judge", "length", "--output-dir", out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{path}:row 4" in err[0] and "row 1" in err[0] and "'p1'" in err[0], err
    assert "--skip-bad-rows" in err[0]
    assert not out.exists()
    relabelled = dict(ROWS[0], label="b")  # same pair, another label: not the same row either
    pairs, skipped = read_human_pairs(write(tmp_path / "h2.jsonl", [ROWS[0], other, relabelled, ROWS[1]]),
                                      skip_bad_rows=True)
    assert skipped == 2 and pairs == read_human_pairs(write(tmp_path / "h3.jsonl", ROWS[:2]))[0]


def test_exact_repeats_kept_once_and_counted(tmp_path, capsys):
    path = write(tmp_path / "humans.jsonl", [ROWS[0], ROWS[1], ROWS[0], ROWS[2], ROWS[1], ROWS[0]])
    out = tmp_path / "out"
    assert run_cli("agreement", "--human", path, "--judge", "length", "--judge", "random", "--output-dir", out) == 0
    result = json.loads((out / "agreement.json").read_text())
    for r in result.values():
        assert r["n_pairs"] == 3 and r["n_duplicate_rows"] == 3 and r["n_skipped_rows"] == 0
    assert "3 exact duplicate rows" in capsys.readouterr().err
    counts = {}
    pairs, _ = read_human_pairs(path, counts=counts)
    assert [p.pair_id for p in pairs] == ["p1", "p2", "p3"] and counts == {"duplicate_rows": 3}


def test_label_file_keeps_labellers_and_relabels(tmp_path):
    """human_labels.jsonl holds a row per label: two labellers and a relabel of one pair are one pair, no repeat."""
    path = tmp_path / "human_labels.jsonl"
    alice, bob = LabelFile(path, "alice"), LabelFile(path, "bob")
    alice.label(ROWS[0], "a", "ab")
    bob.label(ROWS[0], "b", "ba")
    alice.label(ROWS[0], "tie", "ab")  # a relabel replaces alice's earlier label
    counts = {}
    (pair,), skipped = read_human_pairs(str(path), counts=counts)
    assert pair.pair_id == "p1" and pair.labels == ["tie", "b"] and skipped == 0 and counts["duplicate_rows"] == 0
