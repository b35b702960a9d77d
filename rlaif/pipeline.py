"""The main job: validate everything first, then run the chosen stages into one run folder."""

from __future__ import annotations

import hashlib
import shutil
import sys
import time
from itertools import islice
from pathlib import Path

import yaml

from rlaif import DATA_DIR, config as config_mod
from rlaif.judging import constitution as constitution_mod
from rlaif.errors import RlaifError
from rlaif.stages.generate import load_prompts
from rlaif.store.folder import PairsFile, Run, default_run_dir
from rlaif.store.files import atomic_write_lines, atomic_write_text, iter_jsonl

EXAMPLES = DATA_DIR / "dry_run_examples.jsonl"


def print_dry_run(cfg, constitution) -> int:
    """Print the first judge prompts exactly as rendered; no model, no writes."""
    from rlaif.judging.jobs import judge_settings, make_jobs

    out = Path(cfg.output_dir) if cfg.output_dir else None
    source = out / "pairs.jsonl" if out and (out / "pairs.jsonl").exists() else EXAMPLES
    pairs = list(islice(iter_jsonl(source), 2))
    if constitution.mode == "rating":  # each response rated alone
        from rlaif.judging.rating import dry_run_prompts

        print(f"# constitution {constitution.path}: {len(constitution.principles)} principles, template "
              f"{constitution.template}, mode rating; pairs from {source}")
        for pair_id, principle_id, side, text in dry_run_prompts(pairs, constitution, cfg.seed):
            print(f"\n===== pair {pair_id} | principle {principle_id} | response {side} "
                  f"(sent as the user turn of the judge's chat template) =====")
            print(text, end="")
        return 0
    jobs = make_jobs(pairs, constitution, cfg.seed, "dry-run", constitution.label_mode,
                     judge_settings(cfg, constitution.label_mode))
    print(f"# constitution {constitution.path}: {len(constitution.principles)} principles, template "
          f"{constitution.template}, label mode {constitution.label_mode}; pairs from {source}")
    for job in jobs:
        print(f"\n===== pair {job.pair_id} | principle {job.principle.id} | order {job.order} "
              f"(sent as the user turn of the judge's chat template) =====")
        print(job.text, end="")
    return 0


def print_principles(constitution) -> int:
    print(f"{constitution.name} v{constitution.version}: {constitution.description}")
    for p in constitution.principles:
        print(f"  {p.id:<28} weight {p.weight:<4g} {'revise' if p.can_revise else '-':<6} {p.text}")
    n = sum(p.can_revise for p in constitution.principles)
    print(f"revise: {n} of {len(constitution.principles)} principles have critique and revision requests "
          "(the revise stage draws from these)")
    return 0


def main(cfg, dry_run: bool = False, list_principles: bool = False) -> int:
    from rlaif.stages import rounds

    rounds.check(cfg)  # --rounds N with what cannot run in rounds: one line, exit 2, nothing written
    constitution = constitution_mod.load(cfg.constitution)
    if list_principles:
        return print_principles(constitution)
    if dry_run:
        return print_dry_run(cfg, constitution)
    if cfg.executor == "ray":  # before anything is read or written, one line and exit 2 for: Ray missing, no
        # cluster at the address, or replicas the cluster cannot hold
        from rlaif.engines.replicas import check_address, check_cluster, import_ray

        import_ray()
        check_address(cfg.ray.address)
        if {"generate", "judge", "revise"} & set(cfg.stages):
            check_cluster(cfg)
    prompts = load_prompts(cfg.generate.prompts, cfg.generate.num_prompts + cfg.train.eval_prompts
                           if cfg.generate.num_prompts else 0) if {"generate", "policy", "revise", "sft"} & set(cfg.stages) else []
    train_prompts = prompts[:cfg.generate.num_prompts] if cfg.generate.num_prompts else prompts
    eval_prompts = prompts[len(train_prompts):]
    root = Path(cfg.output_dir) if cfg.output_dir else default_run_dir(constitution.name)
    cfg.output_dir = str(root)
    run = Run(root)
    needs_pairs = [s for s in ("judge", "preferences", "reward", "policy") if s in cfg.stages
                   and (s == "judge" or cfg.preferences.pairs_from != "revisions")]  # revisions need no pairs.jsonl
    if "generate" not in cfg.stages and needs_pairs and not run.pairs.exists():
        raise RlaifError(f"stage {needs_pairs[0]} needs pairs.jsonl, which this run folder lacks", str(root),
                         "add generate to --stages, or point --output-dir at a run that has pairs")
    uses_prompts = bool(prompts)
    if uses_prompts:  # the folder's recorded eval prompts win; a clash with training prompts stops here
        from rlaif.store import splits

        eval_prompts = splits.resolve(run, train_prompts if {"generate", "revise"} & set(cfg.stages) else [], eval_prompts)
    created = not root.exists()
    rounds.check_folder(cfg, run)
    if cfg.train.rounds > 1:  # iterative DPO: each round in RUN/rounds/<r>/ (rlaif/stages/rounds.py)
        return rounds.run_rounds(cfg, constitution, run, train_prompts, eval_prompts, uses_prompts, created,
                                 run_stages=_run, engine_plan=engine_plan)
    from rlaif.engines.factory import EnginePool

    pool = EnginePool(cfg, plan=engine_plan(cfg, run))
    try:
        return _run(cfg, constitution, run, pool, train_prompts, eval_prompts, uses_prompts)
    except RlaifError:
        if created and not any(run.stages.glob("*.done")):
            shutil.rmtree(root, ignore_errors=True)  # nothing finished: leave nothing half-written behind
        raise
    finally:
        pool.close()


