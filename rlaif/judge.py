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
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from rlaif.constitution import Constitution, Principle
from rlaif.engines.base import label_probability
from rlaif.records import Judgment, to_dict
from rlaif.store import append_jsonl, read_jsonl
from rlaif.templates import render

LABELS = ("A", "B")
DEFAULT_TEMPLATES = {"logprob": "judge_logprob.j2", "cot": "judge_cot.j2"}
VERDICT_TEMPLATE = "_cot_verdict.j2"  # the turn after a CoT rationale, scored by log-probs
CACHE_VERSION = "p_first-v2"  # in every key: caches written before the p_first records are not reused
PARSED = {"A": 1.0, "B": 0.0, "TIE": 0.5}  # a parsed verdict line as P(shown-first is better)
VERDICT_RE = re.compile(r"^\s*\**\s*verdict\s*\**\s*:\s*\**\s*(A|B|tie)\s*\**\s*\.?\s*$", re.IGNORECASE)


@dataclass
class Job:
    pair_id: str
    principle: Principle
    order: str
    text: str
    key: str
    verdict_text: str = ""  # chain of thought: the follow-up turn whose first reply token is scored


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
    return hashlib.sha256(principle.text.encode()).hexdigest()[:12]


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
    # A judge that cannot give log-probs falls back to chain of thought, which needs the CoT template.
    template = constitution.template if mode == constitution.label_mode else DEFAULT_TEMPLATES[mode]
    jobs = []
    for pair in pairs:
        if is_identical(pair):
            continue
        for principle, _ in constitution.sample(pair["pair_id"], seed):
            for order in ("ab", "ba"):
                a, b = (pair["response_a"], pair["response_b"]) if order == "ab" else (pair["response_b"], pair["response_a"])
                text = render(template, str(constitution.path), mitigate, constitution.template_dirs, principle=principle,
                              prompt=pair["prompt"], response_a=a, response_b=b)
                verdict = render(VERDICT_TEMPLATE, str(constitution.path), mitigate, constitution.template_dirs,
                                 principle=principle) if mode == "cot" else ""
                identity_of = [CACHE_VERSION, text, identity, mode, settings] + ([verdict] if verdict else [])
                key = hashlib.sha256(json.dumps(identity_of, sort_keys=True).encode()).hexdigest()
                jobs.append(Job(pair["pair_id"], principle, order, text, key, verdict))
    return jobs


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
    """The judgment of `job` from a cache record: P(shown first) turned into P(response_a) by the job's order."""
    p_a = to_original(cached["p_first"], job.order)
    return to_dict(Judgment(job.pair_id, job.principle.id, job.order, p_a, verdict_of(p_a), cached["raw_output"],
                            cached["judge"], job.key, cached["mode"], principle_hash(job.principle)))


def run_judge(engine, pairs: list[dict], constitution: Constitution, *, seed: int, mode: str, settings: dict,
              cache_path: Path | None = None, batch_size: int | None = None, mitigate: bool = True,
              progress: bool = True) -> tuple[list[dict], dict]:
    """Judge every pair; reuse cached judgments by key. Returns (judgments in job order, counts).
    Pairs of identical responses are skipped and counted (`identical`). batch_size None: the engine's own."""
    batch_size = batch_size or engine.batch_size
    jobs = make_jobs(pairs, constitution, seed, engine.identity, mode, settings, mitigate)
    cache = {r["key"]: r for r in read_jsonl(cache_path, repair=True)} if cache_path else {}
    todo = [j for j in dict((j.key, j) for j in jobs if j.key not in cache).values()]
    bar = tqdm(total=len(todo), desc="judge", unit="judgment", disable=not progress or not todo)
    for start in range(0, len(todo), batch_size):
        records = score_jobs(engine, todo[start:start + batch_size], mode, settings)
        if cache_path:
            append_jsonl(cache_path, records)
        cache.update((r["key"], r) for r in records)
        bar.update(len(records))
    bar.close()
    out = [oriented(j, cache[j.key]) for j in jobs]
    counts = {"judgments": len(jobs), "judged": len(todo), "reused": len(jobs) - len(todo),
              "parse_failures": sum(r["verdict"] is None for r in out),
              "identical": sum(is_identical(p) for p in pairs)}
    return out, counts


def pair_scores(pairs: list[dict], judgments: list[dict], constitution: Constitution, seed: int,
                orders: tuple = ("ab", "ba")) -> dict:
    """pair_id -> score in [0, 1] (P(response_a is better)): mean over `orders`, then the weighted mean over
    the pair's principles. None when no judgment of the pair parsed. orders=("ab",) gives single-order scores.
    A pair of identical responses scores 0.5 (a tie by construction; it is never judged)."""
    by = {}
    for r in judgments:
        if r["p_a"] is not None and r["order"] in orders:
            by.setdefault((r["pair_id"], r["principle_id"]), []).append(r["p_a"])
    scores = {}
    for pair in pairs:
        if is_identical(pair):
            scores[pair["pair_id"]] = 0.5
            continue
        num = den = 0.0
        for principle, weight in constitution.sample(pair["pair_id"], seed):
            ps = by.get((pair["pair_id"], principle.id))
            if ps:
                num += weight * sum(ps) / len(ps)
                den += weight
        scores[pair["pair_id"]] = num / den if den else None
    return scores
