"""Readers of human-labelled response pairs: HH-RLHF transcripts, PandaLM's test set and generic tables.

Every bad input raises `RlaifError` naming the file (and 1-based row) plus a fix. An empty response is a
real response (a model that said nothing), not a bad row: published sets label such pairs, and the figures
must describe the whole set. Missing fields, wrong types and unknown labels are bad rows, and so is a pair_id
that an earlier row gave to a different pair (prompt, responses or labels); an exact repeat is kept once.
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rlaif.errors import RlaifError
from rlaif.evaluation.labels import is_label_file, read_label_file
from rlaif.seeded import coin
from rlaif.store.files import json_lines

ASSISTANT = "\n\nAssistant:"
LABELS = ("a", "b", "tie")
PANDALM = {"instruction", "input", "response1", "response2"}  # PandaLM's testset-v1.json
PANDALM_LABELS = {0: "tie", 1: "a", 2: "b"}  # annotatorN: 1 = response1 better, 2 = response2, 0 = tie
AUTOJ = {"prompt", "response 1", "response 2", "label"}  # Auto-J's data/test/testdata_pairwise.jsonl
AUTOJ_LABELS = {0: "a", 1: "b", 2: "tie"}  # label: 0 = response 1 better, 1 = response 2, 2 = tie
FORMATS = ".jsonl, .jsonl.gz, .json, .csv, .parquet or a Dataset.save_to_disk folder"


@dataclass(slots=True)
class HumanPair:
    pair_id: str
    prompt: str  # the conversation before the final assistant turn (plain text)
    response_a: str
    response_b: str
    labels: list[str]  # one per annotator, each "a", "b" or "tie"


class _BadRow(Exception):
    """A problem with one row; turned into RlaifError (or skipped) by the caller."""

    def __init__(self, field: str, what: str, fix: str = "fix or remove the row"):
        super().__init__(what)
        self.field, self.what, self.fix = field, what, fix


def chosen_goes_to_a(seed: int, pair_id: str) -> bool:
    """Seeded per-pair coin flip: sha256 of f"{seed}:{pair_id}", independent of `random`."""
    return coin(seed, pair_id)


def read_human_pairs(path: str, *, label_columns: list[str] | None = None, seed: int = 0,
                     limit: int | None = None, skip_bad_rows: bool = False,
                     counts: dict | None = None) -> tuple[list[HumanPair], int]:
    """Read human-labelled pairs from `path`. Returns (pairs, n_skipped).

    `label_columns` names several annotator columns (an empty cell there means that annotator
    did not label the row; a row needs at least one label); without it a `label` column is used.
    `limit` keeps the first N good rows. Bad rows raise RlaifError unless `skip_bad_rows`.
    `counts`, when given, gets "duplicate_rows": the rows that repeated an earlier row's pair exactly.
    """
    if limit is not None and limit < 0:
        raise RlaifError(f"limit must be >= 0, got {limit}", fix="pass a non-negative limit")
    counts = {} if counts is None else counts
    counts["duplicate_rows"] = 0
    if is_label_file(path):  # RUN_DIR/human_labels.jsonl from `rlaif label`: retractions applied, a label per labeller
        return _label_file_pairs(path, label_columns, limit, skip_bad_rows)
    columns, rows = _open_rows(path)
    hh = "chosen" in columns and "rejected" in columns
    pandalm = not hh and PANDALM <= columns
    autoj = not hh and not pandalm and AUTOJ <= columns
    if pandalm:
        label_columns = label_columns or sorted(c for c in columns if c.startswith("annotator"))
    elif not hh and not autoj:
        need = ["prompt", "response_a", "response_b"] + (list(label_columns) if label_columns else ["label"])
        missing = [c for c in need if c not in columns]
        if missing:
            fix = ("add the columns, or pass label_columns=[...] naming the annotator columns"
                   if "label" in missing else "add the columns or fix label_columns")
            raise RlaifError(f"missing column(s) {missing}; found {sorted(columns)}", path,
                             f"{fix}; HH-RLHF files need 'chosen' and 'rejected' instead")
    pairs: list[HumanPair] = []
    first: dict[str, tuple[int, HumanPair]] = {}  # pair_id -> (row index, pair) of the row that first gave it
    skipped = 0
    for index, row in rows:
        if limit is not None and len(pairs) >= limit:
            break
        try:
            if isinstance(row, _BadRow):
                raise row
            pair = (_hh_pair(row, index, seed) if hh else _pandalm_pair(row, index, label_columns) if pandalm
                    else _autoj_pair(row, index) if autoj else _generic_pair(row, index, label_columns))
            at, earlier = first.setdefault(pair.pair_id, (index, pair))
            if earlier != pair:
                raise _BadRow("pair_id", f"{pair.pair_id!r} is also the id of row {at + 1}, a different pair "
                              "(prompt, responses or labels)", f"give each pair its own pair_id, or remove one of rows "
                              f"{at + 1} and {index + 1}")
            if at != index:
                counts["duplicate_rows"] += 1  # the same pair again: kept once
                continue
            pairs.append(pair)
        except _BadRow as bad:
            if not skip_bad_rows:
                raise RlaifError(f"field '{bad.field}': {bad.what}", f"{path}:row {index + 1}",
                                 f"{bad.fix}, or pass skip_bad_rows=True") from None
            skipped += 1
    return pairs, skipped


def _label_file_pairs(path: str, label_columns: list[str] | None, limit: int | None, skip_bad_rows: bool):
    """read_human_pairs for a labels file: (HumanPair list, rows skipped); a pair's labels are one per labeller."""
    pairs, names, skipped = read_label_file(path, label_columns, skip_bad_rows)
    out = [HumanPair(p.pair_id, p.prompt, p.response_a, p.response_b, [p.labels[n] for n in names if n in p.labels])
           for p in pairs]
    return (out if limit is None else out[:limit]), skipped


