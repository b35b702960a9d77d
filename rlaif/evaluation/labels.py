"""Human labels of a run's pairs: which pairs to show, in which orientation, and RUN_DIR/human_labels.jsonl.

The file is append-only. A label row is self-contained:
  {"pair_id", "prompt", "response_a", "response_b", "label": "a"|"b"|"tie", "shown": "ab"|"ba", "labeller", "time"}
`label` is relative to response_a/response_b, never to the screen; `shown` "ba" means response_b was on the left.
Undo appends a retraction, {"pair_id", "labeller", "retract": true, "time"}, which cancels that labeller's
latest label of that pair still in force: after a relabel, the label before it is in force again. Replaying
the file in order gives each labeller's current labels.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from rlaif.errors import RlaifError
from rlaif.seeded import coin, digest
from rlaif.store.files import json_lines, read_jsonl_tail_repair

FILE_NAME = "human_labels.jsonl"
LABELS = ("a", "b", "tie")
TEXT_FIELDS = ("pair_id", "prompt", "response_a", "response_b", "labeller")


def sample_pairs(pairs: list[dict], n: int, seed: int) -> list[dict]:
    """n pairs ranked by sha256(f"{seed}:{pair_id}:label"): the same pairs in the same order every time,
    and a run that grows keeps most of its earlier sample."""
    return sorted(pairs, key=lambda p: digest(seed, p["pair_id"], "label"))[:n]


def shown_order(seed: int, pair_id: str) -> str:
    """Per-pair seeded coin: "ab" puts response_a on the left, "ba" puts response_b there."""
    return "ab" if coin(seed, pair_id, "shown") else "ba"


def to_label(choice: str, shown: str) -> str:
    """A screen choice (left/right/tie) as a label relative to response_a/response_b."""
    if choice == "tie":
        return "tie"
    left = "a" if shown == "ab" else "b"
    return left if choice == "left" else ("b" if left == "a" else "a")


def to_screen(label: str | None, shown: str) -> str | None:
    """A label or judge verdict (a/b/tie, None when the judge gave none) as left/right/tie."""
    if label in (None, "tie"):
        return label
    return "left" if (label == "a") == (shown == "ab") else "right"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ---------------------------------------------------------------- the file

def read_rows(path: Path) -> list[tuple[int, dict]]:
    """(1-based line, row) of every complete line. A last line cut short by a crash is ignored."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        data = path.read_bytes()
        text = data[:data.rfind(b"\n") + 1].decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise RlaifError(f"cannot read: {e}", str(path), "check the file is UTF-8 JSON lines") from None
    rows = []
    for number, row in json_lines(text.split("\n")):  # not splitlines(): rows hold U+2028 and the like raw
        if isinstance(row, json.JSONDecodeError):
            raise RlaifError(f"unparseable JSON: {row.msg}", f"{path}:{number}", "fix or remove the line")
        if not isinstance(row, dict):
            raise RlaifError("not a JSON object", f"{path}:{number}", "fix or remove the line")
        rows.append((number, row))
    return rows


def check_row(row: dict) -> str | None:
    """Why a row is not a valid label or retraction row, or None when it is."""
    if row.get("retract") is True:
        bad = [k for k in ("pair_id", "labeller") if not isinstance(row.get(k), str) or not row[k]]
        return f"retraction without {bad[0]}" if bad else None
    for key in TEXT_FIELDS:
        if not isinstance(row.get(key), str):
            return f"field '{key}' missing or not text"
    if not row["pair_id"] or not row["labeller"]:
        return "empty pair_id or labeller"
    if row.get("label") not in LABELS:
        return f"field 'label': {row.get('label')!r} is not a, b or tie"
    if row.get("shown") not in ("ab", "ba"):
        return f"field 'shown': {row.get('shown')!r} is not ab or ba"
    return None


