"""Argument parsing and subcommands only. Heavy work lives in rlaif.pipeline (imported lazily).

The flags are generated from the setting dataclasses in rlaif/config.py (see rlaif/cli/flags.py); nothing here
declares a setting.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from rlaif import config as config_mod
from rlaif.cli import flags
from rlaif.errors import RlaifError

# subcommand -> (its options dataclass, description, the sections of run settings it takes: "" is the top level)
SUBCOMMANDS = {
    "agreement": (config_mod.AgreementOptions, "Judge-vs-human agreement report.", ("", "judge")),
    "robustness": (config_mod.RobustnessOptions, "Prompt-injection flip rate of the judge.", ("", "judge")),
    "label": (config_mod.LabelOptions, "Label a run's pairs by hand in the browser.", ()),  # the run folder has it all
}
USAGE = "rlaif [options]\n       " + "\n       ".join(f"rlaif {c} [options]" for c in SUBCOMMANDS)


def _config_flag(p: argparse.ArgumentParser) -> None:
    sections = ", ".join(f.name for f in dataclasses.fields(config_mod.RunConfig) if flags.is_section(f))
    p.add_argument("--config", help=f"YAML run config: the settings below by field name, top-level ones at the top and "
                   f"the others under their section ({sections}); flags override it")


def build_parser(command: str = "run") -> argparse.ArgumentParser:
    if command in SUBCOMMANDS:
        options, description, sections = SUBCOMMANDS[command]
        p = flags.Parser(prog=f"rlaif {command}", description=description)
        group = p.add_argument_group(f"{command} options")
        for path, f, flag in flags.leaves(options):
            flags.add_one(group, f, path, [flag])
        if sections:
            _config_flag(p)
            flags.add_settings(p, config_mod.RunConfig, sections=sections)
        return p
    p = flags.Parser(
        prog="rlaif", usage=USAGE, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="RLAIF: generate pairs, judge them against a constitution, build preferences, train a reward "
        "model and a policy.\n`python pipeline.py` in the repository is the same command.",
        epilog="subcommands (each with its own --help):\n" + "\n".join(
            f"  rlaif {c:<12} {d}" for c, (_, d, _) in SUBCOMMANDS.items()))
    _config_flag(p)
    p.add_argument("--dry-run", action="store_true", help="validate, print the first judge prompts; load no model, write nothing")
    p.add_argument("--list-principles", action="store_true", help="list the constitution's principles and exit")
    flags.add_settings(p, config_mod.RunConfig)
    return p


def make_config(args: argparse.Namespace, command: str = "run") -> config_mod.RunConfig:
    """Defaults, then the --config YAML, then the flags given. Pass-through keys (train.trl, vllm) are checked
    against trl's and vLLM's own fields, importing them only when such keys are given."""
    cfg = flags.apply(config_mod.load(args.config), args)
    cfg.stages = [s for s in config_mod.STAGES if s in cfg.stages]
    if cfg.recipe is not None:  # a recipe names its stages (choices checked on the field)
        if getattr(args, "stages", None) is not None:
            raise RlaifError("--recipe and --stages both given", "--recipe", "pass one of them: a recipe names its stages")
        cfg.stages = list(config_mod.RECIPES[cfg.recipe])
    from rlaif.engines.factory import check_memory_settings
    from rlaif.training.options import validate

    validate(cfg.train)
    check_memory_settings(cfg)
    from rlaif.judging.pairing import check as check_pairing

    from_flag = any(path == "generate.pairing" for path, *_ in flags.given(args, config_mod.RunConfig))
    check_pairing(cfg.generate.pairing, cfg.generate.samples_per_prompt,
                  "--pairing" if from_flag or not args.config else f"{args.config}: generate.pairing")
    if cfg.train.trl:
        from rlaif.training.options import check_trl, trl_classes

        stages = cfg.stages if command == "run" else None  # a subcommand trains nothing: any trl config's field
        check_trl(cfg.train.trl, trl_classes(stages, cfg.train.algo),
                  flags.origin(args, config_mod.RunConfig, "train.trl", args.config))
    if cfg.vllm:
        from rlaif.engines.vllm import check_engine_args

        check_engine_args(cfg.vllm, flags.origin(args, config_mod.RunConfig, "vllm", args.config))
    return cfg


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and argv[0] in (*SUBCOMMANDS, "run") else "run"
    args = build_parser(command).parse_args(argv)
    # Hub ids download when the network does (HF_HUB_OFFLINE=1: the local Hugging Face cache only); the embedded
    # default and local folders never touch the hub.
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        if command == "label":
            from rlaif.cli.label import main as label_main

            return label_main(flags.apply(config_mod.LabelOptions(), args))
        cfg = make_config(args, command)
        if command == "agreement":
            from rlaif.cli.agreement import main as agreement_main

            return agreement_main(cfg, flags.apply(config_mod.AgreementOptions(), args))
        if command == "robustness":
            from rlaif.evaluation.robustness import main as robustness_main

            return robustness_main(cfg, flags.apply(config_mod.RobustnessOptions(), args))
        from rlaif import pipeline as run

        return run.main(cfg, dry_run=args.dry_run, list_principles=args.list_principles)
    except RlaifError as e:
        print(f"rlaif: error: {e.line()}".replace("\n", " "), file=sys.stderr)
        return 2
