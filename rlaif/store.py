"""The run folder: paths, atomic writes, append-only JSONL with resume, stage markers."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable


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


def append_jsonl(path: Path, records: list[dict]) -> None:
    """Append whole records in one write, then flush to disk: a crash loses at most this batch."""
    if not records:
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(jsonl_text(records))
        f.flush()
        os.fsync(f.fileno())


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
