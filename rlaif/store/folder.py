"""The run folder: its paths and stage markers, and pairs.jsonl read by offset (PairsFile).
"""

from __future__ import annotations

import json
import re
from array import array
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator

from rlaif.store.files import atomic_write_json, lines_at


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
        self.samples = self.root / "samples.jsonl"  # --samples-per-prompt above 2: every sample; pairs.jsonl pairs them
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


class PairsFile:
    """The pairs of pairs.jsonl as a re-iterable sequence that stays on disk: `ids` picks and orders them
    (None: every pair, in file order). Holds one file offset per pair, not the pairs."""

    def __init__(self, path: Path, ids: Iterable[str] | None = None):
        self.path = Path(path)
        self.offsets = array("q")
        if ids is None:
            self.offsets.extend(offset for offset, _ in lines_at(self.path))
            return
        ids = list(ids)
        lines = lines_at(self.path)
        for offset, line in lines:  # pairs.jsonl is written in prompt order: one pass, nothing kept
            if len(self.offsets) == len(ids):
                break
            if _pair_id(line) == ids[len(self.offsets)]:
                self.offsets.append(offset)
        if len(self.offsets) < len(ids):  # out of order (prompts changed between runs): look the rest up
            position = {pid: i for i, pid in enumerate(ids[len(self.offsets):], len(self.offsets))}
            found = {}
            for offset, line in lines_at(self.path):
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
