"""Judge stage: pairs x principles x both orders -> judgments, streamed through the judgment cache.

The cache holds what the judge saw: for one rendered prompt, P(the response shown first is better). Each job
orients that to P(response_a is better) by its own order when it reads it, so two jobs that render the same
text in opposite orders (a pair of identical responses, another seed's draw) can never inherit a flipped
verdict. A pair whose two responses are the same text is never judged: it is a tie by construction.
"""

from __future__ import annotations

from collections import deque
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator

from tqdm import tqdm

from rlaif.engines.base import LabelClash
from rlaif.errors import RlaifError
from rlaif.judging.cache import JudgmentCache
from rlaif.judging.constitution import Constitution
from rlaif.judging.jobs import Job, Renderer, job_specs, oriented, score_jobs


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
    appended to the cache before anything after them is yielded. `counts` is filled in at the end.

    An engine that scores elsewhere (`remote`: --executor ray) first gets every batch this walk would score, in
    the same order and with the same members, side by side on its replicas (`_prefill`); the walk then finds each
    judgment in the cache.

    mode "reward" (a reward model, rm:PATH, always local): no prompt is rendered; rlaif.judging.rewards scores each
    response once, caches the rewards in rewards.jsonl beside cache_path, and gives p_a = sigmoid(r_a - r_b).

    mode "rating" (`judge.mode: rating`): rlaif.judging.rating rates each response alone against each drawn principle
    (1 to 9 from the label log-probs), caches the ratings in cache_path, and gives p_a = P(R_a > R_b) + P(tie) / 2."""
    batch_size = batch_size or engine.batch_size
    counts = {} if counts is None else counts
    if mode == "reward":  # a reward model (rm:PATH): each response scored once, cached in cache/rewards.jsonl
        from rlaif.judging.rewards import cache_file, reward_walk

        cache = JudgmentCache(cache_file(cache_path)) if cache_path else _MemoryCache()
        try:
            yield from reward_walk(engine, pairs, constitution, seed, cache, batch_size, progress, counts)
        finally:
            cache.close()
        return
    cache = JudgmentCache(cache_path) if cache_path else _MemoryCache()
    if mode == "rating":  # judge.mode rating: each response rated alone, 1 to 9, ratings in the judgment cache
        from rlaif.judging.rating import rating_walk

        try:
            yield from rating_walk(engine, pairs, constitution, seed, cache, batch_size, mitigate, progress, counts)
        finally:
            cache.close()
        return
    try:
        scored = (_prefill(engine, pairs, constitution, seed, mode, settings, cache, batch_size, mitigate, progress)
                  if getattr(engine, "remote", False) else None)
        yield from _walk(engine, pairs, constitution, seed, mode, settings, cache, batch_size, mitigate,
                         progress and scored is None, counts)
    finally:
        cache.close()
    if scored is not None:
        counts.update(judged=scored, reused=counts["judgments"] - scored)


def _walk(engine, pairs, constitution, seed, mode, settings, cache, batch_size, mitigate, progress, counts,
          score=score_jobs) -> Iterator[dict]:
    """The judge stage's walk over the jobs: `score(engine, jobs, mode, settings)` scores each batch of missing
    ones (distinct keys) and the records go into `cache`."""
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
        try:
            records = score(engine, list(todo.values()), mode, settings)
        except LabelClash as e:  # the labels come from the judge template's instruction: name it
            raise RlaifError(e.what, f"judge template {maker.template} ({constitution.path})", e.fix) from None
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

        maker = Renderer(constitution, engine.identity, mode, settings, mitigate)
        specs = job_specs(pairs, constitution, seed, identical, skip)
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
    counts.update({"judgments": total, "judged": judged, "reused": total - judged, "parse_failures": failures,
                   "identical": identical[0]})


def _prefill(engine, pairs, constitution, seed, mode, settings, cache, batch_size, mitigate, progress) -> int:
    """Score, on a remote engine's replicas, every batch the walk would score here: a first walk plans them (the
    cache read, nothing scored or written, only the planned keys kept), then engine.map_blocks scores them side by
    side while a replay of that plan, which reads no cache, makes the batches as the replicas take them; each
    batch's records are appended to the cache as it arrives, in plan order. Returns the number of records."""
    plan = _Planned(cache)
    sizes = []

    def count(engine, jobs, mode, settings):
        sizes.append(len(jobs))
        return _stand_ins(engine, jobs, mode)

    for _ in _walk(engine, pairs, constitution, seed, mode, settings, plan, batch_size, mitigate, False, {}, count):
        pass
    replay = _Replay(plan.keys)
    del plan

    class Blocks:  # the planned batches, made again as they are taken (map_blocks reads its length first)
        def __len__(self):
            return len(sizes)

        def __iter__(self):
            made = []

            def note(engine, jobs, mode, settings):
                made.append([{"key": j.key, "text": j.text, "verdict_text": j.verdict_text} for j in jobs])
                return _stand_ins(engine, jobs, mode)

            for _ in _walk(engine, pairs, constitution, seed, mode, settings, replay, batch_size, mitigate, False, {},
                           note):
                yield from made
                made.clear()
            yield from made

    n = 0
    bar = tqdm(total=sum(sizes), desc=f"judge ({engine.stats.get('replicas', 1)} replicas)", unit="judgment",
               disable=not progress)
    try:
        for records in engine.map_blocks(score_block, Blocks(), {"mode": mode, "settings": settings}):
            cache.add(records)
            n += len(records)
            bar.update(len(records))
    except LabelClash as e:
        template = Renderer(constitution, engine.identity, mode, settings, mitigate).template
        raise RlaifError(e.what, f"judge template {template} ({constitution.path})", e.fix) from None
    finally:
        bar.close()
    return n


