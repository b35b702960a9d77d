#!/usr/bin/env python
"""RSS of this process and its children (vLLM's engine-core worker included) before an engine starts, while it
serves, and after the EnginePool releases it, for the transformers and vLLM engines on the embedded model.

    python bench/engine_memory.py [hf] [vllm]

The "before" level is taken after the engine's libraries are imported (imports are not the engine's memory).
tests/test_engine_memory.py asserts on the same measurement: after <= 1.10 x before.
"""

from __future__ import annotations

import gc
import os
import sys
import time
import weakref
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

CONV = [[{"role": "user", "content": "Which is safer, A or B? A: wear a helmet. B: ride without one."}]]


def rss_tree_mib() -> tuple[float, list[str]]:
    """(RSS of this process and all its live descendants in MiB, the descendants' names). A child that has
    exited but is not yet reaped (a zombie) holds no memory and is not counted."""
    import psutil

    me = psutil.Process(os.getpid())
    total, alive = me.memory_info().rss, []
    for p in me.children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                total += p.memory_info().rss
                alive.append(" ".join(p.cmdline())[-60:] if p.name().startswith("python") else p.name())
        except psutil.NoSuchProcess:
            pass
    return total / 2**20, alive


def _settle() -> tuple[float, list[str]]:
    from rlaif.engines.base import release_memory

    release_memory(False)
    time.sleep(1.0)  # let exiting workers go
    return rss_tree_mib()


def measure(backend: str) -> dict:
    """Build the embedded model's engine through an EnginePool, use it, release it; RSS at each point.
    (Callers may shorten vLLM's start by wrapping rlaif.engines.vllm.VLLMEngine, e.g. with enforce_eager.)"""
    import torch

    from rlaif.cli import build_parser, make_config
    from rlaif.config import EMBEDDED_MODEL
    from rlaif.engines import factory

    if backend == "vllm":
        import vllm  # noqa: F401  the libraries, not the engine
        import vllm.entrypoints.llm  # noqa: F401
        import vllm.v1.engine.core_client  # noqa: F401

    else:
        import transformers.models.llama.modeling_llama  # noqa: F401

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # vLLM's worker holds a core; two torch threads beside it thrash
    cfg = make_config(build_parser("run").parse_args(["--engine", backend]))
    pool = factory.EnginePool(cfg, plan=[("judge", [(EMBEDDED_MODEL, None)]), ("reward", [])])
    before, children_before = _settle()
    t = time.time()
    engine = pool.get(EMBEDDED_MODEL)
    start_s = time.time() - t
    engine.label_logprobs(CONV, ["A", "B"])
    engine.generate(CONV, seed=0, max_new_tokens=16, temperature=0.8, top_p=0.95)
    during, children_during = rss_tree_mib()
    ref = weakref.ref(engine)
    del engine
    pool.done("judge")  # the next step (reward) needs no engine
    gc.collect()
    after, children_after = _settle()
    torch.set_num_threads(threads)
    return {"backend": backend, "before_mib": round(before), "during_mib": round(during), "after_mib": round(after),
            "children_before": children_before, "children_during": children_during,
            "children_after": children_after, "engine_alive_after": ref() is not None,
            "engines_in_pool_after": len(pool.alive()), "start_seconds": round(start_s, 1)}


def main() -> int:
    import platform

    backends = sys.argv[1:] or ["hf", "vllm"]
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
               platform.processor())
    print(f"# {cpu}, {os.cpu_count()} cores")
    for backend in backends:
        r = measure(backend)
        print(f"{backend}: RSS before {r['before_mib']} MiB, during {r['during_mib']} MiB "
              f"(child processes {r['children_during']}), after release {r['after_mib']} MiB "
              f"(child processes {r['children_after']}; {r['after_mib'] / r['before_mib']:.3f} x before); "
              f"engine object alive after: {r['engine_alive_after']}; start {r['start_seconds']} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
