"""Flat memory at any size: the judgment cache's index on disk, pairs read from disk, streamed preferences."""

from collections import Counter

import pytest

from rlaif.judging.constitution import load
from rlaif.engines.fake import FakeEngine
from rlaif.stages.judge import iter_judge, run_judge
from rlaif.judging.scores import pair_scores
from rlaif.stages.preferences import build, iter_rows
from rlaif.judging.cache import JudgmentCache
from rlaif.store.folder import PairsFile
from rlaif.store.files import append_jsonl, jsonl_text


def _records(n, tag="x"):
    return [{"key": f"k{i}", "value": f"{tag}{i}", "text": "é" * (i % 5)} for i in range(n)]


def test_cache_finds_records_after_reopen_and_keeps_the_last_of_a_key(tmp_path):
    path = tmp_path / "cache" / "judgments.jsonl"
    cache = JudgmentCache(path)
    cache.add(_records(3))
    cache.add([{"key": "k1", "value": "newer"}])
    assert cache.get("k1") == {"key": "k1", "value": "newer"} and "k2" in cache and "k9" not in cache
    cache.close()
    cache = JudgmentCache(path)
    assert cache.get_many(["k0", "k1", "k9"]) == {"k0": _records(1)[0], "k1": {"key": "k1", "value": "newer"}}
    assert len(cache) == 3
    cache.close()


def test_cache_survives_a_crash_between_file_and_index_and_a_cut_line(tmp_path):
    path = tmp_path / "judgments.jsonl"
    cache = JudgmentCache(path)
    cache.add(_records(2))
    cache.close()
    append_jsonl(path, [{"key": "late", "value": 1}])  # written to the file, never indexed (killed in between)
    with open(path, "ab") as f:
        f.write(b'{"key": "cut", "val')  # a line cut short by kill -9
    cache = JudgmentCache(path)
    assert cache.get("late") == {"key": "late", "value": 1} and "cut" not in cache
    assert path.read_bytes().endswith(b'"value": 1}\n')
    cache.add([{"key": "after", "value": 2}])
    assert cache.get("after") == {"key": "after", "value": 2} and len(cache) == 4
    cache.close()


def test_cache_index_is_rebuilt_when_missing_damaged_or_stale(tmp_path):
    path = tmp_path / "judgments.jsonl"
    cache = JudgmentCache(path)
    cache.add(_records(4))
    cache.close()
    index = cache.index
    index.write_bytes(b"not a database" * 100)  # damaged
    for suffix in ("-wal", "-shm"):
        index.with_name(index.name + suffix).unlink(missing_ok=True)
    assert JudgmentCache(path).get("k3") == _records(4)[3]
    path.write_text(jsonl_text(_records(6, tag="y")))  # the file replaced by another (longer) one
    cache = JudgmentCache(path)
    assert cache.get("k3") == _records(6, tag="y")[3] and cache.get("k5") == _records(6, tag="y")[5]
    cache.close()
    path.write_text(jsonl_text(_records(2, tag="z")))  # replaced by a shorter one
    cache = JudgmentCache(path)
    assert cache.get("k1") == _records(2, tag="z")[1] and "k3" not in cache
    cache.close()


