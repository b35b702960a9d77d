"""`pipeline.py agreement`: how often a judge agrees with human preference labels.

Reads human-labelled pairs, runs each requested judge (the constitution's model judge and the `length`
and `random` baselines), computes the metrics of rlaif.evaluation.metrics per judge and writes DIR/agreement.json
(an object keyed by judge name), DIR/report.html and PNG plots beside it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from rlaif.evaluation import metrics
from rlaif.judging import constitution as constitution_mod
from rlaif.errors import RlaifError
from rlaif.evaluation.humans import HumanPair, read_human_pairs
from rlaif.seeded import coin
from rlaif.store.files import atomic_write_json
from rlaif.store.folder import default_run_dir

JUDGES = ("model", "reward", "length", "random")
BASELINES = ("length", "random")


def judge_names(requested: list[str] | None) -> list[str]:
    """Requested judges in canonical order; with `model` or `reward` the free baselines are always added."""
    names = set(requested or ["model"])
    if names & {"model", "reward"}:
        names |= set(BASELINES)
    return [j for j in JUDGES if j in names]


# ---------------------------------------------------------------- the judges
# Each returns (verdicts, verdict_ab, verdict_ba, p_a or None, extra fields for agreement.json).

def length_verdict(response_a: str, response_b: str) -> str:
    """More characters after strip wins; equal lengths tie."""
    la, lb = len(response_a.strip()), len(response_b.strip())
    return "a" if la > lb else "b" if lb > la else "tie"


def _coin(*parts) -> str:
    return "a" if coin(*parts) else "b"


def judge_length(pairs: list[HumanPair]):
    verdicts = [length_verdict(p.response_a, p.response_b) for p in pairs]
    return verdicts, list(verdicts), list(verdicts), None, {}


def judge_random(pairs: list[HumanPair], seed: int):
    """Pair verdict from sha256(f"{seed}:{pair_id}:random"); each single order drawn independently."""
    verdicts = [_coin(seed, p.pair_id, "random") for p in pairs]
    ab = [_coin(seed, p.pair_id, "random", "ab") for p in pairs]
    ba = [_coin(seed, p.pair_id, "random", "ba") for p in pairs]
    return verdicts, ab, ba, None, {}


REWARD_POSITION_BIAS = ("zero by construction: a reward model scores each response alone, and P(a better) = "
                        "sigmoid(r_a - r_b) is the same number in both orders")


RATING_POSITION_BIAS = ("zero by construction: in rating mode the judge rates each response alone (1 to 9), and "
                        "P(a better) = P(R_a > R_b) + P(R_a = R_b) / 2 is the same number in both orders")


def reward_model_name(args) -> str:
    """--reward-model as rm:PATH; --judge reward without it is an error."""
    name = getattr(args, "reward_model", None)
    if not name:
        raise RlaifError("--judge reward needs a reward model", "--reward-model",
                         "pass --reward-model rm:RUN/reward_model (a one-output sequence classifier)")
    return name if name.startswith("rm:") else f"rm:{name}"


def judge_model(pairs: list[HumanPair], cfg, constitution, pool, cache_path: Path, model: str | None = None):
    from rlaif.judging.scores import is_identical, pair_scores, verdict_of
    from rlaif.judging.jobs import judge_mode, judge_settings
    from rlaif.stages.judge import run_judge

    engine = pool.judge(model, None) if model else pool.judge(cfg.judge.model, cfg.judge.base_url)
    mode = judge_mode(constitution, engine)
    dicts = [{"pair_id": p.pair_id, "prompt": p.prompt, "response_a": p.response_a, "response_b": p.response_b}
             for p in pairs]
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    judgments, counts = run_judge(engine, dicts, constitution, seed=cfg.seed, mode=mode, settings=judge_settings(cfg, mode),
                                  cache_path=cache_path, batch_size=cfg.judge.batch_size)
    print(f"rlaif: agreement: reused {counts['reused']} judgments from the cache, judged {counts['judged']}",
          file=sys.stderr)
    scores = pair_scores(dicts, judgments, constitution)
    single = {order: pair_scores(dicts, judgments, constitution, orders=(order,)) for order in ("ab", "ba")}
    judged = {}  # pair_id -> principle_id -> the p_a of its parsed orders: the principles each pair was judged on
    for j in judgments:
        both = judged.setdefault(j["pair_id"], {}).setdefault(j["principle_id"], [])
        if j["p_a"] is not None:
            both.append(j["p_a"])
    verdicts, ab, ba, per_principle = [], [], [], {}
    for pair, d in zip(pairs, dicts):
        verdicts.append(verdict_of(scores[pair.pair_id]))
        ab.append(verdict_of(single["ab"][pair.pair_id]))
        ba.append(verdict_of(single["ba"][pair.pair_id]))
        for principle_id, both in judged.get(pair.pair_id, {}).items():
            score = 0.5 if is_identical(d) else sum(both) / len(both) if both else None
            per_principle.setdefault(principle_id, []).append((metrics.majority_label(pair.labels), verdict_of(score)))
    per = {}
    for principle in constitution.principles:  # constitution order; principles never drawn are left out
        rows = per_principle.get(principle.id)
        if rows:
            value, n_decided = metrics.agreement([h for h, _ in rows], [v for _, v in rows])
            per[principle.id] = {"agreement": value, "n": len(rows), "n_decided": n_decided}
    extra = {"judge_model": engine.identity, "mode": mode, "per_principle": per,
             "judgments": counts["judgments"], "judged": counts["judged"], "reused": counts["reused"],
             "identical_pairs": counts["identical"], "parse_failures": counts["parse_failures"]}
    if mode == "reward":  # rm:PATH
        extra.update(position_bias=REWARD_POSITION_BIAS, rewards_scored=counts["rewards_scored"],
                     rewards_reused=counts["rewards_reused"])
    if mode == "rating":  # judge.mode: rating (rlaif.judging.rating)
        extra.update(position_bias=RATING_POSITION_BIAS, ratings_scored=counts["ratings_scored"],
                     ratings_reused=counts["ratings_reused"])
    return verdicts, ab, ba, [scores[p.pair_id] for p in pairs], extra


# ---------------------------------------------------------------- the command

def _fmt(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def summary_table(results: dict) -> str:
    """The compact stdout table: one line per judge."""
    lines = [f"{'judge':<8} {'n':>5}  {'agreement [95% CI]':<22} {'kappa':>6} {'pos_cons':>8} "
             f"{'pref_1st':>8} {'pref_long':>9}"]
    for name, r in results.items():
        ci = r["agreement_ci95"]
        agree = f"{_fmt(r['agreement'])} [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else _fmt(r["agreement"])
        lines.append(f"{name:<8} {r['n_pairs']:>5}  {agree:<22} {_fmt(r['cohen_kappa']):>6} "
                     f"{_fmt(r['position_consistency']):>8} {_fmt(r['prefer_first']):>8} "
                     f"{_fmt(r['prefer_longer_judge']):>9}")
    return "\n".join(lines)


def main(cfg, args) -> int:
    started = time.time()
    names = judge_names(getattr(args, "judge", None))
    constitution = constitution_mod.load(cfg.constitution)
    label_columns = None
    if getattr(args, "label_columns", None):
        label_columns = [c.strip() for c in args.label_columns.split(",") if c.strip()]
        if not label_columns:
            raise RlaifError("--label-columns names no column", "--label-columns",
                             "pass e.g. --label-columns ann1,ann2")
    counts = {}
    try:
        pairs, n_skipped = read_human_pairs(args.human, label_columns=label_columns, seed=cfg.seed,
                                            limit=getattr(args, "limit", None),
                                            skip_bad_rows=bool(getattr(args, "skip_bad_rows", False)), counts=counts)
    except RlaifError as e:  # name the CLI flags, not the library arguments, in the fix
        fix = e.fix.replace("skip_bad_rows=True", "--skip-bad-rows").replace("label_columns=[...]", "--label-columns")
        raise RlaifError(e.what, e.where, fix) from None
    if not pairs:
        raise RlaifError("no human-labelled pairs to evaluate", args.human,
                         "check the file has rows (and that --limit is above 0)")
    if "model" in names:
        from rlaif.engines.factory import check_model

        check_model(cfg.judge.model, cfg.judge.base_url, "--judge-base-url")  # before any folder is made
        if constitution.mode == "rating":  # its labels, one token each for the judge's tokenizer
            from rlaif.judging.rating import check_judge_labels

            check_judge_labels(cfg.judge.model, constitution)
    if "reward" in names:
        from rlaif.engines.factory import check_model

        check_model(reward_model_name(args), None, "--reward-model")
    root = Path(cfg.output_dir) if cfg.output_dir else default_run_dir(f"agreement-{constitution.name}")
    root.mkdir(parents=True, exist_ok=True)
    print(f"rlaif: agreement: {len(pairs)} pairs from {args.human} (skipped {n_skipped} bad rows and "
          f"{counts['duplicate_rows']} exact duplicate rows); "
          f"judges {', '.join(names)}; writing to {root}", file=sys.stderr)
    humans = [p.labels for p in pairs]
    n_empty = sum(not r.strip() for p in pairs for r in (p.response_a, p.response_b))  # valid: judged like any other
    len_a = [len(p.response_a.strip()) for p in pairs]
    len_b = [len(p.response_b.strip()) for p in pairs]
    results, details, pool = {}, {}, None
    try:
        for name in names:
            t = time.time()
            if name in ("model", "reward"):
                from rlaif.engines.factory import EnginePool

                if pool is not None:  # one model in memory at a time
                    pool.close()
                pool = EnginePool(cfg)
                out = judge_model(pairs, cfg, constitution, pool, root / "cache" / "judgments.jsonl",
                                  reward_model_name(args) if name == "reward" else None)
            else:
                out = judge_length(pairs) if name == "length" else judge_random(pairs, cfg.seed)
            verdicts, ab, ba, p_a, extra = out
            summary = metrics.summarize(humans, verdicts, ab, ba, p_a, len_a, len_b,
                                        parse_failures=extra.pop("parse_failures", 0))
            judge_model_id = extra.pop("judge_model", None)
            results[name] = {"judge": name, "judge_model": judge_model_id, **summary, **extra,
                             "n_skipped_rows": n_skipped, "n_duplicate_rows": counts["duplicate_rows"],
                             "n_empty_responses": n_empty,
                             "seconds": round(time.time() - t, 3)}
            details[name] = {"verdicts": verdicts, "p_a": p_a}
    finally:
        if pool is not None:
            pool.close()
    atomic_write_json(root / "agreement.json", results)
    from rlaif.evaluation.report import agreement_report

    report = agreement_report(root, results, details, pairs, constitution=constitution.name, source=str(args.human))
    print(summary_table(results))
    print(f"report: {report}")
    print(f"rlaif: agreement: done in {time.time() - started:.1f}s: {root}", file=sys.stderr)
    return 0
