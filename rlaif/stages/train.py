"""Reward and policy stages, and the evaluation of what they trained (summary.json's headline figures)."""

from __future__ import annotations

import time

from rlaif.errors import RlaifError
from rlaif.engines.base import request_seed
from rlaif.stages.generate import pair_id
from rlaif.store.files import atomic_write_text, jsonl_text


def _base_model(cfg) -> str:
    from rlaif.models import resolve

    if cfg.generate.model.startswith("openai:"):
        raise RlaifError("training needs local weights, but the policy model is an endpoint", "--policy-model",
                         "pass the embedded model, a local folder or a hub id as --policy-model")
    return resolve(cfg.generate.model)[0]


def _load_preferences(run):
    from datasets import load_from_disk

    if not (run.preferences / "state.json").exists():
        raise RlaifError("no preference dataset in this run folder", str(run.preferences),
                         "add preferences to --stages (and generate,judge if they have not run)")
    return load_from_disk(str(run.preferences))


def run_training(cfg, constitution, run, pool, eval_prompts: list[str], stage, eval_base: tuple | None = None) -> None:
    """eval_base: (model, base_url) the trained policy is evaluated against; default the policy it started from
    (--rounds N passes round 1's, so every round is measured against the same base)."""
    from rlaif.training.trainers import train_policy, train_reward

    base = _base_model(cfg)
    dataset = _load_preferences(run)
    if "reward" in cfg.stages:
        t = time.time()
        info = train_reward(base, dataset, run.reward_model, cfg.train, cfg.seed)
        run.update_summary("reward_accuracy", info["reward_accuracy"])
        stage(run, "reward", t, info)
    if "policy" in cfg.stages:
        t = time.time()
        reward = judge_reward(cfg, constitution, run, pool) if cfg.train.reward == "judge" else None
        try:
            info = train_policy(base, run.reward_model, dataset, run.policy, cfg.train, cfg.seed, reward_func=reward)
        finally:
            if reward is not None:
                reward.rater.close()
        if reward is not None:
            info.update(reward.counts(), reward_trace=reward.trace)
            run_now = (info.get("steps") or 0) - (info.get("resumed_from_step") or 0)
            steps_seconds = (info.get("seconds_per_step") or 0) * run_now
            info["reward_share_of_step"] = round(reward.seconds / steps_seconds, 3) if steps_seconds else None
        pool.done("policy")  # the judge, alive through training with --reward judge
        if _is_main_process():
            info["evaluation"] = evaluate(cfg, constitution, run, pool, eval_prompts or [], eval_base)
            for key in ("policy_win_rate", "reward_base", "reward_policy"):
                run.update_summary(key, info["evaluation"][key])
        stage(run, "policy", t, info)


def judge_reward(cfg, constitution, run, pool):
    """--reward judge: the judge's engine, alive through training (the engine plan keeps it for the policy
    step), rating each sampled completion through the run folder's judgment cache."""
    from rlaif.judging.rating import Rater
    from rlaif.training.judge_reward import JudgeReward

    engine = pool.judge(cfg.judge.model, cfg.judge.base_url)
    if not getattr(engine, "supports_logprobs", True):
        raise RlaifError("--reward judge reads the rating labels' log-probs, which this endpoint does not give",
                         "--judge-model", "use a local judge model or an endpoint that returns log-probs")
    run.judgment_cache.parent.mkdir(parents=True, exist_ok=True)
    rater = Rater(engine, constitution, seed=cfg.seed, cache_path=run.judgment_cache, batch_size=cfg.judge.batch_size)
    return JudgeReward(rater, engine.identity)


def _is_main_process() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process


def head_to_head(cfg, constitution, pool, prompts: list[str], a: tuple, b: tuple, steps: tuple, seed_tag: str,
                 id_prefix: str):
    """Model a against model b on `prompts`, the same per-prompt seed for both, judged in both orders. a and b
    are (model, base_url); steps names the pool's steps for a, b and the judge, so one model lives at a time.
    Returns (pairs, judgments, scores, outputs of a, outputs of b); pair ids are f"{id_prefix}-{pair_id}"."""
    from rlaif.judging.jobs import judge_mode, judge_settings
    from rlaif.judging.scores import pair_scores
    from rlaif.stages.judge import run_judge

    convs = [[{"role": "user", "content": p}] for p in prompts]
    seeds = [request_seed(cfg.seed, seed_tag, pair_id(i, p)) for i, p in enumerate(prompts)]  # same for both models
    kw = dict(seed=seeds, max_new_tokens=cfg.generate.max_new_tokens, temperature=cfg.generate.temperature,
              top_p=cfg.generate.top_p)
    out_a = pool.get(*a).generate(convs, **kw)
    pool.done(steps[0])
    out_b = pool.get(*b).generate(convs, **kw)
    pool.done(steps[1])
    pairs = [{"pair_id": f"{id_prefix}-{pair_id(i, p)}", "prompt": p, "response_a": x, "response_b": y}
             for i, (p, x, y) in enumerate(zip(prompts, out_a, out_b))]
    judge = pool.judge(cfg.judge.model, cfg.judge.base_url)
    mode = judge_mode(constitution, judge)
    judgments, _ = run_judge(judge, pairs, constitution, seed=cfg.seed, mode=mode, settings=judge_settings(cfg, mode),
                             batch_size=cfg.judge.batch_size)
    pool.done(steps[2])
    del judge
    return pairs, judgments, pair_scores(pairs, judgments, constitution), out_a, out_b


def evaluate(cfg, constitution, run, pool, prompts: list[str], base: tuple | None = None) -> dict:
    """The trained policy against the base policy on held-out prompts, judged in both orders by the
    judge, and both scored by the trained reward model."""
    from rlaif.judging.scores import win_rate
    from rlaif.training.trainers import reward_scores

    if not prompts:
        return {"policy_win_rate": None, "reward_base": None, "reward_policy": None,
                "note": "no held-out prompts left in the prompt file after --num-prompts"}
    t = time.time()
    # One model at a time: the trained policy, then the base (kept if the judge is the same model), then the judge.
    pairs, judgments, scores, policy_out, base_out = head_to_head(
        cfg, constitution, pool, prompts, (str(run.policy), None), base or (cfg.generate.model, cfg.generate.base_url),
        ("eval-policy", "eval-base", "eval-judge"), "eval", "eval")
    rate, counts = win_rate(list(scores.values()))
    r_policy = reward_scores(run.reward_model, prompts, policy_out) if (run.reward_model / "config.json").exists() else []
    r_base = reward_scores(run.reward_model, prompts, base_out) if r_policy else []
    (run.root / "eval").mkdir(exist_ok=True)
    atomic_write_text(run.root / "eval" / "pairs.jsonl", jsonl_text(
        [{**p, "score": scores[p["pair_id"]], "reward_policy": rp, "reward_base": rb}
         for p, rp, rb in zip(pairs, r_policy or [None] * len(pairs), r_base or [None] * len(pairs))]))
    atomic_write_text(run.root / "eval" / "judgments.jsonl", jsonl_text(judgments))
    return {
        "policy_win_rate": rate,
        "reward_base": sum(r_base) / len(r_base) if r_base else None,
        "reward_policy": sum(r_policy) / len(r_policy) if r_policy else None,
        "n_prompts": len(prompts), "n_judged": counts["n_judged"], "seconds": round(time.time() - t, 2),
        "note": "response_a is the trained policy, response_b the base policy; a win rate of 0.5 is a draw",
    }