# ---------------------------------------------------------------- row sources

Rows = Iterator[tuple[int, "dict | _BadRow"]]  # (0-based row index, row or the reason it is bad)


def _open_rows(path: str) -> tuple[set[str], Rows]:
    """Return (column names, rows) for any supported format."""
    p = Path(path)
    if not p.exists():
        raise RlaifError("file not found", path, "check the path")
    if p.is_dir():
        return _dataset_rows(p)
    name = p.name.lower()
    if name.endswith(".jsonl") or name.endswith(".jsonl.gz"):
        return _jsonl_rows(p)
    if name.endswith(".json"):
        return _json_rows(p)
    if name.endswith(".csv") or name.endswith(".parquet"):
        return _table_rows(p)
    raise RlaifError(f"unknown file type '{p.suffix}'", path, f"use {FORMATS}")


def _jsonl_rows(p: Path) -> tuple[set[str], Rows]:
    opener = gzip.open if p.name.lower().endswith(".gz") else open
    try:
        with opener(p, "rt", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise RlaifError(f"cannot read: {e}", str(p), "check the file is UTF-8 JSONL (gzip for .gz)") from None
    parsed: list[tuple[int, dict | _BadRow]] = []
    for number, obj in json_lines(lines):  # blank lines are ignored; row numbers stay line numbers
        if isinstance(obj, json.JSONDecodeError):
            obj = _BadRow("(row)", f"unparseable JSON: {obj.msg}")
        elif not isinstance(obj, dict):
            obj = _BadRow("(row)", "not a JSON object")
        parsed.append((number - 1, obj))
    return _first_keys(parsed), iter(parsed)


def _json_rows(p: Path) -> tuple[set[str], Rows]:
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RlaifError(f"cannot parse JSON: {e}", str(p), "the .json file must hold a list of objects") from None
    if not isinstance(data, list):
        raise RlaifError(f"top level is {type(data).__name__}, not a list", str(p),
                         "the .json file must hold a list of objects (or use .jsonl)")
    parsed = [(i, o if isinstance(o, dict) else _BadRow("(row)", "not a JSON object")) for i, o in enumerate(data)]
    return _first_keys(parsed), iter(parsed)


def _first_keys(parsed: list[tuple[int, dict | _BadRow]]) -> set[str]:
    """Columns of a JSON source: the keys of its first good row."""
    return next((set(r) for _, r in parsed if isinstance(r, dict)), set())


def _table_rows(p: Path) -> tuple[set[str], Rows]:
    import pandas as pd

    try:
        if p.name.lower().endswith(".csv"):
            df = pd.read_csv(p, dtype=str, keep_default_na=False)
        else:
            df = pd.read_parquet(p)
    except Exception as e:  # pandas/pyarrow raise many types for corrupt files
        raise RlaifError(f"cannot read table: {e}", str(p), "check the file is a valid CSV/Parquet file") from None
    cols = [str(c) for c in df.columns]
    return set(cols), ((i, dict(zip(cols, rec))) for i, rec in enumerate(df.itertuples(index=False, name=None)))


def _dataset_rows(p: Path) -> tuple[set[str], Rows]:
    if not ((p / "dataset_info.json").exists() or (p / "state.json").exists()
            or (p / "dataset_dict.json").exists()):
        raise RlaifError("folder is not a saved dataset (no dataset_info.json/state.json)", str(p),
                         f"save it with Dataset.save_to_disk, or pass a file: {FORMATS}")
    import datasets

    try:
        ds = datasets.load_from_disk(str(p))
    except Exception as e:
        raise RlaifError(f"cannot load dataset: {e}", str(p), "re-save it with Dataset.save_to_disk") from None
    if isinstance(ds, datasets.DatasetDict):
        if len(ds) != 1:
            raise RlaifError(f"folder holds several splits {list(ds)}", str(p),
                             f"pass one split's folder, e.g. {p / next(iter(ds), 'train')}")
        ds = next(iter(ds.values()))
    return set(ds.column_names), enumerate(ds)


# ---------------------------------------------------------------- row parsing

def _text(row: dict, field: str) -> str:
    """A required, non-empty text field."""
    text = _response(row, field)
    if not text.strip():
        raise _BadRow(field, "empty")
    return text


def _response(row: dict, field: str) -> str:
    """A required response: a string, possibly empty."""
    value = row.get(field)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise _BadRow(field, "missing")
    if not isinstance(value, str):
        raise _BadRow(field, f"must be text, got {type(value).__name__}")
    return value


def _label(value: object, field: str) -> str | None:
    """Normalise one label cell: 'a', 'b', 'tie', or None when empty."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    label = str(value).strip().lower()
    if not label:
        return None
    if label not in LABELS:
        raise _BadRow(field, f"unknown label {value!r} (expected a, b or tie)")
    return label


def _generic_pair(row: dict, index: int, label_columns: list[str] | None) -> HumanPair:
    prompt, a, b = _text(row, "prompt"), _response(row, "response_a"), _response(row, "response_b")
    if label_columns:
        labels = [lab for c in label_columns if (lab := _label(row.get(c), c)) is not None]
        if not labels:
            raise _BadRow(",".join(label_columns), "no annotator label")
    else:
        lab = _label(row.get("label"), "label")
        if lab is None:
            raise _BadRow("label", "missing")
        labels = [lab]
    pid = row.get("pair_id")
    pid = "" if pid is None or (isinstance(pid, float) and math.isnan(pid)) else str(pid).strip()
    return HumanPair(pid or f"row-{index:05d}", prompt, a, b, labels)


def _split_transcript(row: dict, field: str) -> tuple[str, str]:
    """Split an HH transcript at its last assistant marker: (prompt, final response)."""
    text = _text(row, field)
    cut = text.rfind(ASSISTANT)
    if cut < 0:
        raise _BadRow(field, "no '\\n\\nAssistant:' marker")
    return text[:cut].strip(), text[cut + len(ASSISTANT):].strip()  # an empty final turn is a real response


def _pandalm_cell(row: dict, field: str) -> str:
    """PandaLM's file was written by pandas: an empty cell is NaN, and a cell that read "True" is a boolean.
    Both are what the model wrote, so they come back as that text ("" and "True"); a missing key is bad."""
    if field not in row:
        raise _BadRow(field, "missing")
    value = row[field]
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise _BadRow(field, f"must be text, got {type(value).__name__}")
    return value


def _pandalm_pair(row: dict, index: int, label_columns: list[str]) -> HumanPair:
    """PandaLM: the instruction and its input (when there is one) are the prompt; annotators say 1, 2 or 0."""
    instruction = "\n\n".join(t for f in ("instruction", "input") if (t := _pandalm_cell(row, f).strip()))
    if not instruction:
        raise _BadRow("instruction", "empty (and no input)")
    labels = []
    for c in label_columns:
        value = row.get(c)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        if isinstance(value, bool) or value not in PANDALM_LABELS:
            raise _BadRow(c, f"unknown label {value!r} (PandaLM uses 1, 2, or 0 for a tie)")
        labels.append(PANDALM_LABELS[value])
    if not labels:
        raise _BadRow(",".join(label_columns), "no annotator label")
    idx = row.get("idx", index)
    return HumanPair(f"pandalm-{idx}", instruction, _pandalm_cell(row, "response1"), _pandalm_cell(row, "response2"),
                     labels)


def _autoj_pair(row: dict, index: int) -> HumanPair:
    """Auto-J's pairwise test set: prompt, "response 1", "response 2", label 0 (1 better), 1 (2 better), 2 (tie)."""
    label = row.get("label")
    if isinstance(label, bool) or label not in AUTOJ_LABELS:
        raise _BadRow("label", f"unknown label {label!r} (Auto-J uses 0, 1, or 2 for a tie)")
    return HumanPair(f"autoj-{index:05d}", _text(row, "prompt"), _response(row, "response 1"),
                     _response(row, "response 2"), [AUTOJ_LABELS[label]])


def _hh_pair(row: dict, index: int, seed: int) -> HumanPair:
    prompt, chosen = _split_transcript(row, "chosen")
    other, rejected = _split_transcript(row, "rejected")
    if other != prompt:
        raise _BadRow("rejected", "conversation before the final turn differs from 'chosen'")
    pid = f"hh-{index:05d}"
    if chosen_goes_to_a(seed, pid):
        return HumanPair(pid, prompt, chosen, rejected, ["a"])
    return HumanPair(pid, prompt, rejected, chosen, ["b"])
