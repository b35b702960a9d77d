"""Judge jobs: one rendered judge prompt per pair, principle and order, its cache key, verdict parsing, and
the engine call that scores a batch of jobs (score_jobs). Each key hashes what changes the judgment's output
(the rendered prompt, the judge's identity and the scoring settings) and nothing else.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from json.encoder import encode_basestring_ascii as encode_json_string
from typing import Iterable, Iterator

from rlaif.engines.base import label_probability
from rlaif.judging.constitution import Constitution, Principle
from rlaif.judging.scores import is_identical, principle_hash, to_original, verdict_of
from rlaif.judging.templates import fingerprint, renderer, slotted

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
    """The constitution's label mode; endpoints without log-probs fall back to chain of thought. A reward model
    (rm:PATH) judges in mode "reward": it scores each response alone, so no judge prompt is rendered. A constitution
    with `judge.mode: rating` judges in mode "rating": each response rated alone (rlaif.judging.rating)."""
    if getattr(engine, "kind", None) == "reward":
        return "reward"
    if getattr(constitution, "mode", "pairwise") == "rating":  # each response rated alone (rlaif.judging.rating)
        return "rating"
    if constitution.label_mode == "logprob" and not getattr(engine, "supports_logprobs", True):
        return "cot"
    return constitution.label_mode


def judge_settings(cfg, mode: str) -> dict:
    """Scoring settings that change a judgment's output in `mode` (they go into its cache key). The rationale's
    token budget matters only to chain of thought: in log-prob mode it changes nothing, so it re-judges nothing."""
    return {"labels": list(LABELS), **({"max_new_tokens": cfg.judge.max_new_tokens} if mode == "cot" else {})}


def parse_verdict(text: str) -> str | None:
    """The last non-empty line must be exactly a verdict line ("Verdict: A"/"Verdict: B"/"Verdict: tie"),
    optionally in bold. Anything else is unparseable: None, never a guess."""
    lines = [line for line in str(text).splitlines() if line.strip()]
    if not lines:
        return None
    m = VERDICT_RE.match(lines[-1])
    return m.group(1).upper() if m and m.group(1).upper() in LABELS else ("TIE" if m else None)


def make_jobs(pairs: list[dict], constitution: Constitution, seed: int, identity: str, mode: str,
              settings: dict, mitigate: bool = True) -> list[Job]:
    return list(iter_jobs(pairs, constitution, seed, identity, mode, settings, mitigate))


def iter_jobs(pairs: Iterable[dict], constitution: Constitution, seed: int, identity: str, mode: str,
              settings: dict, mitigate: bool = True) -> Iterator[Job]:
    """The jobs of each pair in turn (principles, then orders), rendered as they are asked for."""
    jobs = Renderer(constitution, identity, mode, settings, mitigate)
    for spec in job_specs(pairs, constitution, seed):
        yield jobs.render(*spec)


def job_specs(pairs: Iterable[dict], constitution: Constitution, seed: int, identical: list | None = None,
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


class Renderer:
    """Renders one stage's jobs: templates looked up once. `inputs` is a cheap hash of everything the rendered
    text and the key depend on, so a resumed run finds a job's key without rendering it."""

    def __init__(self, constitution: Constitution, identity: str, mode: str, settings: dict, mitigate: bool):
        # A judge that cannot give log-probs falls back to chain of thought, which needs the CoT template.
        template = constitution.template if mode == constitution.label_mode else DEFAULT_TEMPLATES[mode]
        where, dirs = str(constitution.path), constitution.template_dirs
        self.template = template
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
