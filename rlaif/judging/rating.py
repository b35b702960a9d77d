"""Pointwise rating (constitution `judge.mode: rating`): one response judged alone against one principle.

The judge reads a rating prompt (prompts/rating.j2: the principle, the user message and one response) and its
next-token log-probs over the template's labels give a distribution over the scale, as d-RLAIF (Lee et al.
2023) reads it; nothing is parsed from generated text. With labels L_1..L_K (worst first; "1".."9" unless the
template declares others with a top-level `{% set labels = [...] %}`), p_k = P(L_k) / sum_j P(L_j) and

    rating = (sum_k k p_k - 1) / (K - 1)   in [0, 1].

Each label must be one token of the judge's tokenizer: "10" is two ("1", "0") in SmolLM2's, Llama 3's and Qwen's
tokenizers, so the default scale is 1 to 9, not the paper's 1 to 10.

A pair's judgment is P(response_a better) = P(R_a > R_b) + 0.5 P(R_a = R_b), the two label distributions taken as
independent. Neither response is ever shown beside the other, so both orders give the same number and position
bias is zero by construction; the judgment rows keep the usual shape (one per pair, drawn principle and order), so
scoring and preferences need no change.

Ratings are cached in the judgment cache like pairwise verdicts: a record {key, rating, raw_output (the labels'
log-probs), judge, mode: "rating"}, its key a hash of the rendered prompt, the judge's identity and the settings
that change the output (the labels). Rater is the same judge as an online reward (`--reward judge`).
"""

from __future__ import annotations

import hashlib
import json
import math
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from tqdm import tqdm

from rlaif.engines.base import LabelClash
from rlaif.errors import RlaifError
from rlaif.judging.constitution import Constitution, Principle
from rlaif.judging.scores import is_identical, principle_hash, verdict_of
from rlaif.judging.templates import renderer, slotted, template_labels

RATING_VERSION = "rating-v1"  # in every key
DEFAULT_TEMPLATE = "rating.j2"
SLOTS = ("prompt", "response")
CHUNK = 64  # pairs rendered and looked up together in the judge stage


# ---------------------------------------------------------------- the scale

def distribution(logprobs: dict | None, labels: Sequence[str]) -> list[float] | None:
    """P(label k) renormalised over the labels present; a missing label (outside an endpoint's top log-probs)
    gets 0. None when no label is present."""
    if not logprobs:
        return None
    values = [logprobs.get(label) for label in labels]
    present = [v for v in values if v is not None]
    if not present:
        return None
    m = max(present)
    weights = [0.0 if v is None else math.exp(v - m) for v in values]
    total = sum(weights)
    return [w / total for w in weights]


def rating_of(probs: Sequence[float] | None) -> float | None:
    """The probability-weighted mean of the scale 1..K, normalised to [0, 1]."""
    if probs is None:
        return None
    k = len(probs)
    return (sum((i + 1) * p for i, p in enumerate(probs)) - 1) / (k - 1)


def p_better(pa: Sequence[float] | None, pb: Sequence[float] | None) -> float | None:
    """P(R_a > R_b) + 0.5 P(R_a = R_b) for independent ratings with distributions pa and pb over the same scale."""
    if pa is None or pb is None:
        return None
    below, win, tie = 0.0, 0.0, 0.0  # below: P(R_b < level i)
    for a, b in zip(pa, pb):
        win += a * below
        tie += a * b
        below += b
    return min(1.0, max(0.0, win + 0.5 * tie))


# ---------------------------------------------------------------- the labels

def check_labels(tok, labels: Sequence[str], template: str, where: str) -> None:
    """Each label must be one token of the judge's tokenizer (its probability is read from one next-token
    distribution). An RlaifError naming the template and the fix otherwise."""
    for label in labels:
        ids = tok.encode(label, add_special_tokens=False)
        if len(ids) != 1:
            pieces = ", ".join(repr(tok.decode([i])) for i in ids)
            raise RlaifError(f"the rating label {label!r} is {len(ids)} tokens ({pieces}) in the tokenizer "
                             f"{tok.name_or_path} ({type(tok).__name__}); each rating label must be one token",
                             f"judge template {template} ({where})",
                             "declare single-token labels in the template, e.g. {% set labels = "
                             '["1", "2", "3", "4", "5", "6", "7", "8", "9"] %} (a 1-9 scale: "10" is two tokens)')


def check_judge_labels(model: str, constitution: Constitution) -> None:
    """Before anything is written: the rating template's labels against the judge's tokenizer (loaded alone, no
    weights). Endpoints and reward models have no tokenizer here: skipped."""
    if model.startswith(("openai:", "rm:")):
        return
    from transformers import AutoTokenizer

    from rlaif.models import require

    prompts = RatingPrompts(constitution, "")
    tok = AutoTokenizer.from_pretrained(require(model)[0])
    check_labels(tok, prompts.labels, prompts.template, str(constitution.path))


# ---------------------------------------------------------------- prompts and keys

