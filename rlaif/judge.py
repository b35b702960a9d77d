"""Judge stage: pairs x principles x both orders -> judgments; verdict parsing; pair scores.

Each judgment's key hashes what changes its output (the rendered prompt, the judge's identity and
the scoring settings) and nothing else, so editing one principle re-judges only that principle.

The cache holds what the judge saw: for one rendered prompt, P(the response shown first is better). Each job
orients that to P(response_a is better) by its own order when it reads it, so two jobs that render the same
text in opposite orders (a pair of identical responses, another seed's draw) can never inherit a flipped
verdict. A pair whose two responses are the same text is never judged: it is a tie by construction.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import deque
from dataclasses import asdict, dataclass
from functools import lru_cache
from itertools import islice
from json.encoder import encode_basestring_ascii as encode_json_string
from pathlib import Path
from typing import Iterable, Iterator

from tqdm import tqdm

from rlaif.constitution import Constitution, Principle
from rlaif.engines.base import label_probability
from rlaif.store import JudgmentCache
from rlaif.templates import fingerprint, renderer, slotted

LABELS = ("A", "B")
DEFAULT_TEMPLATES = {"logprob": "judge_logprob.j2", "cot": "judge_cot.j2"}
VERDICT_TEMPLATE = "_cot_verdict.j2"  # the turn after a CoT rationale, scored by log-probs
CACHE_VERSION = "p_first-v2"  # in every key: caches written before the p_first records are not reused
PARSED = {"A": 1.0, "B": 0.0, "TIE": 0.5}  # a parsed verdict line as P(shown-first is better)
SLOTS = ("prompt", "response_a", "response_b")  # what differs between the judge prompts of one principle
VERDICT_RE = re.compile(r"^\s*\**\s*verdict\s*\**\s*:\s*\**\s*(A|B|tie)\s*\**\s*\.?\s*$", re.IGNORECASE)


@dataclass
class Job:
    pair_id: str
    principle: Principle
    order: str
    text: str
    key: str
    verdict_text: str = ""  # chain of thought: the follow-up turn whose first reply token is scored
    weight: float = 1.0  # the principle's weight in this pair's score (kept in the judgment)


def judge_mode(constitution, engine) -> str:
    """The constitution's label mode; endpoints without log-probs fall back to chain of thought."""
    if constitution.label_mode == "logprob" and not getattr(engine, "supports_logprobs", True):
        return "cot"
    return constitution.label_mode


def judge_settings(cfg, mode: str) -> dict:
    """Scoring settings that change a judgment's output in `mode` (they go into its cache key). The rationale's
    token budget matters only to chain of thought: in log-prob mode it changes nothing, so it re-judges nothing."""
    return {"labels": list(LABELS), **({"max_new_tokens": cfg.judge.max_new_tokens} if mode == "cot" else {})}


def is_identical(pair: dict) -> bool:
    """The two responses are the same text (whitespace at the ends aside): no preference can come of it."""
    return pair["response_a"].strip() == pair["response_b"].strip()


def principle_hash(principle: Principle) -> str:
    """The hash of the principle text a judgment was made with (kept in each judgment)."""
    return _text_hash(principle.text)


@lru_cache(maxsize=256)
def _text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def parse_verdict(text: str) -> str | None:
    """The last non-empty line must be exactly a verdict line ("Verdict: A"/"Verdict: B"/"Verdict: tie"),
    optionally in bold. Anything else is unparseable: None, never a guess."""
    lines = [line for line in str(text).splitlines() if line.strip()]
    if not lines:
        return None
    m = VERDICT_RE.match(lines[-1])
    return m.group(1).upper() if m and m.group(1).upper() in LABELS else ("TIE" if m else None)


def to_original(first_label_p: float | None, order: str) -> float | None:
    """P(shown-first is better) -> P(response_a is better)."""
    if first_label_p is None:
        return None
    return first_label_p if order == "ab" else 1.0 - first_label_p


def verdict_of(p_a: float | None) -> str | None:
    if p_a is None:
        return None
    return "a" if p_a > 0.5 else "b" if p_a < 0.5 else "tie"


def make_jobs(pairs: list[dict], constitution: Constitution, seed: int, identity: str, mode: str,
              settings: dict, mitigate: bool = True) -> list[Job]:
    return list(iter_jobs(pairs, constitution, seed, identity, mode, settings, mitigate))


def iter_jobs(pairs: Iterable[dict], constitution: Constitution, seed: int, identity: str, mode: str,
              settings: dict, mitigate: bool = True) -> Iterator[Job]:
    """The jobs of each pair in turn (principles, then orders), rendered as they are asked for."""
    jobs = _Jobs(constitution, identity, mode, settings, mitigate)
    for spec in _specs(pairs, constitution, seed):
        yield jobs.render(*spec)


