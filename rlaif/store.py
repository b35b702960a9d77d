"""The run folder: paths, atomic writes, append-only JSONL with resume, stage markers."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import sqlite3
import tempfile
import time
from array import array
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, fsync, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be read by others too
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def jsonl_text(records: Iterable[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def read_jsonl(path: Path, repair: bool = False) -> list[dict]:
    """Read complete lines. A last line cut short by a crash is ignored (and cut off with repair=True)."""
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data) and repair:
        with open(path, "r+b") as f:
            f.truncate(end)
    return [json.loads(line) for line in data[:end].decode("utf-8").splitlines() if line.strip()]


SYNC_EVERY_S = 1.0  # fsync at most this often per file: a killed process loses nothing it wrote, a power cut
_synced = {}        # at most about this much. An fsync took 12 ms here, more than a batch of fake judgments.


def _sync(f, path: Path, force: bool = False) -> None:
    """fsync `f` when forced or when SYNC_EVERY_S has passed since the last fsync of `path`."""
    now = time.monotonic()
    key = os.path.abspath(path)
    if force or now - _synced.get(key, 0.0) >= SYNC_EVERY_S:
        os.fsync(f.fileno())
        _synced[key] = now


def append_jsonl(path: Path, records: list[dict]) -> None:
    """Append whole records in one write (a kill loses at most this batch), fsynced at most every SYNC_EVERY_S."""
    if not records:
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(jsonl_text(records))
        f.flush()
        _sync(f, path)


def save_dataset_atomic(dataset, path: Path) -> None:
    """datasets.save_to_disk into a temporary folder, then swap it in."""
    path = Path(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        dataset.save_to_disk(str(tmp))
        replace_dir(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_dir(src: Path, dst: Path) -> None:
    """Move a finished folder into place; the old one goes only once the new one is complete."""
    old = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def default_run_dir(name: str) -> Path:
    """runs/<name>-<UTC timestamp>: where a command writes when no --output-dir is given."""
    return Path("runs") / f"{name}-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}"


class Run:
    """Paths inside one run folder."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.config = self.root / "config.yaml"
        self.constitution = self.root / "constitution.yaml"
        self.pairs = self.root / "pairs.jsonl"
        self.judgment_cache = self.root / "cache" / "judgments.jsonl"
        self.judgments = self.root / "judgments.jsonl"
        self.preferences = self.root / "preferences"
        self.preferences_jsonl = self.root / "preferences.jsonl"
        self.reward_model = self.root / "reward_model"
        self.policy = self.root / "policy"
        self.summary = self.root / "summary.json"
        self.report = self.root / "report.html"
        self.stages = self.root / "stages"

    def marker(self, stage: str) -> Path:
        return self.stages / f"{stage}.done"

    def mark_done(self, stage: str, info: dict) -> None:
        atomic_write_json(self.marker(stage), info)

    def update_summary(self, key: str, value) -> dict:
        summary = json.loads(self.summary.read_text()) if self.summary.exists() else {}
        summary[key] = value
        atomic_write_json(self.summary, summary)
        return summary


def iter_jsonl(path: Path) -> Iterator[dict]:
    """Stream the complete lines of a JSONL file (a last line cut short by a crash is skipped)."""
    for _, line in _lines(path):
        yield json.loads(line)


def _lines(path: Path, start: int = 0) -> Iterator[tuple[int, bytes]]:
    """(offset, line) for each complete non-blank line from byte `start` on."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, "rb") as f:
        f.seek(start)
        offset = start
        for line in f:
            if not line.endswith(b"\n"):
                return
            if line.strip():
                yield offset, line
            offset += len(line)


def atomic_write_lines(path: Path, records: Iterable[dict]) -> int:
    """atomic_write_text for a stream of records as JSON lines, in constant memory. Returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    n = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
                n += 1
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return n


class PairsFile:
    """The pairs of pairs.jsonl as a re-iterable sequence that stays on disk: `ids` picks and orders them
    (None: every pair, in file order). Holds one file offset per pair, not the pairs."""

    def __init__(self, path: Path, ids: Iterable[str] | None = None):
        self.path = Path(path)
        self.offsets = array("q")
        if ids is None:
            self.offsets.extend(offset for offset, _ in _lines(self.path))
            return
        ids = list(ids)
        lines = _lines(self.path)
        for offset, line in lines:  # pairs.jsonl is written in prompt order: one pass, nothing kept
            if len(self.offsets) == len(ids):
                break
            if _pair_id(line) == ids[len(self.offsets)]:
                self.offsets.append(offset)
        if len(self.offsets) < len(ids):  # out of order (prompts changed between runs): look the rest up
            position = {pid: i for i, pid in enumerate(ids[len(self.offsets):], len(self.offsets))}
            found = {}
            for offset, line in _lines(self.path):
                if (i := position.get(_pair_id(line))) is not None:
                    found[i] = offset  # the last copy wins, as a dict of all pairs did
            missing = [ids[i] for i in position.values() if i not in found]
            if missing:
                raise KeyError(f"pairs.jsonl lacks pair {missing[0]}")
            self.offsets.extend(found[i] for i in sorted(found))

    def __len__(self) -> int:
        return len(self.offsets)

    def __iter__(self) -> Iterator[dict]:
        with open(self.path, "rb") as f:
            at = 0
            for offset in self.offsets:
                if at != offset:  # kept here: f.tell() per line cost more than the seek it saves
                    f.seek(offset)
                line = f.readline()
                at = offset + len(line)
                yield json.loads(line)


def _pair_id(line: bytes) -> str:
    m = _PAIR_ID.match(line)
    return json.loads(m.group(1)) if m else json.loads(line)["pair_id"]


_PAIR_ID = re.compile(rb'\{"pair_id": ("(?:[^"\\]|\\.)*")')


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
        for offset, line in _lines(self.path, start):
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
        _sync(self.file, self.path)
        rows, off = [], start
        for r, line in zip(records, lines):
            rows.append((_digest(r["key"]), off, len(line)))
            off += len(line)
        self._index(rows, off)
        self._unlock()

    def close(self) -> None:
        self.file.flush()
        _sync(self.file, self.path, force=True)
        self.commit()
        self.file.close()  # lets the lock go
        self.db.close()


def read_jsonl_tail_repair(path: Path) -> None:
    """Cut off a last line left unfinished by a crash (the rest of the file is untouched)."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, "r+b") as f:
        size = f.seek(0, os.SEEK_END)
        tail = max(0, size - 4096)  # a small block first: JudgmentCache runs this at each lock, mostly on a whole line
        while True:
            f.seek(tail)
            block = f.read(size - tail)
            cut = block.rfind(b"\n")
            if cut >= 0 or tail == 0:
                end = tail + cut + 1
                break
            tail = max(0, tail - (1 << 20))
        if end < size:
            f.truncate(end)
