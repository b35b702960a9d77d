"""Judgments from a reward model (`--judge-model rm:PATH`, mode "reward").

Each response is scored once, alone, with its prompt: r = reward(prompt, response). A pair's judgment is then
P(response_a is better) = sigmoid(r_a - r_b), Bradley-Terry's probability, the model the reward stage trains.
Neither response is ever shown first, so both orders give the same number and position bias is zero by
construction. The records keep the usual shape (one per pair, principle and order, the principles drawn as the
generative judge draws them), so scoring, preferences, position consistency (1.0) and prefer-first (0.5) need no
change. Rewards are cached per (model identity, prompt, response) in cache/rewards.jsonl beside the judgment
cache (the same append-only file with a SQLite index); only missing rewards are computed, batch_size at a time.
"""

from __future__ import annotations

import hashlib
import json
import math
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator

from tqdm import tqdm

from rlaif.judging.constitution import Constitution
from rlaif.judging.jobs import job_specs
from rlaif.judging.scores import principle_hash, verdict_of

REWARD_VERSION = "reward-v1"  # in every key


def reward_key(identity: str, prompt: str, response: str) -> str:
    return hashlib.sha256(json.dumps([REWARD_VERSION, identity, prompt, response])
                          .encode("utf-8", "surrogatepass")).hexdigest()


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def cache_file(judgment_cache: Path) -> Path:
    """cache/rewards.jsonl beside cache/judgments.jsonl."""
    return Path(judgment_cache).with_name("rewards.jsonl")


def reward_walk(engine, pairs: Iterable[dict], constitution: Constitution, seed: int, cache, batch_size: int,
                progress: bool, counts: dict) -> Iterator[dict]:
    """The judgments of a reward model, in job order (pairs, their drawn principles, both orders). `cache` has
    JudgmentCache's get_many/add; `counts` gets judgments, judged (those whose pair needed a reward computed
    now), reused, parse_failures (0), identical, rewards_scored and rewards_reused."""
    identity = engine.identity
    total = judged = scored = looked_up = 0
    identical = [0]
    per_pair = 2 * (len(constitution.principles) if constitution.principles_per_comparison == "all"
                    else min(constitution.principles_per_comparison, len(constitution.principles)))
    bar = tqdm(total=len(pairs) * per_pair if hasattr(pairs, "__len__") else None, desc="judge (reward model)",
               unit="judgment", disable=not progress)

    def skip():
        if bar.total is not None:
            bar.total -= per_pair
            bar.refresh()

    try:
        specs = job_specs(pairs, constitution, seed, identical, skip)
        while chunk := list(islice(specs, 128)):  # small: the bar moves as rewards come
            keyed, texts, last = [], {}, None
            for spec in chunk:
                pair = spec[0]
                if pair is not last:
                    ka = reward_key(identity, pair["prompt"], pair["response_a"])
                    kb = reward_key(identity, pair["prompt"], pair["response_b"])
                    texts.setdefault(ka, (pair["prompt"], pair["response_a"]))
                    texts.setdefault(kb, (pair["prompt"], pair["response_b"]))
                    last = pair
                keyed.append((spec, ka, kb))
            rewards = {k: r["reward"] for k, r in cache.get_many(list(texts)).items()}
            looked_up += len(texts)
            missing = [k for k in texts if k not in rewards]
            fresh = set(missing)
            for i in range(0, len(missing), batch_size):
                part = missing[i:i + batch_size]
                values = engine.rewards([texts[k][0] for k in part], [texts[k][1] for k in part])
                records = [{"key": k, "reward": float(v), "judge": identity} for k, v in zip(part, values)]
                cache.add(records)
                rewards.update((r["key"], r["reward"]) for r in records)
                scored += len(records)
            for (pair, principle, order, weight), ka, kb in keyed:
                p_a = sigmoid(rewards[ka] - rewards[kb])
                total += 1
                judged += ka in fresh or kb in fresh
                key = hashlib.sha256(f"{REWARD_VERSION}:{ka}:{kb}:{order}".encode()).hexdigest()
                bar.update()
                yield {"pair_id": pair["pair_id"], "principle_id": principle.id, "order": order, "p_a": p_a,
                       "verdict": verdict_of(p_a), "raw_output": {"reward_a": rewards[ka], "reward_b": rewards[kb]},
                       "judge": identity, "key": key, "mode": "reward", "principle_hash": principle_hash(principle),
                       "weight": weight}
    finally:
        bar.close()
    counts.update({"judgments": total, "judged": judged, "reused": total - judged, "parse_failures": 0,
                   "identical": identical[0], "rewards_scored": scored, "rewards_reused": looked_up - scored})
