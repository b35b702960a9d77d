"""Revise stage: Constitutional AI's critique-and-revision phase (Bai et al. 2022), and what it feeds.

For each training prompt the policy answers; then, for each of `rounds` rounds, a principle with critique and
revision requests is drawn (seeded by the run seed and the pair id, weighted, as the judge draws), the model
critiques its current answer as a follow-up turn, and rewrites it after the critique. The principle's few-shot
examples, if any, go before the conversation as a revision demonstration (its `worse` answer, the revision
request, its `better` answer). Each round sees the prompt, the current answer and the requests; earlier rounds
are not replayed, so prompts stay short for small models.

Every sample has its own seed, from the run seed, the prompt's pair id and the step (initial, or the round and
critique/revision), and engines sample each conversation from its own seed, as in generate: a row never depends
on the batch it rode in, so a resumed run (even after kill -9) writes what an uninterrupted one would.
revisions.jsonl is appended batch by batch.

Also here: revision_win_rate (the judge, both orders, final vs initial) and the CAI preference rows
(--pairs-from revisions: chosen = final, rejected = initial).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

from tqdm import tqdm

from rlaif.errors import RlaifError
from rlaif.engines.base import request_seed
from rlaif.judging.scores import win_rate
from rlaif.stages.generate import pair_id
from rlaif.store.files import append_jsonl, atomic_write_text, jsonl_text, read_jsonl


def check(constitution) -> None:
    """Fail before any model loads when no principle can drive a revision."""
    if not any(p.can_revise for p in constitution.principles):
        raise RlaifError("no principle has `critique` and `revision` requests, so the revise stage has nothing to ask",
                         str(constitution.path), "add `critique:` and `revision:` to at least one principle, or drop "
                         "revise from --stages")


def few_shot(principle) -> list[dict]:
    turns = []
    for ex in principle.examples:
        turns += [{"role": "user", "content": ex["prompt"]}, {"role": "assistant", "content": ex["worse"]},
                  {"role": "user", "content": principle.revision}, {"role": "assistant", "content": ex["better"]}]
    return turns


def _fingerprint(constitution) -> str:
    """What of the constitution changes revisions: the revising principles, their requests, weights and examples."""
    parts = [(p.id, p.critique, p.revision, p.weight, list(p.examples)) for p in constitution.principles if p.can_revise]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def run_revise(engine, prompts: list[str], out: Path, constitution, *, seed: int, rounds: int, batch_size: int | None,
               max_new_tokens: int, temperature: float, top_p: float, progress: bool = True) -> dict:
    """Append the missing rows to `out` (revisions.jsonl). Returns counts."""
    batch_size = batch_size or engine.batch_size
    settings = {"seed": seed, "rounds": rounds, "max_new_tokens": max_new_tokens, "temperature": temperature,
                "top_p": top_p, "principles": _fingerprint(constitution)}
    done = {}
    for r in read_jsonl(out, repair=True):
        if r.get("generator") != engine.identity or r.get("settings") != settings:
            raise RlaifError("revisions.jsonl was written with another model, sampling settings or critique/revision "
                             "requests", str(out), "use a new --output-dir, or the original --policy-model/--seed/"
                             "--max-new-tokens/--revision-rounds and constitution")
        done[r["pair_id"]] = r
    ids = [pair_id(i, p) for i, p in enumerate(prompts)]
    todo = sum(i not in done for i in ids)
    bar = tqdm(total=len(ids), initial=len(ids) - todo, desc="revise", unit="prompt", disable=not progress)
    params = {"seed": seed, "rounds": rounds, "constitution": constitution, "settings": settings,
              "sampling": dict(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)}
    blocks = ([{"prompt": prompts[i], "pair_id": ids[i]} for i in range(start, min(start + batch_size, len(ids)))
               if ids[i] not in done] for start in range(0, len(ids), batch_size))
    for records in engine.map_blocks(revise_block, (b for b in blocks if b), params):
        append_jsonl(out, records)
        bar.update(len(records))
    bar.close()
    rows = read_jsonl(out)
    by_id = {r["pair_id"]: r for r in rows}
    kept = [by_id[i] for i in ids]
    return {"prompts": len(ids), "revised_now": todo, "reused": len(ids) - todo,
            "revised": sum(r["revised"] for r in kept), "unrevised": sum(not r["revised"] for r in kept)}


def revise_block(engine, block: list[dict], params: dict) -> list[dict]:
    """The revisions.jsonl rows of one batch of prompts ({prompt, pair_id}): the answer, then each round's critique
    and revision. Runs where the engine is: in this process, or on a Ray replica (--executor ray)."""
    seed, rounds, constitution, kw = params["seed"], params["rounds"], params["constitution"], params["sampling"]
    ids = [b["pair_id"] for b in block]
    users = [{"role": "user", "content": b["prompt"]} for b in block]
    initial = engine.generate([[u] for u in users], seed=[request_seed(seed, i, "initial") for i in ids], **kw)
    current, history = list(initial), [[] for _ in block]
    drawn = [constitution.revisers(i, seed, rounds) for i in ids]
    for r in range(rounds):
        ps = [d[r] for d in drawn]
        asks = [few_shot(p) + [u, {"role": "assistant", "content": c}, {"role": "user", "content": p.critique}]
                for p, u, c in zip(ps, users, current)]
        critiques = engine.generate(asks, seed=[request_seed(seed, i, r, "critique") for i in ids], **kw)
        asks = [a + [{"role": "assistant", "content": c}, {"role": "user", "content": p.revision}]
                for a, c, p in zip(asks, critiques, ps)]
        revisions = engine.generate(asks, seed=[request_seed(seed, i, r, "revision") for i in ids], **kw)
        for k, (p, c, v) in enumerate(zip(ps, critiques, revisions)):
            history[k].append({"principle_id": p.id, "critique": c, "revision": v})
            if v.strip():  # an empty revision keeps the answer it was asked to revise
                current[k] = v
    return [{"pair_id": i, "prompt": b["prompt"], "initial": a, "rounds": h, "final": f,
             "revised": bool(f.strip()) and f.strip() != a.strip(), "generator": engine.identity,
             "settings": params["settings"]}
            for i, b, a, h, f in zip(ids, block, initial, history, current)]


def as_pairs(rows: list[dict]) -> list[dict]:
    """Revised rows as judge pairs: response_a = final revision, response_b = initial answer."""
    return [{"pair_id": f"rev-{r['pair_id']}", "prompt": r["prompt"], "response_a": r["final"],
             "response_b": r["initial"]} for r in rows if r["revised"]]


def judge_revisions(cfg, constitution, run, pool, rows: list[dict]) -> tuple[dict, dict]:
    """revision_win_rate: the judge's preference for the final revision over the initial answer, scored in both
    orders, over all prompts. An unrevised row (final == initial) is a tie by definition and is not judged.
    Returns (pair_id -> score, info); the judgments go to revision_judgments.jsonl and the shared cache."""
    from rlaif.judging.jobs import judge_mode, judge_settings
    from rlaif.judging.scores import pair_scores
    from rlaif.stages.judge import run_judge

    pairs = as_pairs(rows)
    scores, judgments, mode = {}, [], None
    if pairs:
        judge = pool.replicated(cfg.judge.model, cfg.judge.base_url, judge=True)
        mode = judge_mode(constitution, judge)
        run.judgment_cache.parent.mkdir(parents=True, exist_ok=True)
        judgments, _ = run_judge(judge, pairs, constitution, seed=cfg.seed, mode=mode, settings=judge_settings(cfg, mode),
                                 cache_path=run.judgment_cache, batch_size=cfg.judge.batch_size)
        scores = pair_scores(pairs, judgments, constitution)
    atomic_write_text(run.root / "revision_judgments.jsonl", jsonl_text(judgments))
    all_scores = [scores.get(f"rev-{r['pair_id']}") if r["revised"] else 0.5 for r in rows]
    rate, counts = win_rate(all_scores)
    revised = [scores.get(p["pair_id"]) for p in pairs]
    return scores, {"revision_win_rate": rate, **counts, "n_revised": len(pairs), "mode": mode,
                    "revised_only_win_rate": win_rate(revised)[0],
                    "note": "final revision vs initial answer, judged in both orders; an unrevised prompt is a tie"}


def run_stage(cfg, constitution, run, pool, prompts: list[str], stage) -> None:
    """The revise stage, as run.py calls it: revisions.jsonl, then revision_win_rate into summary.json."""
    t = time.time()
    engine = pool.replicated(cfg.generate.model, cfg.generate.base_url)
    path = run.root / "revisions.jsonl"
    counts = run_revise(engine, prompts, path, constitution, seed=cfg.seed, rounds=cfg.revise.rounds,
                        batch_size=cfg.generate.batch_size, max_new_tokens=cfg.generate.max_new_tokens,
                        temperature=cfg.generate.temperature, top_p=cfg.generate.top_p)
    by_id = {r["pair_id"]: r for r in read_jsonl(path)}
    rows = [by_id[pair_id(i, p)] for i, p in enumerate(prompts)]
    del engine
    _, evaluation = judge_revisions(cfg, constitution, run, pool, rows)
    pool.done("revise")  # nothing stays loaded for the sft stage's training
    run.update_summary("revision_win_rate", evaluation["revision_win_rate"])
    print(f"rlaif: revise: {counts['revised']} of {counts['prompts']} answers revised; revision_win_rate "
          f"{evaluation['revision_win_rate']}", file=sys.stderr)
    stage(run, "revise", t, {**counts, "model": cfg.generate.model, "rounds": cfg.revise.rounds,
                             "evaluation": evaluation})


def preference_rows(cfg, constitution, run) -> tuple[list[dict], dict]:
    """--pairs-from revisions: trl conversational rows with chosen = final revision, rejected = initial answer.
    Kept only when the judge (both orders) prefers the revision, unless preferences.trust_revisions."""
    from rlaif.judging.scores import pair_scores

    path = run.root / "revisions.jsonl"
    rows = read_jsonl(path)
    if not rows:
        raise RlaifError("--pairs-from revisions needs revisions.jsonl, which this run folder lacks", str(path),
                         "add revise to --stages (or use --recipe cai), or point --output-dir at a run that has it")
    trust = cfg.preferences.trust_revisions
    pairs = as_pairs(rows)
    scores = pair_scores(pairs, read_jsonl(run.root / "revision_judgments.jsonl"), constitution)
    out, counts = [], {"revisions": len(rows), "unrevised": len(rows) - len(pairs), "judge_prefers_revision": 0,
                       "judge_prefers_initial": 0, "tied": 0, "unjudged": 0}
    for pair in pairs:
        s = scores.get(pair["pair_id"])
        key = ("unjudged" if s is None else "judge_prefers_revision" if s > 0.5 else "tied" if s == 0.5
               else "judge_prefers_initial")
        counts[key] += 1
        if key != "judge_prefers_revision" and not trust:
            continue
        out.append({"prompt": [{"role": "user", "content": pair["prompt"]}],
                    "chosen": [{"role": "assistant", "content": pair["response_a"]}],
                    "rejected": [{"role": "assistant", "content": pair["response_b"]}],
                    "margin": abs(s - 0.5) if s is not None else 0.0, "score": s,
                    "pair_id": pair["pair_id"].removeprefix("rev-"), "votes": []})
    return out, {**counts, "kept": len(out), "trust_revisions": trust, "pairs_from": "revisions"}


def preferences_stage(cfg, constitution, run, stage) -> None:
    """The preferences stage with --pairs-from revisions."""
    from datasets import Dataset

    from rlaif.store.files import save_dataset_atomic

    t = time.time()
    rows, counts = preference_rows(cfg, constitution, run)
    if not rows:
        raise RlaifError("the judge preferred no revision to its initial answer, so the preference dataset is empty",
                         "--pairs-from revisions", "pass --trust-revisions to keep every revised pair")
    save_dataset_atomic(Dataset.from_list(rows), run.preferences)
    atomic_write_text(run.preferences_jsonl, jsonl_text(rows))
    print(f"rlaif: preferences from revisions: kept {counts['kept']} of {counts['revisions']} (judge prefers the "
          f"revision in {counts['judge_prefers_revision']}, trust_revisions={counts['trust_revisions']})", file=sys.stderr)
    stage(run, "preferences", t, counts)
