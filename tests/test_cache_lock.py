"""Two processes on one judgment cache (issue 21, point 6): every append lands where the index says, and opening
the cache never cuts another process's write that is still in progress."""

import itertools
import json
import multiprocessing
import time
from functools import partial

import pytest

from rlaif.judging.cache import JudgmentCache

RECORDS, BATCH = 5000, 10
spawn = multiprocessing.get_context("spawn")


def _record(writer: str, i: int) -> dict:
    return {"key": f"{writer}{i}", "writer": writer, "value": "é" * (i % 37)}  # lines of many lengths


class _File:
    """A cache's file whose write is `write(file, data)` instead: to stretch a write out in time."""

    def __init__(self, real, write):
        self.real, self.write = real, partial(write, real)

    def __getattr__(self, name):
        return getattr(self.real, name)


def _pause_then_write(f, data):
    time.sleep(0.0005)  # a write that takes a moment (a big batch, a busy machine): the other process runs meanwhile
    return f.write(data)


def _append(path, writer, commit_s, barrier):
    JudgmentCache.COMMIT_S = commit_s  # commit (and so let the other process in) this often
    cache = JudgmentCache(path)
    cache.file = _File(cache.file, _pause_then_write)
    barrier.wait()  # both open: now append at once, in many small batches
    for start in range(0, RECORDS, BATCH):
        cache.add([_record(writer, i) for i in range(start, start + BATCH)])
        time.sleep(0.0005)  # the other process gets the file in between
    cache.close()


@pytest.mark.parametrize("commit_s", [0.0, 0.01])  # a commit after every batch; a few batches per commit
def test_two_processes_appending_at_once_find_every_record(tmp_path, commit_s):
    path = tmp_path / "cache" / "judgments.jsonl"
    barrier = spawn.Barrier(2)
    procs = [spawn.Process(target=_append, args=(path, w, commit_s, barrier)) for w in "ab"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0]
    writers = [json.loads(line)["writer"] for line in path.read_bytes().splitlines()]  # every line parses
    turns = 1 + sum(x != y for x, y in itertools.pairwise(writers))
    print(f"{len(writers)} lines, {turns} runs of one writer's records")
    assert len(writers) == 2 * RECORDS and turns > 2  # the two did interleave
    cache = JudgmentCache(path)
    cache._rebuild = lambda: pytest.fail("the index points at other bytes than the record's")
    want = {r["key"]: r for w in "ab" for r in (_record(w, i) for i in range(RECORDS))}
    assert cache.get_many(want) == want and len(cache) == 2 * RECORDS
    cache.close()


def _halfway_then_write(half_written, opening, f, data):
    f.write(data[:len(data) // 2])
    f.flush()
    half_written.set()
    opening.wait(60)
    time.sleep(0.5)  # the other process opens the cache meanwhile
    return f.write(data[len(data) // 2:])


def _slow_writer(path, half_written, opening):
    cache = JudgmentCache(path)
    cache.add([{"key": "first", "value": 1}])
    cache.file = _File(cache.file, partial(_halfway_then_write, half_written, opening))
    cache.add([{"key": "second", "value": "x" * 1000}])
    cache.close()


def test_opening_the_cache_does_not_cut_another_process_write_in_progress(tmp_path):
    path = tmp_path / "judgments.jsonl"
    half_written, opening = spawn.Event(), spawn.Event()
    proc = spawn.Process(target=_slow_writer, args=(path, half_written, opening))
    proc.start()
    try:
        assert half_written.wait(120)
        opening.set()
        JudgmentCache(path).close()  # cut the half-written line, before the fix
    finally:
        proc.join(timeout=120)
    assert proc.exitcode == 0
    assert [json.loads(line)["key"] for line in path.read_bytes().splitlines()] == ["first", "second"]
    cache = JudgmentCache(path)
    assert cache.get_many(["first", "second"]) == {"first": {"key": "first", "value": 1},
                                                   "second": {"key": "second", "value": "x" * 1000}}
    cache.close()


def test_the_next_append_indexes_and_repairs_what_a_killed_writer_left(tmp_path, monkeypatch):
    """A writer killed mid-way leaves lines it never indexed and a cut line; another open cache, appending next,
    indexes the first and cuts the second before its own write (no line of two halves)."""
    monkeypatch.setattr(JudgmentCache, "COMMIT_S", 0.0)  # each add commits and lets the lock go
    path = tmp_path / "judgments.jsonl"
    cache = JudgmentCache(path)
    cache.add([{"key": "mine0", "value": 0}])
    with open(path, "ab") as f:  # what the killed process wrote meanwhile
        f.write(b'{"key": "late", "value": 1}\n{"key": "cut", "val')
    cache.add([{"key": "mine1", "value": 2}])
    assert path.read_bytes().endswith(b'{"key": "late", "value": 1}\n{"key": "mine1", "value": 2}\n')
    assert cache.get_many(["late", "mine1", "cut"]) == {"late": {"key": "late", "value": 1},
                                                       "mine1": {"key": "mine1", "value": 2}}
    cache.close()
    assert len(JudgmentCache(path)) == 3
