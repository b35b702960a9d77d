"""--rounds N: iterative DPO (as in OpenRLHF and Self-Rewarding Language Models). Each round generates pairs from
the policy the round before trained, judges them, builds its preferences and trains DPO starting from that policy.

Round r lives in RUN/rounds/<r>/, itself laid out as a one-round run folder (pairs.jsonl, cache/, judgments.jsonl,
preferences/, policy/, eval/, stages/*.done, summary.json), and runs through the same stage code (pipeline._run).

- Round 1 starts from the base policy (sft_model/ when the run trained one) with --seed, so rounds/1/ holds what a
  one-round run would write. Round r > 1 starts from rounds/<r-1>/policy/ (DPO's reference model is that policy
  too) and samples with the seed request_seed(--seed, "round", r), so it does not redraw round 1's sampling noise;
  principle draws, the trainer's seed and the evaluation's samples keep --seed.
- The reward stage (when in --stages) runs in round 1 only: DPO does not use it, and round 1's reward_accuracy
  is the one figure it gives.
- Each round has its own judgment cache (rounds/<r>/cache/): a round's pairs come from a new policy, so another
  round's cache would hold next to nothing it can reuse, and a round's folder stays self-contained.
- Every round trains on the train prompts only and is evaluated against the same base (round 1's starting
  policy) on the folder's held-out prompts (splits.json): win_rate_vs_base in summary.json's `rounds`.
- A round is finished once rounds/<r>/stages/round.done is written (last). A rerun of the same command skips
  finished rounds without touching their files and resumes the unfinished one like a one-round run (pairs and
  judgments reused, trl checkpoints resumed). A rerun with a larger --rounds adds rounds.
- RUN/policy is a symlink to the last round's policy/ (rounds/<N>/policy), where one-round runs keep theirs.
"""

from __future__ import annotations

import copy
import os
import shutil
import sys
import time

import yaml

from rlaif.errors import RlaifError

ROUND_STAGES = ("generate", "judge", "preferences", "reward", "policy")


def check(cfg) -> None:
    """Settings that cannot run in rounds: one line, exit 2, before anything is read or written."""
    n = cfg.train.rounds
    if n < 1:  # the field's minimum, checked again for configs built in code
        raise RlaifError("rounds must be positive", "--rounds", "pass a number of at least 1 (1: one round)")
    if n == 1:
        return
    if cfg.train.algo != "dpo":
        raise RlaifError(f"--rounds {n} trains DPO round after round, and --algo is {cfg.train.algo}", "--rounds",
                         "pass --algo dpo (the default), or leave --rounds at 1")
    missing = [s for s in ("generate", "judge", "preferences", "policy") if s not in cfg.stages]
    if missing:
        raise RlaifError(f"--rounds {n} runs generate, judge, preferences and policy in every round, and --stages "
                         f"lacks {','.join(missing)}", "--rounds", "add them to --stages, or leave --rounds at 1")
    if cfg.preferences.pairs_from == "revisions":
        raise RlaifError(f"--rounds {n} builds each round's preferences from its own sampled pairs",
                         "--pairs-from", "leave --pairs-from at samples, or --rounds at 1")


def check_folder(cfg, run) -> None:
    """A folder holds one-round results or rounds, never both (before anything is written)."""
    rounds_dir = run.root / "rounds"
    if cfg.train.rounds == 1 and rounds_dir.exists():
        raise RlaifError("this run folder was run with --rounds above 1", str(rounds_dir),
                         "pass the --rounds it was run with, or use a new --output-dir")
    one_round = [s for s in ROUND_STAGES if run.marker(s).exists()]
    if cfg.train.rounds > 1 and one_round:
        raise RlaifError(f"this run folder holds a one-round run (its {one_round[0]} stage finished here)",
                         str(run.marker(one_round[0])), "use a new --output-dir for --rounds above 1")


def round_seed(seed: int, r: int) -> int:
    """The generate stage's sampling seed in round r: --seed itself in round 1."""
    from rlaif.engines.base import request_seed

    return seed if r == 1 else request_seed(seed, "round", r)


def _row(r: int, rrun, start: str) -> dict:
    import json

    summary = json.loads(rrun.summary.read_text())
    seconds = {s: summary[s]["seconds"] for s in ROUND_STAGES if isinstance(summary.get(s), dict)}
    evaluation = summary["policy"].get("evaluation") or {}
    return {"round": r, "policy_start": start, "pairs": summary["generate"]["pairs"],
            "kept": summary["preferences"]["kept"], "seconds": round(sum(seconds.values()), 2),
            "win_rate_vs_base": evaluation.get("policy_win_rate"), "stage_seconds": seconds,
            "n_eval_prompts": evaluation.get("n_prompts"), "eval_overlap": summary.get("eval_overlap"),
            "position_consistency": summary.get("position_consistency")}


def _link_policy(run, n: int) -> None:
    """RUN/policy -> rounds/<n>/policy (relative, so the folder can move)."""
    tmp = run.root / ".policy.link"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(os.path.join("rounds", str(n), "policy"), tmp, target_is_directory=True)
    os.replace(tmp, run.policy)


