"""Argument parsing and subcommands only. Heavy work lives in rlaif.run (imported lazily)."""

from __future__ import annotations

import argparse
import os
import sys

from rlaif import config as config_mod
from rlaif.errors import RlaifError

SUBCOMMANDS = ("run", "agreement", "robustness")

# flag -> (config section or None, field)
OVERRIDES = {
    "constitution": (None, "constitution"), "output_dir": (None, "output_dir"), "seed": (None, "seed"),
    "engine": (None, "engine"), "dtype": (None, "dtype"), "trust_remote_code": (None, "trust_remote_code"),
    "tensor_parallel_size": (None, "tensor_parallel_size"), "data_parallel_size": (None, "data_parallel_size"),
    "policy_model": ("generate", "model"), "policy_base_url": ("generate", "base_url"),
    "num_prompts": ("generate", "num_prompts"), "prompts": ("generate", "prompts"),
    "max_new_tokens": ("generate", "max_new_tokens"), "batch_size": ("generate", "batch_size"),
    "temperature": ("generate", "temperature"),
    "judge_model": ("judge", "model"), "judge_base_url": ("judge", "base_url"),
    "concurrency": ("judge", "concurrency"), "margin": ("preferences", "min_margin"),
    "algo": ("train", "algo"), "max_steps": ("train", "max_steps"), "learning_rate": ("train", "learning_rate"),
    "beta": ("train", "beta"), "report_to": ("train", "report_to"), "threads": ("train", "threads"),
    "save_steps": ("train", "save_steps"), "lora_r": ("train", "lora_r"), "lora_alpha": ("train", "lora_alpha"),
    "lora_target_modules": ("train", "lora_target_modules"),
    "gradient_accumulation_steps": ("train", "gradient_accumulation_steps"),
    "warmup_steps": ("train", "warmup_steps"), "loss_type": ("train", "loss_type"),
}


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--constitution", help="constitution: a bare name (constitutions/NAME) or a path")
    p.add_argument("--config", help="YAML run config; flags override it")
    p.add_argument("--output-dir", help="run folder (default: runs/<constitution>-<UTC timestamp>)")
    p.add_argument("--seed", type=int, help="seed for sampling, principle draws and splits (default 0)")
    p.add_argument("--engine", choices=["auto", "hf", "vllm"], help="auto picks vllm when CUDA and vllm are available")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--judge-model", help="judge: SmolLM2-135M-Instruct (default), a local folder, a hub id, or openai:NAME")
    p.add_argument("--judge-base-url", help="OpenAI-compatible endpoint for --judge-model openai:NAME (key: $OPENAI_API_KEY)")
    p.add_argument("--concurrency", type=int, help="requests in flight against an endpoint (default 8)")
    p.add_argument("--trust-remote-code", action="store_true", default=None, help="allow model repos to run their own code")
    p.add_argument("--tensor-parallel-size", type=int, help="vLLM tensor parallelism")
    p.add_argument("--data-parallel-size", type=int, help="vLLM data parallelism")