def _specs(pairs: Iterable[dict], constitution: Constitution, seed: int, identical: list | None = None,
           on_identical=None) -> Iterator[tuple]:
    """(pair, principle, order, weight) for each job: the pair's principles drawn once, here, and never again
    (the weight goes into the judgment, so scoring needs no constitution.sample)."""
    for pair in pairs:
        if is_identical(pair):
            if identical is not None:
                identical[0] += 1
                if on_identical:
                    on_identical()
            continue
        for principle, weight in constitution.sample(pair["pair_id"], seed):
            for order in ("ab", "ba"):
                yield pair, principle, order, float(weight)


class _Jobs:
    """Renders one stage's jobs: templates looked up once. `inputs` is a cheap hash of everything the rendered
    text and the key depend on, so a resumed run finds a job's key without rendering it."""

    def __init__(self, constitution: Constitution, identity: str, mode: str, settings: dict, mitigate: bool):
        # A judge that cannot give log-probs falls back to chain of thought, which needs the CoT template.
        template = constitution.template if mode == constitution.label_mode else DEFAULT_TEMPLATES[mode]
        where, dirs = str(constitution.path), constitution.template_dirs
        self.full = renderer(template, where, mitigate, dirs)
        self.slotted = slotted(template, SLOTS, where, mitigate, dirs)  # None: the template needs full renders
        self.verdict = renderer(VERDICT_TEMPLATE, where, mitigate, dirs) if mode == "cot" else None
        self.identity, self.mode, self.settings = identity, mode, settings
        # Every file the judge prompt is rendered from, or None (a computed include): then each job is rendered.
        files = fingerprint(dirs, mitigate, (template,) + ((VERDICT_TEMPLATE,) if mode == "cot" else ()))
        self.fingerprint = files and json.dumps([CACHE_VERSION, files, template, identity, mode, settings], sort_keys=True)
        self.principles = {}  # id -> (principle, its verdict turn, the key's JSON around the text, its inputs hash)
        self.pair, self.pair_hash = None, b""

    def _principle(self, principle: Principle) -> tuple:
        known = self.principles.get(principle.id)
        if known is None or known[0] is not principle:
            verdict = self.verdict(principle=principle) if self.verdict else ""
            # The key hashes json.dumps([CACHE_VERSION, text, identity, mode, settings(, verdict)]): all but the
            # text is fixed here, so the JSON around the text is built once (same bytes as dumping it whole).
            marker = "\x00text\x00"
            frame = json.dumps([CACHE_VERSION, marker, self.identity, self.mode, self.settings] + ([verdict] if verdict else []),
                               sort_keys=True).split(json.dumps(marker))
            assert len(frame) == 2, frame
            inputs = hashlib.sha256(((self.fingerprint or "") + json.dumps(asdict(principle), sort_keys=True, default=str))
                                    .encode("utf-8", "surrogatepass")).digest()
            known = self.principles[principle.id] = (principle, verdict, frame, inputs)
        return known

    def render(self, pair: dict, principle: Principle, order: str, weight: float = 1.0) -> Job:
        _, verdict, (before, after), _ = self._principle(principle)
        a, b = (pair["response_a"], pair["response_b"]) if order == "ab" else (pair["response_b"], pair["response_a"])
        variables = {"principle": principle, "prompt": pair["prompt"], "response_a": a, "response_b": b}
        text = self.slotted(principle.id, **variables) if self.slotted else self.full(**variables)
        key = hashlib.sha256((before + encode_json_string(text) + after).encode()).hexdigest()
        return Job(pair["pair_id"], principle, order, text, key, verdict, weight)

    def inputs(self, pair: dict, principle: Principle, order: str, weight: float = 1.0) -> str:
        """A hash of everything a job's text and key depend on: the stage's fingerprint, the principle, the
        order and the pair's three texts (hashed once per pair, for all of its jobs)."""
        if pair is not self.pair:
            h = hashlib.sha256()
            for part in (pair["prompt"], pair["response_a"], pair["response_b"]):
                data = part.encode("utf-8", "surrogatepass")
                h.update(len(data).to_bytes(8, "little") + data)  # length-prefixed: no two inputs run together
            self.pair, self.pair_hash = pair, h.digest()
        return hashlib.sha256(self._principle(principle)[3] + order.encode() + self.pair_hash).hexdigest()


