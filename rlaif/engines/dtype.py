"""`--dtype auto` on a CPU: measured, not guessed from CPU flags.

A CPU with AVX512-BF16 can still run a model's prefill slower in bf16 than in fp32 (an Intel Xeon without
AMX did, issue 17: 1.94 vs 1.41 judgments/s), while an AMD EPYC with the same flag ran it faster. So at
engine start the same small prefill (2 x 128 tokens, last-position logits) and decode (4 prompts, 8 new
tokens) run in both dtypes; the faster wins, weighing prefill for a judge, decode for a generator and both
for an engine that does both. The choice is cached per (CPU model, torch version, model architecture, role)
in `<rlaif cache>/dtype-choice.json` and printed. The architecture is the config's shapes, not the weights: a
policy, SFT model or merged LoRA trained from a model reuses the choice measured for that model. CPUs without
native bf16 get fp32 unmeasured; CUDA gets bf16; an explicit --dtype always wins (neither of those reaches this
module). vLLM on a CPU takes the same measured choice (decide_for_vllm), timed through transformers. A
measurement is only as good as the machine was quiet: each entry keeps the threads and load average it was
taken with; delete it to redo.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

PREFILL = (2, 128)  # prompts x tokens
DECODE = (4, 16, 8)  # prompts x prompt tokens x new tokens
BUDGET_S = 8.0  # repeats are skipped when one warm-up run takes more than an eighth of this


SHAPE = ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
         "num_key_value_heads", "head_dim", "vocab_size", "tie_word_embeddings")


def architecture(path: str, identity: str, trust_remote_code: bool = False) -> str:
    """What the measurement depends on: the shapes in the model's config (and its quantisation method, if any),
    not its weights. A config that cannot be read, or has no hidden_size at its top level, keys by identity."""
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code).to_dict()
    except Exception:  # noqa: BLE001 - any failure only costs a measurement keyed by identity
        return identity
    if not config.get("hidden_size"):
        return identity
    shape = {k: config[k] for k in SHAPE if config.get(k) is not None}
    if config.get("quantization_config"):
        shape["quantization"] = config["quantization_config"].get("quant_method", "yes")
    return "arch:" + json.dumps(shape, sort_keys=True, separators=(",", ":"))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def native_bf16() -> bool:
    import torch

    return bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
                or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


def cache_path() -> Path:
    from rlaif.models import cache_dir

    return cache_dir() / "dtype-choice.json"


def measure(model) -> dict:
    """Seconds of the prefill and the decode batch (the best of two, after a warm-up)."""
    import torch

    vocab = int(model.config.vocab_size)
    g = torch.Generator().manual_seed(0)
    prefill = torch.randint(100, vocab, PREFILL, generator=g)
    prompts = torch.randint(100, vocab, DECODE[:2], generator=g)

    def run_prefill():
        model(input_ids=prefill, logits_to_keep=1)

    def run_decode():
        model.generate(input_ids=prompts, attention_mask=torch.ones_like(prompts), do_sample=False,
                       max_new_tokens=DECODE[2], min_new_tokens=DECODE[2], pad_token_id=0,
                       temperature=None, top_p=None, top_k=None)

    out = {}
    with torch.inference_mode():
        for name, fn in (("prefill", run_prefill), ("decode", run_decode)):
            t = time.perf_counter()
            fn()  # warm-up (kernel set-up); on a big model or a busy machine it alone says enough
            times = [time.perf_counter() - t]
            for _ in range(2 if times[0] < BUDGET_S / 8 else 0):
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
            out[name] = round(min(times), 4)
    return out


def cost(timings: dict, role: str) -> float:
    return {"judge": timings["prefill"], "generate": timings["decode"]}.get(role, timings["prefill"] + timings["decode"])


def choose(load, arch: str, role: str):
    """(model, dtype name, why) for dtype auto on CPU. `load(torch_dtype)` builds the model; `arch` is
    architecture()'s key."""
    import torch

    name, why, model = decide(load, arch, role)
    return (model if model is not None else load(getattr(torch, name))), name, why


def decide(load, arch: str, role: str):
    """(dtype name, why, the model in that dtype if it was loaded to measure it, else None)."""
    import torch

    if not native_bf16():
        return "float32", "this CPU has no native bf16 (AVX512-BF16 or AMX)", None
    key = f"{cpu_model()} | torch {torch.__version__} | {arch} | {role}"
    cache = cache_path()
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        entry = known[key]
        return entry["dtype"], (f"measured before on this CPU for this architecture ({_summary(entry, role)}; "
                                f"cached in {cache})"), None
    fp32 = load(torch.float32)
    t32 = measure(fp32)
    bf16 = load(torch.bfloat16)  # loaded, not cast: .to() would also cast buffers (RoPE) that loading keeps fp32,
    t16 = measure(bf16)          # and a later run that reads the cached choice must get the very same model
    name = "bfloat16" if cost(t16, role) < cost(t32, role) else "float32"
    model = bf16 if name == "bfloat16" else fp32
    del fp32, bf16
    entry = {"dtype": name, "float32": t32, "bfloat16": t16, "role": role, "threads": torch.get_num_threads(),
             "load_average": os.getloadavg()[0], "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    known[key] = entry
    try:
        from rlaif.store.files import atomic_write_json

        atomic_write_json(cache, known)
    except OSError:
        pass  # an unwritable cache only costs the measurement next time
    return name, f"measured now ({_summary(entry, role)})", model


def decide_for_vllm(path: str, identity: str, role: str, trust_remote_code: bool = False) -> tuple[str, str]:
    """dtype auto for vLLM on CPU: the same measurement, timed through transformers (a proxy for vLLM's own CPU
    kernels, which cannot be timed without starting the engine twice), under the same cache key."""
    from transformers import AutoModelForCausalLM

    from rlaif.engines.base import release_memory

    def load(torch_dtype):
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, trust_remote_code=trust_remote_code,
                                                    use_safetensors=True).eval()

    name, why, model = decide(load, architecture(path, identity, trust_remote_code), role)
    del model
    release_memory(False)
    return name, why + "; timed through transformers, as a proxy for vLLM"


def _summary(entry: dict, role: str) -> str:
    what = {"judge": "prefill", "generate": "decode"}.get(role, "prefill+decode")
    return (f"{role}: {what} float32 {cost(entry['float32'], role):.3f} s, bfloat16 {cost(entry['bfloat16'], role):.3f} s "
            f"on {cpu_model()}")


def announce(name: str, why: str) -> None:
    print(f"rlaif: dtype auto -> {name}: {why}", file=sys.stderr)
