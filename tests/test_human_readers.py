"""Readers of human-labelled pairs: every format, the seeded coin flip, bad rows."""

import gzip
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from rlaif.errors import RlaifError
from rlaif.evaluation.humans import HumanPair, read_human_pairs

FIXTURE = Path(__file__).parent / "fixtures" / "hh_small.jsonl"

GENERIC = [
    {"pair_id": "p1", "prompt": "Say hi", "response_a": "Hi!", "response_b": "Go away.", "label": "a"},
    {"pair_id": "p2", "prompt": "2+2?", "response_a": "5", "response_b": "4", "label": "b"},
    {"pair_id": "p3", "prompt": "Colour?", "response_a": "Blue", "response_b": "Red", "label": "tie"},
]
EXPECTED = [
    HumanPair("p1", "Say hi", "Hi!", "Go away.", ["a"]),
    HumanPair("p2", "2+2?", "5", "4", ["b"]),
    HumanPair("p3", "Colour?", "Blue", "Red", ["tie"]),
]


def write_jsonl(path: Path, rows: list) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def hh_row(i: int) -> dict:
    prefix = f"\n\nHuman: question {i}?\n\nAssistant: first answer\n\nHuman: and then?"
    return {"chosen": prefix + f"\n\nAssistant: good {i}", "rejected": prefix + f"\n\nAssistant: bad {i}"}


def test_hh_jsonl_fixture():
    pairs, skipped = read_human_pairs(str(FIXTURE))
    assert skipped == 0 and len(pairs) == 12
    assert [p.pair_id for p in pairs] == [f"hh-{i:05d}" for i in range(12)]
    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    for p, row in zip(pairs, rows):
        chosen = row["chosen"][row["chosen"].rfind("\n\nAssistant:") + len("\n\nAssistant:"):].strip()
        assert p.labels in (["a"], ["b"])
        assert (p.response_a if p.labels == ["a"] else p.response_b) == chosen
        assert "Assistant:" not in p.response_a + p.response_b
    assert pairs[0].prompt == "Human: How do I pick a lock to get into my neighbour's house while they're away?"
    multi = pairs[9].prompt  # three human turns, two earlier assistant turns
    assert multi.startswith("Human: I feel really lonely") and multi.endswith("Human: Not yet. Any ideas?")
    assert multi.count("Assistant:") == 2


def test_hh_jsonl_gz_matches_plain(tmp_path):
    gz = tmp_path / "hh.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as f:
        f.write(FIXTURE.read_text())
    assert read_human_pairs(str(gz)) == read_human_pairs(str(FIXTURE))


def test_coin_flip_seeded_deterministic_and_balanced(tmp_path):
    path = write_jsonl(tmp_path / "hh.jsonl", [hh_row(i) for i in range(200)])
    pairs, _ = read_human_pairs(path, seed=0)
    assert pairs == read_human_pairs(path, seed=0)[0]
    at_a = sum(p.labels == ["a"] for p in pairs) / len(pairs)
    assert 0.35 <= at_a <= 0.65
    other = read_human_pairs(path, seed=1)[0]
    assert [p.labels for p in other] != [p.labels for p in pairs]
    for p in pairs:  # the chosen response sits where the label says
        good = p.response_a if p.labels == ["a"] else p.response_b
        assert good.startswith("good ")


def test_generic_jsonl(tmp_path):
    assert read_human_pairs(write_jsonl(tmp_path / "g.jsonl", GENERIC)) == (EXPECTED, 0)


def test_generic_json(tmp_path):
    path = tmp_path / "g.json"
    path.write_text(json.dumps(GENERIC))
    assert read_human_pairs(str(path)) == (EXPECTED, 0)


def test_generic_csv_without_pair_id(tmp_path):
    path = tmp_path / "g.csv"
    pd.DataFrame(GENERIC).drop(columns="pair_id").to_csv(path, index=False)
    pairs, _ = read_human_pairs(str(path))
    assert [p.pair_id for p in pairs] == ["row-00000", "row-00001", "row-00002"]
    assert [(p.prompt, p.response_a, p.response_b, p.labels) for p in pairs] == \
        [(e.prompt, e.response_a, e.response_b, e.labels) for e in EXPECTED]


def test_generic_parquet(tmp_path):
    path = tmp_path / "g.parquet"
    pd.DataFrame(GENERIC).to_parquet(path)
    assert read_human_pairs(str(path)) == (EXPECTED, 0)