def test_pairs_file_orders_by_ids_even_when_the_file_does_not(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(jsonl_text([{"pair_id": p, "n": i} for i, p in enumerate(["a", "b", "old-c", "d", "c", "e"])]))
    assert [p["pair_id"] for p in PairsFile(path)] == ["a", "b", "old-c", "d", "c", "e"]
    pairs = PairsFile(path, ["a", "b", "c", "d"])
    assert len(pairs) == 4 and [p["pair_id"] for p in pairs] == ["a", "b", "c", "d"]
    assert [p["pair_id"] for p in pairs] == ["a", "b", "c", "d"]  # re-iterable
    with pytest.raises(KeyError):
        PairsFile(path, ["a", "zz"])


def _pairs(n):
    return [{"pair_id": f"p{i}", "prompt": f"question {i % 7}", "response_a": f"a{i % 5}", "response_b": f"b{i % 3}"}
            for i in range(n)]


def test_iter_judge_judges_each_text_once_across_batches_and_windows(tmp_path, mini_constitution, monkeypatch):
    monkeypatch.setattr("rlaif.stages.judge.WINDOW", 7)  # force partial batches while waiting on cached stretches
    c = load(str(mini_constitution))
    pairs = _pairs(40)  # 105 distinct (prompt, a, b): many repeated texts
    engine = FakeEngine()
    expected, counts = run_judge(FakeEngine(), pairs, c, seed=0, mode="logprob", settings={}, progress=False)
    cache = tmp_path / "cache.jsonl"
    half, _ = run_judge(engine, pairs[:20], c, seed=0, mode="logprob", settings={}, progress=False, cache_path=cache)
    got_counts = {}
    got = list(iter_judge(engine, pairs, c, seed=0, mode="logprob", settings={}, progress=False, cache_path=cache,
                          batch_size=4, counts=got_counts))
    assert got == expected
    distinct = len({r["key"] for r in expected})
    assert engine.calls["label_logprobs"] == distinct == counts["judged"]
    assert got_counts["judgments"] == 240 and got_counts["judged"] == distinct - len({r["key"] for r in half})


def test_streamed_preferences_equal_build_also_when_judgments_are_out_of_order(mini_constitution):
    c = load(str(mini_constitution))
    pairs = _pairs(12)
    judgments, _ = run_judge(FakeEngine(), pairs, c, seed=0, mode="logprob", settings={}, progress=False)
    rows, counts = build(pairs, pair_scores(pairs, judgments, c), judgments, 0.01)
    for order in (judgments, judgments[6:] + judgments[:6]):
        for in_memory in (False, True):
            got_counts = Counter()
            try:
                got = list(iter_rows(pairs, lambda: iter(order), c, 0.01, got_counts, in_memory))
            except Exception as e:
                assert type(e).__name__ == "Misaligned" and order is not judgments and not in_memory
                continue
            assert got == rows and {k: got_counts.get(k, 0) for k in counts} == counts


def test_preferences_write_falls_back_when_judgments_are_out_of_order(tmp_path, mini_constitution):
    from rlaif.stages import preferences

    c = load(str(mini_constitution))
    pairs = _pairs(12)
    judgments, _ = run_judge(FakeEngine(), pairs, c, seed=0, mode="logprob", settings={}, progress=False)
    rows, _ = build(pairs, pair_scores(pairs, judgments, c), judgments, 0.0)
    counts = Counter()

    def make(in_memory):
        counts.clear()
        return iter_rows(pairs, lambda: iter(judgments[6:] + judgments[:6]), c, 0.0, counts, in_memory)

    assert preferences.write(make, tmp_path / "preferences", tmp_path / "p.jsonl") == len(rows) == counts["kept"]
    assert (tmp_path / "p.jsonl").read_text() == jsonl_text(rows)


def test_remembered_keys_follow_template_edits_and_lost_records(tmp_path, mini_constitution):
    """A resume finds keys without rendering, yet a changed template, or a cache file that lost its records,
    still leads to rendering and judging again."""
    import shutil

    from rlaif.judging.templates import PROMPTS_DIR

    for name in ("judge_logprob.j2", "_judge_base.j2"):
        shutil.copy(PROMPTS_DIR / name, mini_constitution.parent / name)  # templates beside the constitution win
    c = load(str(mini_constitution))
    pairs, cache, engine = _pairs(6), tmp_path / "cache" / "judgments.jsonl", FakeEngine()
    first, _ = run_judge(engine, pairs, c, seed=0, mode="logprob", settings={}, progress=False, cache_path=cache)
    again, counts = run_judge(engine, pairs, c, seed=0, mode="logprob", settings={}, progress=False, cache_path=cache)
    assert again == first and counts["judged"] == 0 and engine.calls["label_logprobs"] == 36
    template = mini_constitution.parent / "judge_logprob.j2"
    template.write_text(template.read_text().replace("single letter", "single capital letter"))
    edited, counts = run_judge(engine, pairs, c, seed=0, mode="logprob", settings={}, progress=False, cache_path=cache)
    assert counts["judged"] == 36 and {r["key"] for r in edited}.isdisjoint(r["key"] for r in first)
    cache.write_text("")  # records gone, the index (and what it remembers) still there
    lost, counts = run_judge(engine, pairs, c, seed=0, mode="logprob", settings={}, progress=False, cache_path=cache)
    assert counts["judged"] == 36 and lost == edited


def test_preferences_are_written_in_shards_that_load_back_in_order(tmp_path, monkeypatch):
    from datasets import load_from_disk

    from rlaif.stages import preferences

    monkeypatch.setattr(preferences, "MAX_SHARD_BYTES", 20_000)
    rows = [{"prompt": [{"role": "user", "content": f"q{i}"}], "chosen": [{"role": "assistant", "content": "c" * 50}],
             "rejected": [{"role": "assistant", "content": "r"}], "margin": 0.1, "score": 0.6, "pair_id": str(i),
             "votes": []} for i in range(600)]
    assert preferences.write(lambda in_memory: iter(rows), tmp_path / "preferences", tmp_path / "p.jsonl") == 600
    assert len(list((tmp_path / "preferences").glob("data-*-of-*.arrow"))) > 1
    assert load_from_disk(str(tmp_path / "preferences"))["pair_id"] == [str(i) for i in range(600)]


def test_two_processes_append_to_one_cache_and_both_are_found(tmp_path):
    """Index rows are committed in groups; a second process on the same cache waits for the lock, never fails."""
    import subprocess
    import sys
    import textwrap

    path = tmp_path / "judgments.jsonl"
    other = textwrap.dedent(f"""
        import time
        from rlaif.judging.cache import JudgmentCache
        cache = JudgmentCache({str(path)!r})
        for i in range(8):
            cache.add([{{"key": f"other{{i}}", "value": i}}])
            time.sleep(0.3)
        cache.close()
    """)
    proc = subprocess.Popen([sys.executable, "-c", other])
    try:
        import time

        cache = JudgmentCache(path)
        for i in range(8):  # both write at once for about two seconds
            cache.add([{"key": f"mine{i}", "value": i}])
            time.sleep(0.3)
        cache.close()
    finally:
        assert proc.wait(timeout=120) == 0
    cache = JudgmentCache(path)
    assert len(cache) == 16 and cache.get("other7") == {"key": "other7", "value": 7} and cache.get("mine0")["value"] == 0
    cache.close()
