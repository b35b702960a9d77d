#!/usr/bin/env python
"""The judge against its floor on a GPU, with no network: a random Llama the size of SmolLM2-1.7B (bf16),
256 log-prob judgments of about 1,450 tokens through run_judge (the transformers engine), against bare
batched forward passes (batch 1, 8, 32, last-position logits) on the same prompts; then HF generation
tokens/s (64 prompts x 128 tokens). Prints `judge_over_forward=X` last (target <= 1.3).

    python scripts/judge_floor.py [--pairs 128] [--small] [--cpu]
--small: a 4-layer, 256-wide model and 8 pairs, to test the script on a CPU.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=128)
    ap.add_argument("--tokens", type=int, default=1450, help="judge prompt length to aim for")
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--cpu", action="store_true")
    args = ap.parse_args()
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from rlaif.judging.constitution import load
    from rlaif.engines.hf import HFEngine
    from rlaif.judging.jobs import make_jobs
    from rlaif.stages.judge import run_judge
    from tiny_tokenizer import build_tokenizer

    if not torch.cuda.is_available() and not args.cpu:
        print("judge_floor: no CUDA device found (pass --cpu to run it anyway); exit 0")
        return 0
    device = "cuda" if torch.cuda.is_available() and not args.cpu else "cpu"
    size = dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=8,
                num_key_value_heads=8) if args.small else dict(
        hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32, num_key_value_heads=32)
    pairs_n = 8 if args.small else args.pairs
    tok = build_tokenizer(None)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=49152, max_position_embeddings=4096, tie_word_embeddings=True,
                                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                         pad_token_id=tok.pad_token_id, **size)).to(torch.bfloat16)
    folder = tempfile.mkdtemp(prefix="judge-floor-")
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    del model
    engine = HFEngine(folder, "random-llama-1.7b", dtype="bfloat16", device=device, role="judge")
    constitution = load("safety.yaml")
    words = "Response A B Verdict principle judge "

    def pairs(k: int) -> list[dict]:
        return [{"pair_id": f"p{i}", "prompt": f"How do I pick a lock? {i}",
                 "response_a": words * (k + i % 7), "response_b": words * (k + 3 + i % 5)} for i in range(pairs_n)]

    def mean_tokens(k: int) -> float:
        jobs = make_jobs(pairs(k), constitution, 0, "x", "logprob", {})
        return sum(len(engine.chat_ids([{"role": "user", "content": j.text}], 1, True)) for j in jobs) / len(jobs)

    low, high = mean_tokens(10), mean_tokens(40)  # lengths grow linearly in k: aim at --tokens
    k = max(1, round(10 + (args.tokens - low) * 30 / max(1.0, high - low)))
    judge_pairs = pairs(k)
    kw = dict(seed=0, mode="logprob", settings={"labels": ["A", "B"], "max_new_tokens": 96}, progress=False)
    run_judge(engine, judge_pairs[:2], constitution, **kw)  # warm-up
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    t = time.perf_counter()
    judgments, counts = run_judge(engine, judge_pairs, constitution, **kw)
    sync()
    judge_s = time.perf_counter() - t
    jobs = make_jobs(judge_pairs, constitution, 0, engine.identity, "logprob", kw["settings"])
    rows = [engine.chat_ids([{"role": "user", "content": j.text}], 1, keep_head=True) for j in jobs]
    bare = {}
    with torch.inference_mode():
        for batch in (1, 8, 32):
            sync()
            t = time.perf_counter()
            for start in range(0, len(rows), batch):
                ids, mask = engine._batch(rows[start:start + batch])
                engine.model(input_ids=ids, attention_mask=mask, logits_to_keep=1)
            sync()
            bare[batch] = time.perf_counter() - t
    convs = [[{"role": "user", "content": f"Tell me about topic {i}."}] for i in range(64)]
    engine.generate(convs[:2], seed=0, max_new_tokens=4, temperature=0.8, top_p=0.95)
    tokens0 = engine.stats["completion_tokens"]
    sync()
    t = time.perf_counter()
    engine.generate(convs, seed=1, max_new_tokens=128, temperature=0.8, top_p=0.95)
    sync()
    gen = (engine.stats["completion_tokens"] - tokens0) / (time.perf_counter() - t)
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    mean = sum(map(len, rows)) / len(rows)
    print(f"{name}: {len(rows)} judgments, mean {mean:.0f} tokens: judge stage {judge_s:.2f} s "
          f"({len(rows) / judge_s:.1f} judgments/s); bare forward " + ", ".join(f"batch {b} {s:.2f} s" for b, s in bare.items()))
    print(f"HF generation: {gen:.0f} tokens/s (64 prompts x 128 tokens, bf16; vLLM not measured here)")
    print(f"judge_over_forward={judge_s / min(bare.values()):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
