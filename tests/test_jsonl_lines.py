"""JSON lines that hold the characters str.splitlines() also splits at (U+2028, U+2029, U+0085: json.dumps with
ensure_ascii=False leaves them as they are) read back whole."""

import json

from rlaif.store.files import append_jsonl, read_jsonl

ROWS = [{"pair_id": "p1", "response_a": "one\u2028two", "response_b": "three\u2029four\x85five"},
        {"pair_id": "p2", "response_a": "x", "response_b": "y"}]


def test_read_jsonl_keeps_a_record_with_unicode_line_separators_whole(tmp_path):
    path = tmp_path / "pairs.jsonl"
    append_jsonl(path, ROWS)
    assert "\u2028" in path.read_text(encoding="utf-8")  # written raw, not escaped
    assert read_jsonl(path) == ROWS


def test_read_jsonl_repair_cuts_only_the_torn_last_line(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_bytes((json.dumps(ROWS[0], ensure_ascii=False) + "\n").encode() + b'{"pair_id": "p2", "resp')
    assert read_jsonl(path) == ROWS[:1] and path.read_bytes().endswith(b"resp")  # ignored, left in place
    assert read_jsonl(path, repair=True) == ROWS[:1] and path.read_bytes().endswith(b"\n")


def test_a_label_file_with_unicode_line_separators_opens_again(tmp_path):
    from rlaif.evaluation.labels import LabelFile, read_label_file

    path = tmp_path / "human_labels.jsonl"
    LabelFile(path, "ann").label(ROWS[0] | {"prompt": "Say\u2028hi"}, "a", "ab")
    assert LabelFile(path, "ann").current["p1"]["prompt"] == "Say\u2028hi"  # raised "unparseable JSON" before
    (pair,), names, skipped = read_label_file(str(path))
    assert (pair.response_a, pair.labels, names, skipped) == ("one\u2028two", {"ann": "a"}, ["ann"], 0)