def build_parser(command: str) -> argparse.ArgumentParser:
    if command == "agreement":
        p = argparse.ArgumentParser(prog="pipeline.py agreement", description="Judge-vs-human agreement report.")
        _common(p)
        p.add_argument("--human", required=True, help="human-labelled pairs: HH-RLHF .jsonl(.gz), .jsonl/.json/.csv/.parquet, or a save_to_disk folder")
        p.add_argument("--judge", action="append", choices=["model", "length", "random"], help="repeatable (default: model)")
        p.add_argument("--label-columns", help="comma-separated annotator columns")
        p.add_argument("--limit", type=int, help="evaluate the first N pairs")
        p.add_argument("--skip-bad-rows", action="store_true", help="skip and count malformed rows instead of failing")
        return p
    if command == "robustness":
        p = argparse.ArgumentParser(prog="pipeline.py robustness", description="Prompt-injection flip rate of the judge.")
        _common(p)
        p.add_argument("--pairs", help="injection set (default data/injection/pairs.jsonl)")
        p.add_argument("--limit", type=int, help="use the first N pairs")
        return p
    p = argparse.ArgumentParser(
        prog="pipeline.py", description="RLAIF: generate pairs, judge them against a constitution, build preferences, "
        "train a reward model and a policy. Subcommands: agreement, robustness (see `pipeline.py agreement --help`).")
    _common(p)
    p.add_argument("--policy-model", help="generator/policy: SmolLM2-135M-Instruct (default), a local folder, a hub id, or openai:NAME")
    p.add_argument("--policy-base-url", help="OpenAI-compatible endpoint for --policy-model openai:NAME")
    p.add_argument("--prompts", help="prompt file: .jsonl with a `prompt` field, or .txt, one per line")
    p.add_argument("--num-prompts", type=int, help="prompts to use (default 32; 0 = all)")
    p.add_argument("--max-new-tokens", type=int, help="tokens per sampled response (default 64)")
    p.add_argument("--temperature", type=float, help="sampling temperature (default 0.8)")
    p.add_argument("--batch-size", type=int, help="prompts generated together; pairs are written batch by batch "
                   "(default: the engine's, 64 for vllm, 32 otherwise)")
    p.add_argument("--stages", help="comma-separated: generate,judge,preferences,reward,policy (default: all)")
    p.add_argument("--margin", type=float, help="keep pairs with |score-0.5| above this (default 0)")
    p.add_argument("--algo", choices=["dpo", "ppo", "rloo"], help="policy algorithm (default dpo)")
    p.add_argument("--max-steps", type=int, help="optimizer steps per trainer")
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--beta", type=float, help="KL coefficient")
    p.add_argument("--report-to", choices=["none", "tensorboard", "wandb"], help="training logs (default none)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--save-steps", type=int, help="trl checkpoint every N steps, last 2 kept; a rerun resumes "
                   "(default 0 = max_steps // 2, at most 500; -1 = none)")
    p.add_argument("--lora-r", type=int, help="LoRA rank for the reward model and the policy (default 0 = off)")
    p.add_argument("--lora-alpha", type=int, help="LoRA alpha (default 16)")
    p.add_argument("--lora-target-modules", help="comma-separated module names, or all-linear (default)")
    p.add_argument("--gradient-accumulation-steps", type=int, help="batches per optimizer step (default 1)")
    p.add_argument("--warmup-steps", type=float, help="learning-rate warmup: steps (>= 1) or a share of max_steps (default 0)")
    p.add_argument("--loss-type", help="DPO loss: sigmoid (default), ipo, hinge, robust, ... (trl DPOConfig.loss_type)")
    p.add_argument("--dry-run", action="store_true", help="validate, print the first judge prompts; load no model, write nothing")
    p.add_argument("--list-principles", action="store_true", help="list the constitution's principles and exit")
    return p


def make_config(args: argparse.Namespace) -> config_mod.RunConfig:
    cfg = config_mod.load(args.config)
    for flag, (section, name) in OVERRIDES.items():
        value = getattr(args, flag, None)
        if value is not None:
            setattr(getattr(cfg, section) if section else cfg, name, value)
    if getattr(args, "stages", None):
        stages = [s.strip() for s in args.stages.split(",") if s.strip()]
        bad = [s for s in stages if s not in config_mod.STAGES]
        if bad or not stages:
            raise RlaifError(f"unknown stage(s) {', '.join(bad) or '(none)'}", "--stages",
                             f"choose from {','.join(config_mod.STAGES)}")
        cfg.stages = [s for s in config_mod.STAGES if s in stages]
    if cfg.generate.num_prompts < 0:
        raise RlaifError("--num-prompts must not be negative", "--num-prompts", "pass 0 for every prompt, or a positive number")
    for name, value in (("--max-new-tokens", cfg.generate.max_new_tokens), ("--batch-size", cfg.generate.batch_size),
                        ("judge.batch_size", cfg.judge.batch_size), ("--max-steps", cfg.train.max_steps)):
        if value is not None and value < 1:  # a batch size left unset (None) is the engine's own
            raise RlaifError(f"{name} must be positive", name, "pass a number of at least 1")
    from rlaif.train_options import validate

    validate(cfg.train)
    return cfg


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and argv[0] in SUBCOMMANDS else "run"
    args = build_parser(command).parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub unless the user asks for it with HF_HUB_OFFLINE=0
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        cfg = make_config(args)
        if command == "agreement":
            from rlaif.agreement_cmd import main as agreement_main

            return agreement_main(cfg, args)
        if command == "robustness":
            from rlaif.robustness import main as robustness_main

            return robustness_main(cfg, args)
        from rlaif import run

        return run.main(cfg, dry_run=args.dry_run, list_principles=args.list_principles)
    except RlaifError as e:
        print(f"rlaif: error: {e.line()}".replace("\n", " "), file=sys.stderr)
        return 2
