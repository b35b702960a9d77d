"""One training stage from the command line, for `accelerate launch`:

    accelerate launch --config_file configs/accelerate/multi_gpu.yaml -m rlaif.train_entry \
        --base-model SmolLM2-135M-Instruct --preferences RUN/preferences --stage reward --output-dir RUN/reward_model

--preferences is a folder written by `datasets.Dataset.save_to_disk` (columns prompt, chosen, rejected).
Prints the metrics as one JSON line (main process only).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from rlaif.config import TrainConfig
from rlaif.errors import RlaifError


# added with checkpoints, LoRA and trl pass-through settings (issue 14)
_NEW = ("save_steps", "lora_r", "lora_alpha", "lora_target_modules", "gradient_accumulation_steps", "warmup_steps",
        "loss_type")


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # as pipeline.py: no hub unless HF_HUB_OFFLINE=0
    p = argparse.ArgumentParser(prog="python -m rlaif.train_entry", description=__doc__.split("\n\n")[0])
    p.add_argument("--base-model", required=True, help="model name or folder (rlaif.models.resolve)")
    p.add_argument("--preferences", required=True, help="dataset folder from Dataset.save_to_disk")
    p.add_argument("--output-dir", required=True, help="folder to write the trained model into")
    p.add_argument("--stage", choices=("reward", "policy"), required=True)
    p.add_argument("--reward-model", help="trained reward model folder (policy stage, ppo/rloo)")
    d = TrainConfig()
    for name in ("algo", "max_steps", "learning_rate", "beta", "batch_size", "max_length", "eval_fraction",
                 "report_to", "threads", *_NEW):
        p.add_argument(f"--{name.replace('_', '-')}", type=type(getattr(d, name)), default=getattr(d, name))
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    try:
        import datasets
        from accelerate import PartialState

        from rlaif.models import resolve
        from rlaif.train import train_policy, train_reward

        cfg = TrainConfig(**{k: getattr(a, k) for k in ("algo", "max_steps", "learning_rate", "beta", "batch_size",
                                                        "max_length", "eval_fraction", "report_to", "threads", *_NEW)})
        base = resolve(a.base_model)[0]
        ds = datasets.load_from_disk(a.preferences)
        if a.stage == "reward":
            metrics = train_reward(base, ds, Path(a.output_dir), cfg, a.seed)
        else:
            metrics = train_policy(base, Path(a.reward_model or ""), ds, Path(a.output_dir), cfg, a.seed)
    except RlaifError as e:
        print(f"rlaif: error: {e.line()}", file=sys.stderr)
        return 2
    if PartialState().is_main_process:
        print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