class RatingPrompts:
    """Renders rating prompts and their cache keys. The constitution's template in rating mode; for a pairwise
    constitution (a Rater on it), rating.j2 with its principles."""

    def __init__(self, constitution: Constitution, identity: str, mitigate: bool = True, settings: dict | None = None):
        self.template = constitution.template if constitution.mode == "rating" else DEFAULT_TEMPLATE
        where, dirs = str(constitution.path), constitution.template_dirs
        self.where = where
        self.labels = template_labels(self.template, dirs, where)
        self.full = renderer(self.template, where, mitigate, dirs)
        self.slotted = slotted(self.template, SLOTS, where, mitigate, dirs)
        self.identity = identity
        self.settings = {**(settings or {}), "labels": list(self.labels)}

    def render(self, principle: Principle, prompt: str, response: str) -> tuple[str, str]:
        """(text, key) of one rating prompt."""
        variables = {"principle": principle, "prompt": prompt, "response": response}
        text = self.slotted(principle.id, **variables) if self.slotted else self.full(**variables)
        key = hashlib.sha256(json.dumps([RATING_VERSION, text, self.identity, "rating", self.settings], sort_keys=True)
                             .encode("utf-8", "surrogatepass")).hexdigest()
        return text, key


def score_ratings(engine, items: list[tuple[str, str]], prompts: RatingPrompts) -> list[dict]:
    """Cache records for (key, text) items: {key, rating, raw_output (label -> log-prob), judge, mode}."""
    convs = [[{"role": "user", "content": text}] for _, text in items]
    try:
        outputs = engine.label_logprobs(convs, list(prompts.labels))
    except LabelClash as e:  # the labels come from the rating template: name it
        raise RlaifError(e.what, f"judge template {prompts.template} ({prompts.where})", e.fix) from None
    return [{"key": key, "rating": rating_of(distribution(out, prompts.labels)), "raw_output": out,
             "judge": engine.identity, "mode": "rating"} for (key, _), out in zip(items, outputs)]


def _check_engine(engine, prompts: RatingPrompts) -> None:
    if not getattr(engine, "supports_logprobs", True):
        raise RlaifError(f"rating mode reads the labels' log-probs, which {engine.identity} does not give",
                         f"judge template {prompts.template} ({prompts.where})",
                         "use a local judge model or an endpoint that returns log-probs")
    tok = getattr(engine, "tok", None)
    if tok is not None:
        check_labels(tok, prompts.labels, prompts.template, prompts.where)


class _MemoryCache:
    remembers = False

    def __init__(self):
        self.records = {}

    def get_many(self, keys: Iterable[str]) -> dict:
        return {k: self.records[k] for k in keys if k in self.records}

    def add(self, records: list[dict]) -> None:
        self.records.update((r["key"], r) for r in records)

    def close(self) -> None:
        pass


def _fill(engine, cache, prompts: RatingPrompts, texts: dict, batch_size: int) -> tuple[dict, set]:
    """key -> record for every key of `texts` (key -> text): the cache's, and the missing ones scored batch_size
    at a time and appended. Returns (records, the keys scored now)."""
    found = cache.get_many(list(texts))
    missing = [k for k in texts if k not in found]
    for i in range(0, len(missing), batch_size):
        part = missing[i:i + batch_size]
        records = score_ratings(engine, [(k, texts[k]) for k in part], prompts)
        cache.add(records)
        found.update((r["key"], r) for r in records)
    return found, set(missing)


# ---------------------------------------------------------------- the online reward

class Rater:
    """The rating judge as a reward: rate(items) gives each (prompt, response, draw_id) the weighted mean rating in
    [0, 1] over the principles constitution.sample(draw_id, seed) draws (weighted as pair scores are). Every rating
    goes through the judgment cache (cache_path; None: in memory only), kept open between calls until close().
    `calls` counts ratings the judge computed, `cache_hits` those found in the cache (or earlier in the same call).
    Works with any constitution: a pairwise one is rated with rating.j2 (looked up beside it first)."""

    def __init__(self, engine, constitution: Constitution, *, seed: int, cache_path: Path | str | None = None,
                 settings: dict | None = None, batch_size: int | None = None, mitigate: bool = True):
        self.engine, self.constitution, self.seed = engine, constitution, seed
        self.prompts = RatingPrompts(constitution, engine.identity, mitigate, settings)
        _check_engine(engine, self.prompts)
        self.batch_size = batch_size or getattr(engine, "batch_size", 32)
        if cache_path:
            from rlaif.judging.cache import JudgmentCache

            self.cache = JudgmentCache(Path(cache_path))
        else:
            self.cache = _MemoryCache()
        self.calls = self.cache_hits = 0

    def ratings(self, items: Sequence[tuple[str, str, str]]) -> list[list[tuple[str, float, float | None]]]:
        """For each item, (principle id, weight, rating or None) for each principle drawn for it."""
        texts, keyed = {}, []
        for prompt, response, draw_id in items:
            row = []
            for principle, weight in self.constitution.sample(draw_id, self.seed):
                text, key = self.prompts.render(principle, prompt, response)
                texts.setdefault(key, text)
                row.append((principle.id, float(weight), key))
            keyed.append(row)
        found, fresh = _fill(self.engine, self.cache, self.prompts, texts, self.batch_size)
        self.calls += len(fresh)
        self.cache_hits += sum(len(row) for row in keyed) - len(fresh)
        return [[(pid, w, found[key]["rating"]) for pid, w, key in row] for row in keyed]

    def rate(self, items: Sequence[tuple[str, str, str]]) -> list[float]:
        """One reward per item: the weighted mean of its ratings; 0.5 if none could be read."""
        out = []
        for row in self.ratings(items):
            scored = [(w, r) for _, w, r in row if r is not None]
            den = sum(w for w, _ in scored)
            out.append(sum(w * r for w, r in scored) / den if den else 0.5)
        return out

    def close(self) -> None:
        self.cache.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------- the judge stage

