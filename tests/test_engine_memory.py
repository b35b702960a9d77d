"""Engines give their memory back: the RSS of this process and its children (vLLM's worker included) returns to
within 10% of its level before the engine started, once the EnginePool releases it (bench/engine_memory.py
prints the same figures). Embedded model; about 15 s for HF and 60-90 s for vLLM on 2 cores."""

import functools
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from engine_memory import measure  # noqa: E402


def _check(r: dict, model_mib: int, within: float = 0.10):
    print(r)
    assert r["during_mib"] - r["before_mib"] > model_mib, r  # the measurement sees the engine at all
    assert r["after_mib"] <= (1 + within) * r["before_mib"], r
    assert not r["engine_alive_after"] and r["engines_in_pool_after"] == 0, r
    # no engine process left behind (multiprocessing's resource tracker, 13 MiB, stays for the process's life)
    # multiprocessing's resource tracker may outlive an earlier test in the same worker, or start with the engine
    def engines(children):
        return [c for c in children if "resource_tracker" not in c]
    assert engines(r["children_after"]) == engines(r["children_before"]), r


def test_hf_engine_gives_memory_back():
    _check(measure("hf"), model_mib=200)  # 134.5M parameters: 257 MiB in bf16, 513 MiB in fp32


@pytest.mark.vllm
@pytest.mark.slow
def test_vllm_engine_gives_memory_back(monkeypatch):
    pytest.importorskip("vllm")
    from rlaif.engines import vllm as vllm_engine

    # enforce_eager only shortens the start (23 s instead of 60-90 s); the release path is the same
    monkeypatch.setattr(vllm_engine, "VLLMEngine", functools.partial(vllm_engine.VLLMEngine, enforce_eager=True))
    r = measure("vllm")
    assert any("VLLM" in c for c in r["children_during"]), r  # the engine core ran in its own process
    _check(r, model_mib=1000)  # weights plus the 2 GiB CPU KV cache (VLLM_CPU_KVCACHE_SPACE)