def history(rows: list[dict]) -> dict[str, list[dict]]:
    """labeller -> the label rows in force, oldest first: a retraction cancels that labeller's last one of its pair."""
    kept: dict[str, list[dict]] = {}
    for row in rows:
        mine = kept.setdefault(row["labeller"], [])
        if not row.get("retract"):
            mine.append(row)
        else:
            last = next((i for i in reversed(range(len(mine))) if mine[i]["pair_id"] == row["pair_id"]), None)
            if last is not None:
                del mine[last]
    return kept


def current_of(rows: list[dict]) -> dict[str, dict]:
    """{pair_id: current label row} of one labeller's rows in force, in the order given (a relabel moves to the end)."""
    current: dict[str, dict] = {}
    for row in rows:
        current.pop(row["pair_id"], None)
        current[row["pair_id"]] = row
    return current


def replay(rows: list[dict]) -> dict[str, dict[str, dict]]:
    """labeller -> {pair_id: current label row}."""
    return {name: current_of(mine) for name, mine in history(rows).items()}


def is_label_file(path: str) -> bool:
    """True for a human_labels.jsonl written by `rlaif label` (its first row has `labeller` and `shown`, or is a
    retraction); any other .jsonl goes to the generic readers."""
    p = Path(path)
    if p.is_dir() or not p.name.lower().endswith(".jsonl"):
        return False
    try:
        with open(p, encoding="utf-8") as f:
            first = next((line for line in f if line.strip()), "")
        row = json.loads(first)
        return "labeller" in row and ("shown" in row or row.get("retract") is True)
    except (OSError, UnicodeDecodeError, ValueError, TypeError):
        return False


class LabelFile:
    """One labeller's view of RUN_DIR/human_labels.jsonl; appends are whole lines, flushed and fsynced."""

    def __init__(self, path: Path, labeller: str):
        self.path, self.labeller = Path(path), labeller
        self.lock = threading.Lock()
        read_jsonl_tail_repair(self.path)  # a last line torn by a crash: the next append starts a line of its own
        good = []
        for number, row in read_rows(self.path):
            problem = check_row(row)
            if problem:
                raise RlaifError(problem, f"{self.path}:{number}", "fix or remove the line; labels are never rewritten")
            good.append(row)
        self.history = history(good).get(labeller, [])  # this labeller's rows in force: what undo steps back through
        self.current = current_of(self.history)

    def _append(self, row: dict) -> None:
        line = (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)  # one write on an O_APPEND file: whole lines even with two labellers at once
            os.fsync(fd)
        finally:
            os.close(fd)

    def label(self, pair: dict, label: str, shown: str) -> dict:
        row = {"pair_id": pair["pair_id"], "prompt": pair["prompt"], "response_a": pair["response_a"],
               "response_b": pair["response_b"], "label": label, "shown": shown, "labeller": self.labeller,
               "time": now()}
        with self.lock:
            self._append(row)
            self.history.append(row)
            self.current.pop(row["pair_id"], None)
            self.current[row["pair_id"]] = row
        return row

    def undo(self) -> dict | None:
        """Retract this labeller's most recent label in force, so that its pair's earlier label (if any) is back;
        returns the retracted row (None: nothing to undo)."""
        with self.lock:
            if not self.history:
                return None
            row = self.history[-1]
            self._append({"pair_id": row["pair_id"], "labeller": self.labeller, "retract": True, "time": now()})
            self.history.pop()
            self.current = current_of(self.history)
            return row


# ---------------------------------------------------------------- the run's judge