def judgment_key(key_a: str, key_b: str, order: str) -> str:
    return hashlib.sha256(f"{RATING_VERSION}:{key_a}:{key_b}:{order}".encode()).hexdigest()


def pair_judgment(pair: dict, principle: Principle, order: str, weight: float, ka: str, kb: str, ra: dict, rb: dict,
                  labels: Sequence[str]) -> dict:
    """A judgment row from the two rating records of a pair (the same p_a in both orders)."""
    p_a = p_better(distribution(ra["raw_output"], labels), distribution(rb["raw_output"], labels))
    return {"pair_id": pair["pair_id"], "principle_id": principle.id, "order": order, "p_a": p_a,
            "verdict": verdict_of(p_a),
            "raw_output": {"rating_a": ra["rating"], "rating_b": rb["rating"], "logprobs_a": ra["raw_output"],
                           "logprobs_b": rb["raw_output"]},
            "judge": ra["judge"], "key": judgment_key(ka, kb, order), "mode": "rating",
            "principle_hash": principle_hash(principle), "weight": weight}


def rating_walk(engine, pairs: Iterable[dict], constitution: Constitution, seed: int, cache, batch_size: int,
                mitigate: bool, progress: bool, counts: dict) -> Iterator[dict]:
    """The judge stage in rating mode: judgments in job order (pairs, their drawn principles, both orders), each
    response rated once per principle. `counts` gets judgments, judged (those whose pair needed a rating computed
    now), reused, parse_failures (p_a None), identical, ratings_scored and ratings_reused."""
    prompts = RatingPrompts(constitution, engine.identity, mitigate)
    _check_engine(engine, prompts)
    total = judged = failures = scored = looked_up = identical = 0
    per_pair = 2 * (len(constitution.principles) if constitution.principles_per_comparison == "all"
                    else min(constitution.principles_per_comparison, len(constitution.principles)))
    bar = tqdm(total=len(pairs) * per_pair if hasattr(pairs, "__len__") else None, desc="judge (rating)",
               unit="judgment", disable=not progress)
    it = iter(pairs)
    try:
        while chunk := list(islice(it, CHUNK)):
            texts, rows = {}, []
            for pair in chunk:
                if is_identical(pair):
                    identical += 1
                    if bar.total is not None:
                        bar.total -= per_pair
                        bar.refresh()
                    continue
                for principle, weight in constitution.sample(pair["pair_id"], seed):
                    keys = []
                    for response in (pair["response_a"], pair["response_b"]):
                        text, key = prompts.render(principle, pair["prompt"], response)
                        texts.setdefault(key, text)
                        keys.append(key)
                    rows.append((pair, principle, float(weight), *keys))
            found, fresh = _fill(engine, cache, prompts, texts, batch_size)
            looked_up += len(texts)
            scored += len(fresh)
            for pair, principle, weight, ka, kb in rows:
                for order in ("ab", "ba"):
                    out = pair_judgment(pair, principle, order, weight, ka, kb, found[ka], found[kb], prompts.labels)
                    total += 1
                    judged += ka in fresh or kb in fresh
                    failures += out["p_a"] is None
                    bar.update()
                    yield out
    finally:
        bar.close()
    counts.update({"judgments": total, "judged": judged, "reused": total - judged, "parse_failures": failures,
                   "identical": identical, "ratings_scored": scored, "ratings_reused": looked_up - scored})


def dry_run_prompts(pairs: Iterable[dict], constitution: Constitution, seed: int) -> Iterator[tuple]:
    """(pair_id, principle_id, "a" or "b", text) of the rating prompts the judge stage would send."""
    prompts = RatingPrompts(constitution, "dry-run")
    for pair in pairs:
        if is_identical(pair):
            continue
        for principle, _ in constitution.sample(pair["pair_id"], seed):
            for side in ("a", "b"):
                yield pair["pair_id"], principle.id, side, prompts.render(principle, pair["prompt"],
                                                                          pair[f"response_{side}"])[0]