def run_rounds(cfg, constitution, run, train_prompts, eval_prompts, uses_prompts: bool, created: bool, *, run_stages,
               engine_plan) -> int:
    """run_stages, engine_plan: the pipeline's stage runner and engine plan (rlaif.pipeline._run, engine_plan),
    passed in so that this module does not import the pipeline that calls it."""
    try:
        return _rounds(cfg, constitution, run, train_prompts, eval_prompts, uses_prompts, run_stages, engine_plan)
    except RlaifError:
        if created and not any(run.root.glob("**/stages/*.done")):
            shutil.rmtree(run.root, ignore_errors=True)  # nothing finished: leave nothing half-written behind
        raise


def _rounds(cfg, constitution, run, train_prompts, eval_prompts, uses_prompts: bool, run_stages, engine_plan) -> int:
    from rlaif import config as config_mod
    from rlaif.engines.factory import EnginePool, check_model
    from rlaif.evaluation import run_report
    from rlaif.stages.sft import use_sft_model
    from rlaif.store import splits
    from rlaif.store.files import atomic_write_text
    from rlaif.store.folder import Run

    n = cfg.train.rounds
    check_model(cfg.generate.model, cfg.generate.base_url, "--policy-base-url")  # before anything is written
    check_model(cfg.judge.model, cfg.judge.base_url, "--judge-base-url")
    pre = [s for s in ("revise", "sft") if s in cfg.stages and not run.marker(s).exists()]
    if pre:  # Constitutional AI first, once, in RUN itself: sft_model/ becomes round 1's policy
        cfg_pre = copy.deepcopy(cfg)
        cfg_pre.stages = pre
        pool = EnginePool(cfg_pre, plan=engine_plan(cfg_pre, run))
        try:
            run_stages(cfg_pre, constitution, run, pool, train_prompts, eval_prompts, uses_prompts)
        finally:
            pool.close()
    run.root.mkdir(parents=True, exist_ok=True)
    if uses_prompts:
        splits.record(run, eval_prompts, cfg.generate.prompts)
    atomic_write_text(run.config, yaml.safe_dump(config_mod.to_dict(cfg), sort_keys=False))
    atomic_write_text(run.constitution, constitution.text)
    use_sft_model(cfg, run)
    base = (cfg.generate.model, cfg.generate.base_url)  # every round is evaluated against this policy
    rows = []
    for r in range(1, n + 1):
        rrun = Run(run.root / "rounds" / str(r))
        start = base if r == 1 else (str(Run(run.root / "rounds" / str(r - 1)).policy), None)
        if rrun.marker("round").exists():  # finished: its files are left as they are
            import json

            rows.append(json.loads(rrun.marker("round").read_text()))
            print(f"rlaif: round {r} of {n}: finished before, in {rrun.root}; skipped", file=sys.stderr)
            continue
        print(f"rlaif: round {r} of {n}: policy {start[0]}, in {rrun.root}", file=sys.stderr)
        t = time.time()
        cfg_r = copy.deepcopy(cfg)
        cfg_r.generate.model, cfg_r.generate.base_url = start
        cfg_r.stages = [s for s in ROUND_STAGES if s in cfg.stages and (r == 1 or s != "reward")]
        cfg_r.output_dir = str(rrun.root)
        if uses_prompts:  # a held-out prompt among this round's training prompts: exit 2, nothing written
            splits.resolve(rrun, train_prompts, eval_prompts)
        plan = [(step, [base] if step == "eval-base" else needs) for step, needs in engine_plan(cfg_r, rrun)]
        pool = EnginePool(cfg_r, plan=plan)
        try:
            run_stages(cfg_r, constitution, rrun, pool, train_prompts, eval_prompts, uses_prompts,
                          generate_seed=round_seed(cfg.seed, r), eval_base=base)
        finally:
            pool.close()
        row = _row(r, rrun, start[0])
        rrun.mark_done("round", row)  # last: the round is finished
        rows.append(row)
        print(f"rlaif: round {r} of {n}: {row['pairs']} pairs, {row['kept']} kept, win rate against the base "
              f"{row['win_rate_vs_base']}, {row['seconds']} s of stages ({round(time.time() - t, 1)} s now)",
              file=sys.stderr)
        run.update_summary("rounds", rows)
    _link_policy(run, n)
    run.update_summary("rounds", rows)
    last = rows[-1]
    for key, value in (("policy_win_rate", last["win_rate_vs_base"]), ("n_eval_prompts", last["n_eval_prompts"]),
                       ("eval_overlap", max((x["eval_overlap"] or 0) for x in rows)),
                       ("constitution", {"name": constitution.name, "version": constitution.version,
                                         "path": str(constitution.path)})):
        run.update_summary(key, value)
    run.mark_done("rounds", {"rounds": n, "policy": f"rounds/{n}/policy"})
    run_report.write(run)
    print(f"rlaif: done: {n} rounds in {run.root}; the last round's policy is {run.policy} (-> rounds/{n}/policy)",
          file=sys.stderr)
    return 0