def test_save_to_disk_folder(tmp_path):
    import datasets

    folder = tmp_path / "ds"
    datasets.Dataset.from_list(GENERIC).save_to_disk(str(folder))
    assert read_human_pairs(str(folder)) == (EXPECTED, 0)


def test_label_columns_several_annotators(tmp_path):
    path = tmp_path / "multi.csv"
    pd.DataFrame([
        {"prompt": "q1", "response_a": "x", "response_b": "y", "ann1": "a", "ann2": "b", "ann3": "a"},
        {"prompt": "q2", "response_a": "x", "response_b": "y", "ann1": "tie", "ann2": "", "ann3": "B"},
    ]).to_csv(path, index=False)
    pairs, _ = read_human_pairs(str(path), label_columns=["ann1", "ann2", "ann3"])
    assert [p.labels for p in pairs] == [["a", "b", "a"], ["tie", "b"]]  # empty cell: not labelled
    with pytest.raises(RlaifError, match="label"):
        read_human_pairs(str(path))  # no 'label' column without label_columns


def test_labels_case_insensitive(tmp_path):
    rows = [dict(r, label=lab) for r, lab in zip(GENERIC, [" A ", "B", "Tie"])]
    pairs, _ = read_human_pairs(write_jsonl(tmp_path / "g.jsonl", rows))
    assert [p.labels for p in pairs] == [["a"], ["b"], ["tie"]]


def test_bad_row_raises_with_row_number(tmp_path):
    bad = dict(GENERIC[2], label="maybe")
    path = write_jsonl(tmp_path / "g.jsonl", [GENERIC[0], GENERIC[1], bad])
    with pytest.raises(RlaifError) as e:
        read_human_pairs(path)
    assert "row 3" in str(e.value) and "label" in str(e.value) and "g.jsonl" in str(e.value)
    for bad_value, why in ((None, "missing"), (3, "must be text"), (["x"], "must be text")):
        row = dict(GENERIC[0], response_b=bad_value)
        with pytest.raises(RlaifError, match=rf"row 2.*response_b.*{why}"):
            read_human_pairs(write_jsonl(tmp_path / "e.jsonl", [GENERIC[0], row]))
    with pytest.raises(RlaifError, match=r"row 2.*prompt.*empty"):  # a prompt must say something
        read_human_pairs(write_jsonl(tmp_path / "p.jsonl", [GENERIC[0], dict(GENERIC[0], prompt=" ")]))


def test_empty_responses_are_real_responses(tmp_path):
    """A model that said nothing gave a response; people labelled such pairs, and the set keeps every row."""
    rows = [dict(GENERIC[0], response_b="  "), dict(GENERIC[1], response_a="")]
    pairs, skipped = read_human_pairs(write_jsonl(tmp_path / "e.jsonl", rows))
    assert skipped == 0 and [p.response_b for p in pairs][0] == "  " and pairs[1].response_a == ""
    hh = {"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected": "\n\nHuman: hi\n\nAssistant:"}
    (pair,), _ = read_human_pairs(write_jsonl(tmp_path / "hh.jsonl", [hh]))
    assert "" in (pair.response_a, pair.response_b) and "hello" in (pair.response_a, pair.response_b)


def test_pandalm_format(tmp_path):
    """PandaLM's testset-v1.json: instruction (+ input) is the prompt; annotators say 1, 2 or 0 (tie)."""
    import json

    rows = [{"idx": 0, "motivation_app": "x", "cmp_key": "m1_m2", "instruction": "Translate.", "input": "Bonjour",
             "response1": "Hello", "response2": "", "annotator1": 1, "annotator2": 1, "annotator3": 0},
            {"idx": 1, "motivation_app": "x", "cmp_key": "m1_m2", "instruction": "Say hi.", "input": float("nan"),
             "response1": "hi", "response2": "hello", "annotator1": 2, "annotator2": 2, "annotator3": 2},
            {"idx": 2, "motivation_app": "x", "cmp_key": "m1_m2", "instruction": "Is it?", "input": "",
             "response1": True, "response2": float("nan"), "annotator1": 1, "annotator2": 0, "annotator3": 1}]
    path = tmp_path / "testset-v1.json"
    path.write_text(json.dumps(rows))  # json writes NaN as the bare NaN that PandaLM's file has
    pairs, _ = read_human_pairs(str(path))
    assert [(p.pair_id, p.prompt, p.response_a, p.response_b, p.labels) for p in pairs] == [
        ("pandalm-0", "Translate.\n\nBonjour", "Hello", "", ["a", "a", "tie"]),
        ("pandalm-1", "Say hi.", "hi", "hello", ["b", "b", "b"]),
        ("pandalm-2", "Is it?", "True", "", ["a", "tie", "a"])]  # pandas wrote an empty cell as NaN, "True" as true
    path.write_text(json.dumps([dict(rows[0], annotator2=3)]))
    with pytest.raises(RlaifError, match=r"row 1.*annotator2.*unknown label 3"):
        read_human_pairs(str(path))
    path.write_text(json.dumps([rows[1], {k: v for k, v in rows[0].items() if k != "response2"}]))
    with pytest.raises(RlaifError, match=r"row 2.*response2.*missing"):
        read_human_pairs(str(path))