def judge_verdicts(root: Path) -> dict[str, str | None]:
    """pair_id -> the run's judge verdict (a, b, tie; None when no judgment parsed), from judgments.jsonl
    exactly as the preferences stage scores pairs (rlaif.judging.scores.pair_scores). No model is loaded.
    Empty when the run has no judgments or its constitution cannot be read (a warning says why)."""
    from rlaif.judging import constitution as constitution_mod
    from rlaif.judging.scores import pair_scores, verdict_of
    from rlaif.store.folder import Run
    from rlaif.store.files import read_jsonl

    run = Run(root)
    if not run.judgments.exists():
        return {}
    summary = json.loads(run.summary.read_text()) if run.summary.exists() else {}
    constitution, errors = None, []
    for source in (run.constitution, (summary.get("constitution") or {}).get("path")):
        if source and constitution is None:
            try:
                constitution = constitution_mod.load(str(source) if "/" in str(source) else f"./{source}")
            except RlaifError as e:
                errors.append(e.line())
    if constitution is None:
        print(f"rlaif: label: warning: no judge verdicts shown: {'; '.join(errors) or 'no constitution.yaml'}",
              file=sys.stderr)
        return {}
    pairs = read_jsonl(run.pairs)
    scores = pair_scores(pairs, read_jsonl(run.judgments), constitution)
    return {pid: verdict_of(score) for pid, score in scores.items()}


def agreement_count(current: dict[str, dict], verdicts: dict[str, str | None]) -> tuple[int, int]:
    """(k, n): of the n labelled pairs where both you and the judge picked a side, the judge agreed on k
    (the `agreement` of rlaif.evaluation.metrics: ties and pairs without a verdict are left out)."""
    both = [(row["label"], verdicts.get(pid)) for pid, row in current.items()]
    decided = [(h, j) for h, j in both if h in ("a", "b") and j in ("a", "b")]
    return sum(h == j for h, j in decided), len(decided)


# ---------------------------------------------------------------- for `rlaif agreement --human`

@dataclass
class LabelledPair:
    pair_id: str
    prompt: str
    response_a: str
    response_b: str
    labels: dict  # labeller -> label


def read_label_file(path: str, labellers: list[str] | None = None,
                    skip_bad_rows: bool = False) -> tuple[list[LabelledPair], list[str], int]:
    """The file as it is, retractions applied: (pairs in order of first label, labellers, bad rows skipped).
    `labellers` keeps those labellers only (one label column each)."""
    good, skipped = [], 0
    for number, row in read_rows(Path(path)):
        problem = check_row(row)
        if problem and not skip_bad_rows:
            raise RlaifError(problem, f"{path}:{number}", "fix or remove the row, or pass --skip-bad-rows")
        skipped += bool(problem)
        if not problem:
            good.append(row)
    current = replay(good)
    names = list(current)
    if labellers:
        unknown = [name for name in labellers if name not in current]
        if unknown:
            raise RlaifError(f"no labeller named {', '.join(unknown)}", path,
                             f"--label-columns takes labeller names: {', '.join(names) or '(none)'}")
        names = list(labellers)
    first = {row["pair_id"]: i for i, row in reversed(list(enumerate(good))) if not row.get("retract")}
    pairs: dict[str, LabelledPair] = {}
    for name in names:
        for pid, row in current[name].items():
            pair = pairs.setdefault(pid, LabelledPair(pid, row["prompt"], row["response_a"], row["response_b"], {}))
            pair.labels[name] = row["label"]
    ordered = sorted(pairs.values(), key=lambda p: first[p.pair_id])
    return ordered, names, skipped


def report_rows(root: Path) -> list[dict]:
    """One row per labeller for report.html: labels given and how far the run's judge agrees with them."""
    from rlaif.evaluation import metrics

    rows = [row for _, row in read_rows(Path(root) / FILE_NAME) if check_row(row) is None]
    verdicts = judge_verdicts(root)
    out = []
    for labeller, current in replay(rows).items():
        human = [row["label"] for row in current.values()]
        judge = [verdicts.get(pid) for pid in current]
        k, n = agreement_count(current, verdicts)
        out.append({"labeller": labeller, "labelled": len(human), **{c: human.count(c) for c in LABELS},
                    "agree": k, "decided": n, "agreement": k / n if n else None,
                    "cohen_kappa": metrics.cohen_kappa(human, judge)})
    return out
