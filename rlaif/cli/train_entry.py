"""One training stage from the command line, for `accelerate launch`:

    accelerate launch --config_file configs/accelerate/multi_gpu.yaml -m rlaif.cli.train_entry \
        --base-model SmolLM2-135M-Instruct --preferences RUN/preferences --stage reward --output-dir RUN/reward_model

--preferences is a folder written by `datasets.Dataset.save_to_disk` (columns prompt, chosen, rejected).
Prints the metrics as one JSON line (main process only).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from rlaif import config as config_mod
from rlaif.cli import flags
from rlaif.config import TrainConfig, TrainEntryOptions
from rlaif.errors import RlaifError


def build_parser() -> flags.Parser:
    """TrainEntryOptions, then every TrainConfig setting under its field name (--batch-size; the pipeline's
    --train-batch-size is an alias), all generated from rlaif/config.py."""
    p = flags.Parser(prog="python -m rlaif.cli.train_entry", description=__doc__.split("\n\n")[0])
    group = p.add_argument_group("train_entry options")
    for path, f, flag in flags.leaves(TrainEntryOptions):
        flags.add_one(group, f, path, [flag])
    p.add_argument("--config", help="YAML run config; its `train:` section is read, and flags override it")
    flags.add_settings(p, TrainConfig, bare=True, title="train settings (YAML section `train:`)")
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")  # hub ids download unless HF_HUB_OFFLINE=1
    a = build_parser().parse_args(argv)
    try:
        import datasets
        from accelerate import PartialState

        from rlaif.models import require
        from rlaif.training.options import check_trl, trl_classes, validate
        from rlaif.training.trainers import train_policy, train_reward

        opts = flags.apply(TrainEntryOptions(), a)
        cfg = flags.apply(config_mod.load(a.config).train, a, TrainConfig)
        validate(cfg)
        if cfg.trl:  # before any model loads: the keys of the one trl config this stage builds
            check_trl(cfg.trl, trl_classes([opts.stage], cfg.algo), flags.origin(a, TrainConfig, "trl", a.config))
        base = require(opts.base_model)[0]
        ds = datasets.load_from_disk(opts.preferences)
        if opts.stage == "reward":
            metrics = train_reward(base, ds, Path(opts.output_dir), cfg, opts.seed)
        else:
            metrics = train_policy(base, Path(opts.reward_model or ""), ds, Path(opts.output_dir), cfg, opts.seed)
    except RlaifError as e:
        print(f"rlaif: error: {e.line()}", file=sys.stderr)
        return 2
    if PartialState().is_main_process:
        print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
