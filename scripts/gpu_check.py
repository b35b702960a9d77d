#!/usr/bin/env python
"""CUDA smoke check with no network: a small randomly initialised Llama built from a config runs
generate, judge and 2 DPO steps (plus reward, PPO and RLOO) on the GPU, through the same code as the
pipeline, and prints timings. Without a GPU it says so in one line and exits 0.

    python scripts/gpu_check.py [--tokenizer DIR] [--algos dpo,ppo,rloo]
    python scripts/gpu_check.py --cli [--size full|small] [--tokenizer DIR] [--human HH.jsonl.gz]

--cli checks the real command line instead (scripts/gpu_check_cli.py): pipeline.py with a small policy and a
larger judge, all five stages, PPO and RLOO, kill -9 and resume, agreement. --cpu runs either on the CPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from tiny_tokenizer import PROMPTS, build_tokenizer


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", help="a tokenizer folder (default: a small BPE trained here, no files needed)")
    ap.add_argument("--algos", default="dpo,ppo,rloo")
    ap.add_argument("--cpu", action="store_true", help="run the same checks on the CPU (to test this script)")
    ap.add_argument("--cli", action="store_true", help="check pipeline.py itself, with two models (gpu_check_cli.py)")
    ap.add_argument("--size", choices=["full", "small"], default="full", help="--cli: full (GPU) or small (CPU test)")
    ap.add_argument("--human", help="--cli: the HH-RLHF test file (default ../shared/data or .whl/data)")
    ap.add_argument("--work", help="--cli: keep the models, runs and logs in this folder")
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available() and not args.cpu:
        print("gpu_check: no CUDA device found; nothing to check (exit 0)")
        return 0
    if args.cli:
        if args.cpu:
            os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the pipeline processes too
        from gpu_check_cli import main as cli_main

        return cli_main(args)
    from transformers import LlamaConfig, LlamaForCausalLM

    from rlaif.config import TrainConfig
    from rlaif.judging.constitution import load
    from rlaif.engines.hf import HFEngine
    from rlaif.judging.scores import pair_scores
    from rlaif.stages.judge import run_judge
    from rlaif.stages.preferences import build
    from rlaif.training.trainers import train_policy, train_reward

    t0 = time.time()
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    print(f"gpu_check: {device}, torch {torch.__version__}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="gpu_check-"))
    tok = build_tokenizer(args.tokenizer)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                         tie_word_embeddings=True)
    base = work / "tiny-llama"
    LlamaForCausalLM(config).save_pretrained(base)
    tok.save_pretrained(base)
    times = {"build": time.time() - t0}

    engine = HFEngine(str(base), "tiny-llama")
    convs = [[{"role": "user", "content": p}] for p in PROMPTS]
    t = time.time()
    outs_a = engine.generate(convs, seed=1, max_new_tokens=32, temperature=0.8, top_p=0.95)
    outs_b = engine.generate(convs, seed=2, max_new_tokens=32, temperature=0.8, top_p=0.95)
    times["generate"] = time.time() - t
    print(f"generate: {len(convs)} prompts x 2 on {engine.device} ({engine.dtype}): {times['generate']:.2f} s, "
          f"{engine.stats['completion_tokens'] / times['generate']:.0f} tokens/s", flush=True)
    pairs = [{"pair_id": f"p{i}", "prompt": p, "response_a": a or "ok", "response_b": b or "no"}
             for i, (p, a, b) in enumerate(zip(PROMPTS, outs_a, outs_b))]
    constitution = load("safety.yaml")
    t = time.time()
    judgments, counts = run_judge(engine, pairs, constitution, seed=0, mode="logprob",
                                  settings={"labels": ["A", "B"], "max_new_tokens": 0}, progress=False)
    times["judge"] = time.time() - t
    print(f"judge: {counts['judgments']} judgments (both orders): {times['judge']:.2f} s, "
          f"{times['judge'] / len(pairs):.4f} s/pair, parse failures {counts['parse_failures']}", flush=True)
    rows, kept = build(pairs, pair_scores(pairs, judgments, constitution), judgments, 0.0)
    from datasets import Dataset

    dataset = Dataset.from_list(rows)
    engine.close()
    cfg = TrainConfig(max_steps=2, batch_size=2, max_length=128, learning_rate=1e-4)
    t = time.time()
    try:
        info = train_reward(str(base), dataset, work / "reward_model", cfg, 0)
        print(f"reward: 2 steps {time.time() - t:.2f} s, {info['seconds_per_step']:.3f} s/step, "
              f"accuracy {info['reward_accuracy']}", flush=True)
    except Exception:
        traceback.print_exc()
    status = 0
    for algo in args.algos.split(","):
        cfg.algo = algo
        t = time.time()
        try:
            info = train_policy(str(base), work / "reward_model", dataset, work / algo, cfg, 0)
            changed = _changed(base, work / algo)
            print(f"{algo}: {info['steps']} steps {time.time() - t:.2f} s, {info['seconds_per_step']:.3f} s/step, "
                  f"weights changed: {changed}", flush=True)
            status |= 0 if changed else 1
        except Exception:
            traceback.print_exc()
            status = 1
    print(f"gpu_check: total {time.time() - t0:.1f} s; kept {kept}; peak GPU memory "
          f"{torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0:.0f} MiB; {'OK' if status == 0 else 'FAILED'}")
    return status


def _changed(base: Path, trained: Path) -> bool:
    import torch
    from transformers import AutoModelForCausalLM

    a = AutoModelForCausalLM.from_pretrained(base).state_dict()
    b = AutoModelForCausalLM.from_pretrained(trained).state_dict()
    return any(not torch.equal(a[k].float(), b[k].float()) for k in a if k in b)


if __name__ == "__main__":
    sys.exit(main())