def score_jobs(engine, jobs: list[Job], mode: str, settings: dict) -> list[dict]:
    """Cache records, one per job: {key, p_first (P(shown-first is better), None if unparseable), raw_output,
    judge, mode}. Nothing in them depends on the order the job belongs to."""
    convs = [[{"role": "user", "content": j.text}] for j in jobs]
    if mode == "logprob":
        outputs = engine.label_logprobs(convs, LABELS)
        firsts = [label_probability(o, *LABELS) for o in outputs]
    else:
        rationales = engine.complete(convs, max_new_tokens=settings["max_new_tokens"])
        outputs, firsts = rationales, [PARSED.get(parse_verdict(r)) for r in rationales]
        if getattr(engine, "supports_logprobs", True):
            # Rationale first, then the verdict's log-probs given it (as in Lee et al. 2023): every judgment
            # gets a probability, even from a judge that never writes a well-formed verdict line. The
            # parsed line is the fallback for an endpoint that gives no label log-probs.
            follow = [c + [{"role": "assistant", "content": r}, {"role": "user", "content": j.verdict_text}]
                      for c, r, j in zip(convs, rationales, jobs)]
            verdicts = engine.label_logprobs(follow, LABELS)
            outputs = [{"rationale": r, "verdict_logprobs": v} for r, v in zip(rationales, verdicts)]
            scored = [label_probability(v, *LABELS) for v in verdicts]  # None when a label is missing
            firsts = [p if p is not None else f for p, f in zip(scored, firsts)]
    return [{"key": job.key, "p_first": first, "raw_output": out, "judge": engine.identity, "mode": mode}
            for job, out, first in zip(jobs, outputs, firsts)]


def oriented(job: Job, cached: dict) -> dict:
    """The judgment of `job` from a cache record: P(shown first) turned into P(response_a) by the job's order.
    The fields of records.Judgment, in its order (built as a dict: this runs once per judgment)."""
    p_a = to_original(cached["p_first"], job.order)
    return {"pair_id": job.pair_id, "principle_id": job.principle.id, "order": job.order, "p_a": p_a,
            "verdict": verdict_of(p_a), "raw_output": cached["raw_output"], "judge": cached["judge"], "key": job.key,
            "mode": cached["mode"], "principle_hash": principle_hash(job.principle), "weight": job.weight}


def run_judge(engine, pairs: list[dict], constitution: Constitution, *, seed: int, mode: str, settings: dict,
              cache_path: Path | None = None, batch_size: int | None = None, mitigate: bool = True,
              progress: bool = True) -> tuple[list[dict], dict]:
    """Judge every pair; reuse cached judgments by key. Returns (judgments in job order, counts).
    Pairs of identical responses are skipped and counted (`identical`). batch_size None: the engine's own."""
    counts = {}
    out = list(iter_judge(engine, pairs, constitution, seed=seed, mode=mode, settings=settings, cache_path=cache_path,
                          batch_size=batch_size, mitigate=mitigate, progress=progress, counts=counts))
    return out, counts


WINDOW = 4096  # jobs held at most while waiting for a batch to fill (bounds memory over a mostly cached run)


def iter_judge(engine, pairs: Iterable[dict], constitution: Constitution, *, seed: int, mode: str, settings: dict,
               cache_path: Path | None = None, batch_size: int | None = None, mitigate: bool = True,
               progress: bool = True, counts: dict | None = None) -> Iterator[dict]:
    """run_judge as a stream: judgments in job order, in constant memory. Jobs are rendered as they come,
    looked up in the cache (an index on disk), and the missing ones are scored batch_size at a time and
    appended to the cache before anything after them is yielded. `counts` is filled in at the end."""
    batch_size = batch_size or engine.batch_size
    cache = JudgmentCache(cache_path) if cache_path else _MemoryCache()
    counts = {} if counts is None else counts
    total = judged = failures = 0
    identical = [0]  # pairs of identical responses, skipped
    window, todo = deque(), {}  # window: [job, record or None] in job order; todo: key -> job to score
    per_pair = 2 * (len(constitution.principles) if constitution.principles_per_comparison == "all"
                    else min(constitution.principles_per_comparison, len(constitution.principles)))
    bar = tqdm(total=len(pairs) * per_pair if hasattr(pairs, "__len__") else None, desc="judge", unit="judgment",
               disable=not progress)

    found = {}

    def flush():
        nonlocal judged
        records = score_jobs(engine, list(todo.values()), mode, settings)
        cache.add(records)
        fresh = {r["key"]: r for r in records}
        for entry in window:
            if entry[1] is None:
                entry[1] = fresh[entry[0].key]
        found.update(fresh)  # later jobs of this chunk with the same text were looked up before it was scored
        judged += len(records)
        todo.clear()

    def ready():
        nonlocal failures
        while window and window[0][1] is not None:
            j, record = window.popleft()
            out = oriented(j, record)  # cached records may come from another pair with the same text
            failures += out["verdict"] is None
            bar.update()
            yield out

    try:
        def skip():  # an identical pair has no jobs: the bar's total does not count it
            if bar.total is not None:
                bar.total -= per_pair
                bar.refresh()

        maker = _Jobs(constitution, engine.identity, mode, settings, mitigate)
        specs = _specs(pairs, constitution, seed, identical, skip)
        while chunk := list(islice(specs, 512)):
            jobs, found = _keyed(maker, chunk, cache)
            for j in jobs:
                total += 1
                record = found.get(j.key)
                if record is None:
                    todo[j.key] = j  # a key seen twice keeps its first place and scores its last job, as before
                window.append([j, record])
                if len(todo) >= batch_size or todo and len(window) >= WINDOW:
                    flush()
                yield from ready()
        if todo:
            flush()
        yield from ready()
    finally:
        bar.close()
        cache.close()
    counts.update({"judgments": total, "judged": judged, "reused": total - judged, "parse_failures": failures,
                   "identical": identical[0]})


