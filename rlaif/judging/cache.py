"""The judgment cache: cache/judgments.jsonl, append-only, with a derived SQLite index (key -> offset).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Iterable, Iterator

from rlaif.store.files import (
    lines_at,
    read_jsonl_tail_repair,
    sync_throttled,
)


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class JudgmentCache:
    """Records by `key`, looked up without holding them in memory.

    The append-only JSONL file stays the source of truth (each batch one write and an fsync, as
    append_jsonl). Beside it, `<name>.index.sqlite` maps key -> (offset, length) in that file; it is
    derived data: brought up to date from the file's unindexed tail on open (so a crash between the two
    writes loses nothing), rebuilt when missing, unreadable or out of step with the file. A key seen twice
    points at its last record. Only the `key` field is read. The index also remembers keys by the caller's
    hash of their inputs (records_of/remember). Keys and inputs are kept as 16-byte digests; a record read
    through the index is checked against its full key.

    Processes may share a cache. Locking rule: the file and the index change only under an exclusive flock on
    the JSONL file, taken at a process's first change and kept until its index rows are committed (also across
    the batched commits). So SQLite's write lock is only taken inside it (no deadlock), index commits follow the
    file's order, and an append's offset is the file's true end. Whoever takes the lock cuts an unfinished last
    line and, before appending, indexes lines appended but never indexed: only a killed writer leaves either.
    Reading needs no lock."""

    SCHEMA = 2
    CACHE_KIB = 32 * 1024  # SQLite's page cache for the index (its default, 2 MiB, made inserts at 1M keys slow)

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.index = self.path.with_name(self.path.name + ".index.sqlite")
        self.file, self.locked = open(self.path, "a+b"), False
        self._lock()
        try:
            self._open()
        except sqlite3.DatabaseError:  # a damaged index: it is only derived data
            self._drop()
            self._open()
        self._unlock()

    def _lock(self) -> None:
        """Take the lock unless held (waiting for another process's commit), then repair the file's end."""
        if not self.locked:
            fcntl.flock(self.file.fileno(), fcntl.LOCK_EX)
            self.locked = True
            read_jsonl_tail_repair(self.path)

    def _unlock(self) -> None:
        """Let the lock go, unless index rows are still uncommitted."""
        if self.locked and not self.db.in_transaction:
            fcntl.flock(self.file.fileno(), fcntl.LOCK_UN)
            self.locked = False

    def _open(self) -> None:
        self.db = sqlite3.connect(self.index, timeout=60)  # another process's open batch: wait, do not fail
        self.pending, self.head, self.committed = 0, None, time.monotonic()
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(f"PRAGMA cache_size=-{self.CACHE_KIB}")
        self.db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value)")
        if self._meta("schema", None) != self.SCHEMA:  # an index written by an older version: rebuilt
            self.db.executescript("DROP TABLE IF EXISTS idx; DROP TABLE IF EXISTS memo; DELETE FROM meta;")
        # 16-byte digests (_digest), not 64-digit hex: a smaller index, more of it in the page cache.
        self.db.execute("CREATE TABLE IF NOT EXISTS idx (key BLOB PRIMARY KEY, off INTEGER, len INTEGER) WITHOUT ROWID")
        self.db.execute("CREATE TABLE IF NOT EXISTS memo (inputs BLOB PRIMARY KEY, key BLOB) WITHOUT ROWID")
        self.db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (self.SCHEMA,))
        indexed, head = self._meta("bytes", 0), self._meta("head", "")
        size = self.path.stat().st_size if self.path.exists() else 0
        if size < indexed or head != self._head(indexed):  # the file was replaced or cut: start over
            self.db.execute("DELETE FROM idx")
            indexed = 0
        self._scan(indexed)
        self.commit()

    def _drop(self) -> None:
        try:
            self.db.close()
        except Exception:
            pass
        for suffix in ("", "-wal", "-shm"):
            Path(str(self.index) + suffix).unlink(missing_ok=True)

    def _meta(self, name: str, default):
        row = self.db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return row[0] if row else default

    def _head(self, upto: int) -> str:
        """A fingerprint of the file's first bytes, so a replaced file is not read through a stale index."""
        if not upto:
            return ""
        with open(self.path, "rb") as f:
            return f.read(min(upto, 4096)).hex()[:64] + f":{min(upto, 4096)}"

    def _scan(self, start: int) -> None:
        rows, end = [], start
        for offset, line in lines_at(self.path, start):
            rows.append((_digest(json.loads(line)["key"]), offset, len(line)))
            end = offset + len(line)
            if len(rows) >= 50_000:
                self._index(rows, end)
                rows = []
        self._index(rows, end if rows else max(end, start))

    def _index(self, rows: list, end: int) -> None:
        """Index rows in the open transaction (this connection reads them at once); commit every COMMIT_ROWS.
        A crash before a commit loses only index rows, and with them the offset they reach: the next open
        indexes the file's tail again."""
        self.db.executemany("INSERT OR REPLACE INTO idx VALUES (?, ?, ?)", rows)
        self.db.execute("INSERT OR REPLACE INTO meta VALUES ('bytes', ?)", (end,))
        head = self.head or self._head(end)
        self.head = head if end >= 4096 else None  # the first 4 KiB do not change once written
        self.db.execute("INSERT OR REPLACE INTO meta VALUES ('head', ?)", (head,))
        self.pending += len(rows)
        if self.pending >= self.COMMIT_ROWS or time.monotonic() - self.committed >= self.COMMIT_S:
            self.commit()

    # A commit per batch of judgments cost more than judging them through a fast engine; a commit at least every
    # second keeps the write lock short for another process on the same index (which waits up to 60 s for it).
    COMMIT_ROWS, COMMIT_S = 20_000, 1.0

    def commit(self) -> None:
        self.db.commit()
        self.pending, self.committed = 0, time.monotonic()

    def get_many(self, keys: Iterable[str]) -> dict:
        """key -> record for the keys present."""
        keys = {_digest(k): k for k in keys}
        found = {}
        for digest, _, record in self._records("SELECT key, key, off, len FROM idx WHERE key IN ({})", list(keys)):
            if record.get("key") != keys[digest]:  # the index is out of step with the file: rebuild, look again
                self._rebuild()
                return self.get_many(keys.values())
            found[keys[digest]] = record
        return found

    def _records(self, query: str, digests: list) -> Iterator[tuple[bytes, bytes, dict]]:
        """(looked-up digest, key digest, record) for each row of `query` (those four columns, `{}` for the
        placeholders), 500 digests a query, each query's records read in file order."""
        for start in range(0, len(digests), 500):
            chunk = digests[start:start + 500]
            rows = self.db.execute(query.format(",".join("?" * len(chunk))), chunk)
            for digest, key, off, n in sorted(rows, key=lambda row: row[2]):
                yield digest, key, self._read(off, n)

    remembers = True  # records_of/remember: a caller's own hash of a record's inputs -> its key (lets a resumed
    # judge skip rendering prompts it has judged before; a remembered key whose record is gone is just a miss)

    def records_of(self, inputs: list[str]) -> dict:
        """inputs -> record, for the inputs remembered (remember) whose record the file holds."""
        by_digest, found = {_digest(h): h for h in inputs}, {}
        query = ("SELECT memo.inputs, idx.key, idx.off, idx.len FROM memo JOIN idx ON idx.key = memo.key "
                 "WHERE memo.inputs IN ({})")
        for digest, key, record in self._records(query, list(by_digest)):
            if _digest(record.get("key", "")) != key:  # the index is out of step with the file
                self._rebuild()
                return self.records_of(inputs)
            found[by_digest[digest]] = record
        return found

    def remember(self, pairs: list[tuple[str, str]]) -> None:
        """Remember each key by the caller's hash of its inputs (committed with the index rows)."""
        if pairs:
            self._lock()
            self.db.executemany("INSERT OR REPLACE INTO memo VALUES (?, ?)", [(_digest(h), _digest(k)) for h, k in pairs])
            self.pending += len(pairs)

    def _read(self, off: int, n: int) -> dict:
        self.file.seek(off)
        return json.loads(self.file.read(n).decode("utf-8"))

    def _rebuild(self) -> None:
        self._lock()
        self.db.execute("DELETE FROM idx")
        self._scan(0)

    def get(self, key: str) -> dict | None:
        return self.get_many([key]).get(key)

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM idx").fetchone()[0]

    def add(self, records: list[dict]) -> None:
        """Append the records in one write (as append_jsonl), then index them: the file always leads."""
        if not records:
            return
        lines = [(json.dumps(r, ensure_ascii=False) + "\n").encode("utf-8") for r in records]
        self._lock()
        start = self.file.seek(0, os.SEEK_END)  # under the lock: where this write lands
        if (indexed := self._meta("bytes", 0)) < start:  # lines of a writer killed before it indexed them
            self._scan(indexed)
        self.file.write(b"".join(lines))
        self.file.flush()
        sync_throttled(self.file, self.path)
        rows, off = [], start
        for r, line in zip(records, lines):
            rows.append((_digest(r["key"]), off, len(line)))
            off += len(line)
        self._index(rows, off)
        self._unlock()

    def close(self) -> None:
        self.file.flush()
        sync_throttled(self.file, self.path, force=True)
        self.commit()
        self.file.close()  # lets the lock go
        self.db.close()