def engine_plan(cfg, run: Run) -> list:
    """The models each step needs, in run order. The pool releases an engine as soon as the next step does not
    need it: training starts with none alive, and evaluation holds one model at a time."""
    from rlaif.stages.sft import SFT_STEPS, policy_after_sft

    before, judge = (cfg.generate.model, cfg.generate.base_url), (cfg.judge.model, cfg.judge.base_url, "judge")
    policy = (policy_after_sft(cfg, run), cfg.generate.base_url)  # sft_model/ once it exists, unless --policy-model
    needs = {"generate": [policy], "judge": [judge], "eval-policy": [(str(run.policy), None)],
             "policy": [judge] if cfg.train.reward == "judge" else [],  # --reward judge: rates during training
             "eval-base": [policy], "eval-judge": [judge], "revise": [before, judge], "sft": [],
             "eval-sft": [(policy[0], None)], "eval-sft-base": [before], "eval-sft-judge": [judge]}
    steps = [x for stage in cfg.stages for x in ([stage] + (SFT_STEPS if stage == "sft" else []))]
    steps += ["eval-policy", "eval-base", "eval-judge"] if "policy" in cfg.stages else []
    return [(step, needs.get(step, [])) for step in steps]


def _engine_start(pool, stage: str, seconds: float) -> tuple[float, dict]:
    """The stage's seconds less the start of the engines built for it (what tokens/s and seconds per pair are made
    of), and the summary fields that report that start. When a vLLM engine's start took longer than the work it then
    did, one line says that --engine hf is faster at this size."""
    start = pool.take_starts()
    work = max(seconds - start["seconds"], 1e-9)
    slow = [s for s in start["engines"] if s["engine"].endswith("vllm") and s["seconds"] > work]
    if slow:
        print(f"rlaif: hint: vLLM took {slow[0]['seconds']:.1f} s to start, longer than the {stage} stage's "
              f"{work:.1f} s of work after it; for runs this small --engine hf is faster (it starts in seconds), "
              "or --vllm enforce_eager=true (no compile: a shorter start, slower after it)", file=sys.stderr)
    return work, {"engine_start_seconds": start["seconds"], "engine_start": start["engines"]}