def _keyed(maker: _Jobs, chunk: list[tuple], cache) -> tuple[list[Job], dict]:
    """Jobs for the specs, and the cache's records of them (key -> record). A job whose inputs the cache
    remembers comes with its record, keyed but not rendered (text None); the others are rendered."""
    if not cache.remembers or maker.fingerprint is None:
        jobs = [maker.render(*spec) for spec in chunk]
        return jobs, cache.get_many(j.key for j in jobs)
    inputs = [maker.inputs(*spec) for spec in chunk]
    known = cache.records_of(inputs)
    jobs = [Job(spec[0]["pair_id"], spec[1], spec[2], None, known[h]["key"], weight=spec[3]) if h in known
            else maker.render(*spec)
            for spec, h in zip(chunk, inputs)]
    rendered = [(h, j.key) for h, j in zip(inputs, jobs) if h not in known]
    found = cache.get_many(key for _, key in rendered)
    found.update((r["key"], r) for r in known.values())
    cache.remember(rendered)
    return jobs, found


class _MemoryCache:
    """JudgmentCache's interface over a dict, for runs without a cache file."""

    remembers = False

    def __init__(self):
        self.records = {}

    def get_many(self, keys: Iterable[str]) -> dict:
        return {k: self.records[k] for k in keys if k in self.records}

    def add(self, records: list[dict]) -> None:
        self.records.update((r["key"], r) for r in records)

    def close(self) -> None:
        pass


def current_hashes(constitution: Constitution) -> dict[str, str]:
    """principle_id -> the hash of its text now: a judgment made with other text is stale."""
    return {p.id: principle_hash(p) for p in constitution.principles}


def is_current(judgment: dict, current: dict[str, str]) -> bool:
    """Whether a judgment was made with its principle's text as it is now (current_hashes). A record without a
    principle_hash predates them and counts as current."""
    now = current.get(judgment["principle_id"])
    return now is not None and judgment.get("principle_hash", now) == now


def pair_scores(pairs: Iterable[dict], judgments: Iterable[dict], constitution: Constitution, *,
                orders: tuple = ("ab", "ba")) -> dict:
    """pair_id -> score in [0, 1] (P(response_a is better)), a pure function of the judgments present: the mean
    of p_a over `orders` for each principle a pair was judged on, then the mean weighted by each judgment's own
    `weight`. Nothing is drawn again: the principles are those in the judgments. A judgment whose
    `principle_hash` is not the current text of its principle (edited or removed since) is never mixed with
    current ones: it is left out (see is_current). None when no current judgment parsed.
    orders=("ab",) gives single-order scores. A pair of identical responses scores 0.5 (a tie by construction;
    it is never judged)."""
    current, every = current_hashes(constitution), constitution.principles_per_comparison == "all"
    weights = {p.id: float(p.weight) if every else 1.0 for p in constitution.principles}  # records without one
    by = {}
    for r in judgments:
        pid = r["principle_id"]
        if r["p_a"] is not None and r["order"] in orders and is_current(r, current):
            group = by.setdefault(r["pair_id"], {}).setdefault(pid, [r.get("weight", weights[pid]), []])
            group[1].append(r["p_a"])
    scores = {}
    for pair in pairs:
        if is_identical(pair):
            scores[pair["pair_id"]] = 0.5
            continue
        num = den = 0.0
        for weight, ps in by.get(pair["pair_id"], {}).values():
            num += weight * sum(ps) / len(ps)
            den += weight
        scores[pair["pair_id"]] = num / den if den else None
    return scores
