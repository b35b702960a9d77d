"""Generic file I/O for the run folder: atomic writes (temp file, fsync, rename), append-only JSONL with
throttled fsync, streamed reads, and the repair of a torn last line.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterable, Iterator


@contextmanager
def atomic_file(path: Path, skip_empty: bool = False) -> Iterator[IO[str]]:
    """A text file (UTF-8) that takes the place of `path` only once it is whole: a temporary file beside `path`,
    flushed, fsynced and renamed over it when the block ends, removed when the block raises. skip_empty: when
    nothing was written, `path` is left as it was (and the temporary file removed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
            empty = f.tell() == 0
        if skip_empty and empty:
            Path(tmp).unlink()
            return
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be read by others too
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, fsync, then rename over it."""
    with atomic_file(path) as f:
        f.write(text)


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def jsonl_text(records: Iterable[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def read_jsonl(path: Path, repair: bool = False) -> list[dict]:
    """Read complete lines. A last line cut short by a crash is ignored (and cut off with repair=True)."""
    if repair:
        read_jsonl_tail_repair(path)
    return list(iter_jsonl(path))


def json_lines(lines: Iterable[str]) -> Iterator[tuple[int, object]]:
    """(1-based line number, value) of each non-blank line: the line parsed as JSON, or the json.JSONDecodeError
    when it is not JSON, for the caller to name the file and line in its own error (or to keep going). For
    files that people write or edit, where an error must say which line."""
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as e:
                yield number, e


SYNC_EVERY_S = 1.0  # fsync at most this often per file: a killed process loses nothing it wrote, a power cut
_synced = {}        # at most about this much. An fsync took 12 ms here, more than a batch of fake judgments.


def sync_throttled(f, path: Path, force: bool = False) -> None:
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
        sync_throttled(f, path)


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
    """Move a finished folder into place; the old one goes only once the new one is complete (and a `.NAME.old`
    left by a crash between the two renames goes first)."""
    old = dst.with_name(f".{dst.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if dst.exists():
        os.replace(dst, old)
    os.replace(src, dst)
    shutil.rmtree(old, ignore_errors=True)


def iter_jsonl(path: Path) -> Iterator[dict]:
    """Stream the complete lines of a JSONL file (a last line cut short by a crash is skipped)."""
    for _, line in lines_at(path):
        yield json.loads(line)


def lines_at(path: Path, start: int = 0) -> Iterator[tuple[int, bytes]]:
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
    n = 0
    with atomic_file(path) as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
            n += 1
    return n


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