def _stage(run: Run, name: str, started: float, info: dict, cfg, constitution) -> None:
    """Record a finished stage: the resolved config and frozen constitution it ran with, its counts, its marker.
    Every version of the constitution the folder has seen stays in constitutions/<sha256[:12]>.yaml."""
    info = {**info, "seconds": round(time.time() - started, 2)}
    torch = sys.modules.get("torch")  # peak GPU memory this process allocated during the stage (not vLLM's workers)
    if torch is not None and torch.cuda.is_available():
        info["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
        torch.cuda.reset_peak_memory_stats()
    atomic_write_text(run.config, yaml.safe_dump(config_mod.to_dict(cfg), sort_keys=False))
    atomic_write_text(run.constitution, constitution.text)
    version = run.root / "constitutions" / f"{hashlib.sha256(constitution.text.encode()).hexdigest()[:12]}.yaml"
    if not version.exists():
        atomic_write_text(version, constitution.text)
    run.update_summary("constitution", {"name": constitution.name, "version": constitution.version,
                                        "path": str(constitution.path)})
    run.update_summary(name, info)
    run.mark_done(name, info)
    print(f"rlaif: {name}: " + ", ".join(f"{k}={v}" for k, v in info.items() if not isinstance(v, (dict, list))),
          file=sys.stderr)


def _run(cfg, constitution, run: Run, pool, train_prompts, eval_prompts, uses_prompts: bool, generate_seed=None,
         eval_base=None) -> int:
    """generate_seed: the sampling seed of the generate stage (default --seed); eval_base: the model the trained
    policy is evaluated against (default the policy it starts from). --rounds N sets both per round."""
    # Validate models before writing anything: a missing folder or endpoint URL fails here, with no run folder made.
    from rlaif.engines.factory import check_model

    policy = (cfg.generate.model, cfg.generate.base_url) if {"generate", "reward", "policy", "revise", "sft"} & set(cfg.stages) else None
    if policy:
        check_model(*policy, "--policy-base-url")
    if {"judge", "policy", "revise", "sft"} & set(cfg.stages) and (cfg.judge.model, cfg.judge.base_url) != policy:  # once per model
        check_model(cfg.judge.model, cfg.judge.base_url, "--judge-base-url")
    if ({"judge", "revise"} & set(cfg.stages) and constitution.mode == "rating"
            or cfg.train.reward == "judge" and "policy" in cfg.stages):  # rating labels: one token each
        from rlaif.judging.rating import check_judge_labels

        check_judge_labels(cfg.judge.model, constitution)
    if "revise" in cfg.stages:
        from rlaif.stages.revise import check

        check(constitution)
    if "sft" in cfg.stages and cfg.sft.data:
        from rlaif.store import splits
        from rlaif.stages.sft import sft_rows

        splits.check_demonstrations(sft_rows(cfg.sft.data), eval_prompts)  # a bad or held-out row: before any write
    run.root.mkdir(parents=True, exist_ok=True)
    if uses_prompts:
        from rlaif.store import splits

        splits.record(run, eval_prompts, cfg.generate.prompts)
    pairs = None
    if "revise" in cfg.stages:
        from rlaif.stages.revise import run_stage as revise_stage

        revise_stage(cfg, constitution, run, pool, train_prompts, lambda *a: _stage(*a, cfg, constitution))
    if "sft" in cfg.stages:
        from rlaif.stages.sft import run_stage as sft_stage

        sft_stage(cfg, constitution, run, pool, eval_prompts, lambda *a: _stage(*a, cfg, constitution))
    from rlaif.stages.sft import use_sft_model

    use_sft_model(cfg, run)  # sft_model/ becomes the policy of the later stages unless --policy-model was given
    if "generate" in cfg.stages:
        from rlaif.stages.generate import pair_id, run_generate

        t = time.time()
        pool.take_starts()  # engines built before this stage are not its start
        engine = pool.replicated(cfg.generate.model, cfg.generate.base_url)
        tokens0 = engine.stats.get("completion_tokens", 0)
        counts = run_generate(engine, train_prompts, run.pairs, seed=cfg.seed if generate_seed is None else generate_seed,
                              batch_size=cfg.generate.batch_size,
                              max_new_tokens=cfg.generate.max_new_tokens, temperature=cfg.generate.temperature,
                              top_p=cfg.generate.top_p, samples_per_prompt=cfg.generate.samples_per_prompt,
                              pairing=cfg.generate.pairing, samples=run.samples)
        tokens = engine.stats.get("completion_tokens", 0) - tokens0
        # On disk, in prompt order (with K > 2, pairs.jsonl was just written whole for these prompts)
        pairs = PairsFile(run.pairs, (pair_id(i, p) for i, p in enumerate(train_prompts))
                          if cfg.generate.samples_per_prompt == 2 else None)
        seconds, started = _engine_start(pool, "generate", time.time() - t)
        _stage(run, "generate", t, {**counts, "model": cfg.generate.model, "completion_tokens": tokens,
                                    "tokens_per_second": round(tokens / seconds, 1) if counts["generated"] and tokens else None,
                                    **started,
                                    "truncated_prompts": engine.stats.get("truncated", 0)}, cfg, constitution)
        pool.done("generate")  # released unless the judge is the same model
        del engine
    if pairs is None:
        pairs = PairsFile(run.pairs)
    if "judge" in cfg.stages:
        from rlaif.stages.judge import iter_judge
        from rlaif.judging.jobs import judge_mode, judge_settings

        t = time.time()
        pool.take_starts()
        engine = pool.replicated(cfg.judge.model, cfg.judge.base_url, judge=True)
        mode = judge_mode(constitution, engine)
        run.judgment_cache.parent.mkdir(parents=True, exist_ok=True)
        counts = {}
        atomic_write_lines(run.judgments, iter_judge(engine, pairs, constitution, seed=cfg.seed, mode=mode,
                                                     settings=judge_settings(cfg, mode), cache_path=run.judgment_cache,
                                                     batch_size=cfg.judge.batch_size, counts=counts))
        print(f"rlaif: judge: reused {counts['reused']} judgments from the cache, judged {counts['judged']}",
              file=sys.stderr)
        seconds, started = _engine_start(pool, "judge", time.time() - t)
        _stage(run, "judge", t, {**counts, "mode": mode, "pairs": len(pairs),
                                 "seconds_per_pair": round(seconds / len(pairs), 3) if counts["judged"] and pairs else None,
                                 **started,
                                 "engine": getattr(engine, "stats", {})}, cfg, constitution)
        pool.done("judge")
        del engine
    if "preferences" in cfg.stages and cfg.preferences.pairs_from == "revisions":
        from rlaif.stages.revise import preferences_stage

        preferences_stage(cfg, constitution, run, lambda *a: _stage(*a, cfg, constitution))
    if "preferences" in cfg.stages and cfg.preferences.pairs_from != "revisions":
        from collections import Counter

        from rlaif.stages import preferences

        t = time.time()
        counts = Counter()

        def rows(in_memory: bool):
            counts.clear()
            return preferences.iter_rows(pairs, lambda: iter_jsonl(run.judgments), constitution,
                                         cfg.preferences.min_margin, counts, in_memory, cfg.preferences.keep)

        written = preferences.write(rows, run.preferences, run.preferences_jsonl)
        if counts["stale_judgments"]:
            print(f"rlaif: preferences: warning: {counts['stale_judgments']} judgments were made with principle text "
                  f"that has changed since (or a principle since removed) and were left out of the scores; rerun "
                  f"with the judge stage to judge those principles again (only they are re-judged)", file=sys.stderr)
        figures = preferences.signal(counts)
        if warning := preferences.weak_signal_warning(figures):
            print(f"rlaif: warning: {warning}", file=sys.stderr)
        if not written:
            raise RlaifError("no pair cleared the margin, so the preference dataset is empty", "--margin",
                             f"lower --margin (now {cfg.preferences.min_margin}) or judge more prompts")
        for key, value in figures.items():
            run.update_summary(key, value)
        info = {**{k: counts.get(k, 0) for k in preferences.KEPT_COUNTS}, "stale_judgments": counts["stale_judgments"]}
        _stage(run, "preferences", t, {**info, "min_margin": cfg.preferences.min_margin,
                                       **({"keep": cfg.preferences.keep} if run.samples.exists() else {})}, cfg, constitution)
    if "reward" in cfg.stages or "policy" in cfg.stages:
        from rlaif.stages.train import run_training

        run_training(cfg, constitution, run, pool, eval_prompts,
                     lambda *a: _stage(*a, cfg, constitution), eval_base)
    if (run.root / "splits.json").exists():
        from rlaif.store import splits

        recorded = splits.resolve(run, [], eval_prompts)
        for key, value in splits.summary(run, recorded).items():
            run.update_summary(key, value)
    from rlaif.evaluation import run_report

    run_report.write(run)
    print(f"rlaif: done: {run.root} (open {run.report} for the report)", file=sys.stderr)
    return 0