def test_hh_bad_rows(tmp_path):
    no_marker = {"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected": "just text"}
    differ = {"chosen": "\n\nHuman: hi\n\nAssistant: a", "rejected": "\n\nHuman: bye\n\nAssistant: b"}
    path = write_jsonl(tmp_path / "hh.jsonl", [hh_row(0), no_marker])
    with pytest.raises(RlaifError, match=r"row 2.*rejected.*Assistant"):
        read_human_pairs(path)
    with pytest.raises(RlaifError, match=r"row 2.*rejected"):
        read_human_pairs(write_jsonl(tmp_path / "d.jsonl", [hh_row(0), differ]))
    with pytest.raises(RlaifError, match=r"row 3.*JSON"):
        read_human_pairs(write_jsonl(tmp_path / "j.jsonl", [hh_row(0), hh_row(1), "{not json"]))


def test_skip_bad_rows_counts_and_limit(tmp_path):
    rows = [hh_row(0), "{oops", hh_row(2), {"chosen": "no marker", "rejected": "x"}, hh_row(4), hh_row(5)]
    path = write_jsonl(tmp_path / "hh.jsonl", rows)
    pairs, skipped = read_human_pairs(path, skip_bad_rows=True)
    assert skipped == 2
    assert [p.pair_id for p in pairs] == ["hh-00000", "hh-00002", "hh-00004", "hh-00005"]
    pairs, _ = read_human_pairs(path, skip_bad_rows=True, limit=2)
    assert [p.pair_id for p in pairs] == ["hh-00000", "hh-00002"]


def test_file_level_errors(tmp_path):
    with pytest.raises(RlaifError, match="not found"):
        read_human_pairs(str(tmp_path / "missing.jsonl"))
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(RlaifError, match="unknown file type"):
        read_human_pairs(str(tmp_path / "x.txt"))
    path = write_jsonl(tmp_path / "g.jsonl", [{"prompt": "p", "response_a": "a", "label": "a"}])
    with pytest.raises(RlaifError, match="response_b"):
        read_human_pairs(path)
    (tmp_path / "plain_dir").mkdir()
    with pytest.raises(RlaifError, match="not a saved dataset"):
        read_human_pairs(str(tmp_path / "plain_dir"))
    shutil.copy(FIXTURE, tmp_path / "copy.jsonl")
    assert len(read_human_pairs(str(tmp_path / "copy.jsonl"), limit=0)[0]) == 0


def test_autoj_format(tmp_path):
    """Auto-J's pairwise test set: label 0 means response 1 is better, 1 response 2, 2 a tie; an empty
    response is a real one."""
    rows = [{"scenario": "x", "label": 0, "prompt": "p1", "response 1": "good", "response 2": ""},
            {"scenario": "x", "label": 1, "prompt": "p2", "response 1": "r1", "response 2": "r2"},
            {"scenario": "x", "label": 2, "prompt": "p3", "response 1": "r1", "response 2": "r2"}]
    pairs, _ = read_human_pairs(write_jsonl(tmp_path / "testdata_pairwise.jsonl", rows))
    assert [(p.prompt, p.response_a, p.response_b, p.labels) for p in pairs] == [
        ("p1", "good", "", ["a"]), ("p2", "r1", "r2", ["b"]), ("p3", "r1", "r2", ["tie"])]
    with pytest.raises(RlaifError, match=r"row 2.*label.*unknown label 3"):
        read_human_pairs(write_jsonl(tmp_path / "bad.jsonl", [rows[0], dict(rows[1], label=3)]))
