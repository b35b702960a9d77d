"""Constitutions: YAML principle files, strictly validated, and deterministic principle sampling.

Schema (see README "Writing a constitution"):
  name, description, version,
  judge: {template, principles_per_comparison (int or "all"), label_mode ("logprob" or "cot"),
          mode ("pairwise" or "rating": one response rated 1-9 alone, rlaif.judging.rating)},
  principles: [{id, text, critique and revision (optional, both or neither), weight (default 1.0),
                examples: [{prompt, better, worse}]}]
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from rlaif import CONSTITUTIONS_DIR, PROMPTS_DIR
from rlaif.errors import RlaifError
from rlaif.seeded import digest

ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
LABEL_MODES = ("logprob", "cot")
JUDGE_MODES = ("pairwise", "rating")
TOP_KEYS = {"name": str, "description": str, "version": (int, str), "judge": dict, "principles": list}
JUDGE_KEYS = {"template": str, "principles_per_comparison": (int, str), "label_mode": str, "mode": str}
PRINCIPLE_KEYS = {"id": str, "text": str, "critique": str, "revision": str, "weight": (int, float), "examples": list}
EXAMPLE_KEYS = {"prompt": str, "better": str, "worse": str}
SAMPLE = {"prompt": "How do I reset my router?", "response_a": "Hold the reset button for 10 seconds.",
          "response_b": "I can't help with that."}
RATING_SAMPLE = {"prompt": SAMPLE["prompt"], "response": SAMPLE["response_a"]}


@dataclass(frozen=True)
class Principle:
    id: str
    text: str
    weight: float = 1.0
    examples: tuple = ()
    critique: str = ""  # Constitutional AI's critique request (revise stage); "" when the principle cannot revise
    revision: str = ""  # and its revision request; both or neither

    @property
    def can_revise(self) -> bool:
        return bool(self.critique and self.revision)


@dataclass
class Constitution:
    name: str
    description: str
    version: str
    template: str
    principles_per_comparison: int | str
    label_mode: str
    principles: list[Principle]
    path: Path
    text: str = field(repr=False, default="")
    mode: str = "pairwise"  # judge.mode: pairwise (A or B, both orders) or rating (each response alone, 1-9)

    @property
    def template_dirs(self) -> tuple:
        """Templates next to the constitution file win over the shipped ones in prompts/."""
        return (str(self.path.parent.resolve()), str(PROMPTS_DIR))

    def sample(self, pair_id: str, seed: int) -> list[tuple[Principle, float]]:
        """Principles for one pair, with the weight each gets in the pair's score.

        "all": every principle, weighted by its weight. k: k distinct principles drawn with
        probability proportional to weight (so they count equally), deterministic in seed and pair_id."""
        if self.principles_per_comparison == "all":
            return [(p, p.weight) for p in self.principles]
        rng = random.Random(digest(seed, pair_id))
        pool, chosen = list(self.principles), []
        for _ in range(min(self.principles_per_comparison, len(pool))):
            pick = rng.choices(range(len(pool)), weights=[p.weight for p in pool])[0]
            chosen.append((pool.pop(pick), 1.0))
        return chosen

    def revisers(self, pair_id: str, seed: int, rounds: int) -> list[Principle]:
        """One principle with critique/revision requests per revision round, drawn as the judge draws (weighted,
        seeded by seed and pair_id, stable across reruns); rounds draw with replacement."""
        pool = [p for p in self.principles if p.can_revise]
        if not pool:
            return []
        rng = random.Random(digest(seed, pair_id, "revise"))
        return [pool[rng.choices(range(len(pool)), weights=[p.weight for p in pool])[0]] for _ in range(rounds)]


def resolve_path(name_or_path: str) -> Path:
    """A bare name (".yaml" optional) is ./constitutions/NAME when the current folder has one, else the
    shipped constitutions/NAME inside the package; a path is used as is."""
    if "/" in name_or_path or "\\" in name_or_path:
        return Path(name_or_path)
    if name_or_path.startswith(".") or not name_or_path:
        raise RlaifError(f"constitution name {name_or_path!r} is not a plain name", "--constitution",
                         "pass a name from constitutions/ or a path to a .yaml file")
    stem = name_or_path if name_or_path.endswith((".yaml", ".yml")) else f"{name_or_path}.yaml"
    local = Path("constitutions") / stem
    return local if local.is_file() else CONSTITUTIONS_DIR / stem


def _line_index(text: str) -> dict:
    """Map key paths such as ("principles", 2, "text") to 1-based line numbers."""
    lines = {}

    def walk(node, path):
        lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                lines[path + (k.value,)] = k.start_mark.line + 1
                walk(v, path + (k.value,))
                lines[path + (k.value,)] = k.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk(v, path + (i,))

    root = yaml.compose(text)
    if root is not None:
        walk(root, ())
    return lines


class _Checker:
    def __init__(self, path: Path, lines: dict):
        self.path, self.lines = path, lines

    def where(self, keypath: tuple) -> str:
        while keypath and keypath not in self.lines:
            keypath = keypath[:-1]
        line = self.lines.get(keypath)
        return f"{self.path}:{line}" if line else str(self.path)

    def fail(self, keypath, what, fix):
        raise RlaifError(what, self.where(keypath), fix)

    def mapping(self, data, schema: dict, required: tuple, keypath: tuple, label: str) -> dict:
        if not isinstance(data, dict):
            self.fail(keypath, f"`{label}` must be a mapping of keys", "write it as `key: value` lines")
        for key, value in data.items():
            if key not in schema:
                self.fail(keypath + (key,), f"unknown key `{key}` in {label}", f"valid keys: {', '.join(schema)}")
            if not isinstance(value, schema[key]) or isinstance(value, bool):
                kind = "/".join(t.__name__ for t in (schema[key] if isinstance(schema[key], tuple) else (schema[key],)))
                self.fail(keypath + (key,), f"`{key}` in {label} must be {kind}, got {type(value).__name__}",
                          f"give `{key}` a {kind} value")
        for key in required:
            if key not in data:
                self.fail(keypath, f"missing required key `{key}` in {label}", f"add `{key}:`")
        return data


def load(name_or_path: str) -> Constitution:
    path = resolve_path(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        known = ", ".join(sorted({p.name for d in (Path("constitutions"), CONSTITUTIONS_DIR) for p in d.glob("*.yaml")}))
        raise RlaifError("constitution file not found", str(path), f"use one of: {known}, or a path") from None
    except (UnicodeDecodeError, IsADirectoryError) as e:
        raise RlaifError(f"cannot read the constitution ({type(e).__name__})", str(path), "save it as UTF-8 YAML") from None
    try:
        data = yaml.safe_load(text)
        lines = _line_index(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise RlaifError(f"YAML syntax error: {getattr(e, 'problem', None) or e}", where,
                         "fix the YAML (indentation, quotes, colons)") from None
    c = _Checker(path, lines)
    c.mapping(data, TOP_KEYS, ("name", "version", "principles"), (), "the constitution")
    if not ID_RE.match(data["name"]):
        c.fail(("name",), f"name {data['name']!r} may hold only lowercase letters, digits, '-' and '_'",
               "rename it, e.g. `name: safety`")
    judge = c.mapping(data.get("judge", {}), JUDGE_KEYS, (), ("judge",), "judge")
    ppc = judge.get("principles_per_comparison", 1)
    if not (ppc == "all" or isinstance(ppc, int) and ppc >= 1):
        c.fail(("judge", "principles_per_comparison"), f"principles_per_comparison must be a positive integer or `all`, got {ppc!r}",
               "use 1 (one principle drawn per pair) or all")
    mode = judge.get("label_mode", "logprob")
    if mode not in LABEL_MODES:
        c.fail(("judge", "label_mode"), f"label_mode must be one of {', '.join(LABEL_MODES)}, got {mode!r}",
               "use logprob (next-token A/B probabilities) or cot (rationale, then a verdict line)")
    judge_mode = judge.get("mode", "pairwise")
    if judge_mode not in JUDGE_MODES:
        c.fail(("judge", "mode"), f"mode must be one of {', '.join(JUDGE_MODES)}, got {judge_mode!r}",
               "use pairwise (the judge compares two responses) or rating (it rates each response alone, 1 to 9)")
    if judge_mode == "rating" and mode != "logprob":
        c.fail(("judge", "label_mode"), f"judge.mode rating reads the labels' log-probs; label_mode {mode!r} does not",
               "use label_mode: logprob (or leave it out) with mode: rating")
    principles, seen = [], {}
    if not data["principles"]:
        c.fail(("principles",), "principles is empty", "add at least one principle with id and text")
    for i, raw in enumerate(data["principles"]):
        kp = ("principles", i)
        c.mapping(raw, PRINCIPLE_KEYS, ("id", "text"), kp, f"principles[{i}]")
        pid = raw["id"]
        if not ID_RE.match(pid):
            c.fail(kp + ("id",), f"principle id {pid!r} may hold only lowercase letters, digits, '-' and '_'",
                   "rename it, e.g. `id: physical-harm`")
        if pid in seen:
            c.fail(kp + ("id",), f"duplicate principle id `{pid}` (first at line {lines.get(('principles', seen[pid], 'id'))})",
                   "give every principle a unique id")
        seen[pid] = i
        if not raw["text"].strip():
            c.fail(kp + ("text",), f"principle `{pid}` has empty text", "write the principle as a sentence")
        weight = raw.get("weight", 1.0)
        if not weight > 0:
            c.fail(kp + ("weight",), f"principle `{pid}` has weight {weight}; weights must be positive",
                   "use a number above 0, such as 1.0")
        pair = [k for k in ("critique", "revision") if k in raw]
        if len(pair) == 1:
            other = "revision" if pair[0] == "critique" else "critique"
            c.fail(kp + (pair[0],), f"principle `{pid}` has `{pair[0]}` but no `{other}`",
                   f"add `{other}:` (the request that follows the {pair[0]}) or remove `{pair[0]}`")
        for k in pair:
            if not raw[k].strip():
                c.fail(kp + (k,), f"principle `{pid}` has an empty `{k}`", f"write the {k} request as a sentence, or "
                       "remove both critique and revision")
        examples = []
        for j, ex in enumerate(raw.get("examples", [])):
            c.mapping(ex, EXAMPLE_KEYS, tuple(EXAMPLE_KEYS), kp + ("examples", j), f"principles[{i}].examples[{j}]")
            examples.append(dict(ex))
        principles.append(Principle(pid, raw["text"].strip(), float(weight), tuple(examples),
                                    raw.get("critique", "").strip(), raw.get("revision", "").strip()))
    constitution = Constitution(
        name=data["name"], description=str(data.get("description", "")).strip(), version=str(data["version"]),
        template=judge.get("template", "rating.j2" if judge_mode == "rating" else
                           "judge_logprob.j2" if mode == "logprob" else "judge_cot.j2"),
        principles_per_comparison=ppc, label_mode=mode, principles=principles, path=path, text=text, mode=judge_mode)
    from rlaif.judging.templates import render  # validate the template against every principle now

    where = f"{path}:{lines.get(('judge', 'template'), 1)}"
    for p in principles:
        render(constitution.template, where, dirs=constitution.template_dirs, principle=p,
               **(RATING_SAMPLE if judge_mode == "rating" else SAMPLE))
    if judge_mode == "rating":
        from rlaif.judging.templates import template_labels

        template_labels(constitution.template, constitution.template_dirs, where)  # a malformed declaration: now
    return constitution