def score_block(engine, block: list[dict], params: dict) -> list[dict]:
    """Cache records for one planned batch ({key, text, verdict_text}): score_jobs where the engine is."""
    jobs = [Job("", None, "", b["text"], b["key"], b["verdict_text"]) for b in block]
    return score_jobs(engine, jobs, params["mode"], params["settings"])


class _Planned:
    """A cache as a plan sees it: the real one's records, plus the keys the plan has already put in a batch."""

    def __init__(self, cache):
        self.cache, self.keys = cache, set()
        self.remembers = cache.remembers

    def get_many(self, keys: Iterable[str]) -> dict:
        keys = list(keys)
        found = self.cache.get_many(keys)
        found.update((k, _PLANNED) for k in keys if k not in found and bytes.fromhex(k) in self.keys)
        return found

    def records_of(self, inputs):
        return self.cache.records_of(inputs)

    def remember(self, rendered) -> None:  # the real walk, after the scoring, remembers
        pass

    def add(self, records: list[dict]) -> None:
        self.keys.update(bytes.fromhex(r["key"]) for r in records)


_PLANNED = {"p_first": 0.5, "raw_output": None, "judge": "", "mode": ""}


class _Replay:
    """A plan's decisions again, with no cache read: a key is missing while the plan scored it and this replay has
    not yet put it in a batch; every other key is found."""

    remembers = False

    def __init__(self, keys: set[bytes]):
        self.left = set(keys)

    def get_many(self, keys: Iterable[str]) -> dict:
        return {k: _PLANNED for k in keys if bytes.fromhex(k) not in self.left}

    def add(self, records: list[dict]) -> None:
        self.left.difference_update(bytes.fromhex(r["key"]) for r in records)


def _stand_ins(engine, jobs, mode) -> list[dict]:
    """What a plan's walk files for the jobs it would score (it scores none)."""
    return [{"key": j.key, "p_first": 0.5, "raw_output": None, "judge": engine.identity, "mode": mode} for j in jobs]


def _keyed(maker: Renderer, chunk: list[tuple], cache) -> tuple[list[Job], dict]:
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
