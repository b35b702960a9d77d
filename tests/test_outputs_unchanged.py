"""The files of a run are byte-identical to the format they had before the pipeline streamed (issue 17).

A small run through the fake engine (generate, judge, preferences) must produce exactly these bytes. The
hashes were taken from main at bed1e60 (issue 12's cache records included), before the judgment cache got an
index and the stages streamed; preferences/state.json's `_fingerprint` changed then (see below). If a change
is *meant* to alter a file, update its hash here and say why in the commit message.
"""

import hashlib

from conftest import run_cli

GOLDEN = {
    "pairs.jsonl": "57e232c9f1578b596a79c6db787ddd9012414f24ba2f262909dfa2f16048fffe",
    # Each judgment now carries its principle's `weight` in the pair's score (issue 21: scores are a pure function
    # of the judgments). Without that last key the file is byte for byte main's (318308101feab142...).
    "judgments.jsonl": "ebffa105ce1ec03535ce0694c53c9b66e5276f378afe5cad352bb8d0716adeda",
    "preferences.jsonl": "02ef62a98f269a65b35387b0f005130fe52767af2a069b9e7bbc3cada7e2e53b",
    "cache/judgments.jsonl": "014ac1d5d5bb3e0f8b3246724db807de655cd060de8d20749dafa23968272c88",
    "preferences/data-00000-of-00001.arrow": "4a1753251947d66743676fe2628517309d68f5e85ac53054efd80633b8b9dc20",
    "preferences/dataset_info.json": "9fe61aa791e3a5a9a11e7e13e0b138c795651fd2aa4b9d21ae101595622938e1",
    # One value changed on purpose: `_fingerprint`, datasets' cache id, which Dataset.from_list takes by pickling
    # the whole table in memory (main's: b7f1e711...). The stream writes a hash of the rows instead.
    "preferences/state.json": "a1a169b876bf64f2cd20cfc2079697c3735ea549d20d1e8e5e33beff80daa2c7",
}


def _digests(root) -> dict:
    return {name: hashlib.sha256((root / name).read_bytes()).hexdigest() for name in GOLDEN}


def _run(out, constitution, prompts, *extra):
    return run_cli("--constitution", constitution, "--prompts", prompts, "--output-dir", out, "--seed", 3,
                   "--stages", "generate,judge,preferences", "--batch-size", 2, *extra)


def test_run_files_match_the_golden_bytes(tmp_path, mini_constitution, prompts_file, fake_engine):
    out = tmp_path / "run"
    assert _run(out, mini_constitution, prompts_file) == 0
    assert _digests(out) == GOLDEN


def test_resumed_and_rebatched_runs_write_the_same_bytes(tmp_path, mini_constitution, prompts_file, fake_engine):
    """Judging in other batch sizes, and again over a full cache, changes no byte of any file."""
    one, other = tmp_path / "one", tmp_path / "other"
    config = tmp_path / "judge-batch.yaml"
    config.write_text("judge:\n  batch_size: 3\n")
    assert _run(one, mini_constitution, prompts_file) == 0
    assert _run(other, mini_constitution, prompts_file, "--config", config) == 0
    assert _digests(one) == _digests(other)
    before = _digests(one)
    calls = fake_engine.calls["label_logprobs"]
    assert _run(one, mini_constitution, prompts_file) == 0  # resume over a full cache: nothing re-judged
    assert fake_engine.calls["label_logprobs"] == calls
    assert _digests(one) == before


def test_streamed_dataset_matches_from_list_past_one_batch(tmp_path):
    """Past one arrow batch (1,000 rows), with empty and non-empty votes: the streamed preferences/ holds the
    same record batches, schema and dataset_info.json as Dataset.from_list(rows).save_to_disk, and loads back.
    (Up to 1,000 rows the data file is byte-identical, as the golden run shows; past that, from_list writes
    slices of one big array, whose buffers arrow pads to 64 bytes with the next rows' bytes.)"""
    import json

    import pyarrow as pa
    from datasets import Dataset, load_from_disk

    from rlaif.stages import preferences

    rows = [{"prompt": [{"role": "user", "content": f"q{i} \u00e9"}], "chosen": [{"role": "assistant", "content": "c" * (i % 7)}],
             "rejected": [{"role": "assistant", "content": f"r{i}"}], "margin": i / 5000, "score": 0.5 + i / 5000,
             "pair_id": f"{i:05d}", "votes": [{"principle_id": "p", "a": i % 3, "b": 1}] if i % 4 else []}
            for i in range(2500)]
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "expected"))
    assert preferences.write(lambda in_memory: iter(rows), tmp_path / "preferences", tmp_path / "p.jsonl") == 2500
    name = "data-00000-of-00001.arrow"
    got, want = (pa.ipc.open_stream(str(tmp_path / d / name)) for d in ("preferences", "expected"))
    assert got.schema.equals(want.schema, check_metadata=True)
    got, want = list(got), list(want)
    assert [b.num_rows for b in got] == [b.num_rows for b in want] == [1000, 1000, 500]
    assert all(g.equals(w) for g, w in zip(got, want))
    info = "dataset_info.json"
    assert (tmp_path / "preferences" / info).read_bytes() == (tmp_path / "expected" / info).read_bytes()
    assert load_from_disk(str(tmp_path / "preferences"))[2499] == rows[2499]
    assert (tmp_path / "p.jsonl").read_text() == "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    assert not list(tmp_path.glob(".*"))  # no temporary folder left behind
