"""Engine choice (--engine auto|hf|vllm) and vLLM scale-out flags reaching the engine's arguments."""

import importlib.util
import sys
import types

import pytest

from rlaif.cli import build_parser, make_config
from rlaif.engines import factory
from rlaif.engines.vllm import engine_args


def _cfg(*argv):
    return make_config(build_parser("run").parse_args(list(argv)))


@pytest.mark.parametrize("cuda,has_vllm,expected", [(False, True, "hf"), (True, False, "hf"), (True, True, "vllm"),
                                                     (False, False, "hf")])
def test_auto_picks_vllm_only_with_cuda_and_vllm(monkeypatch, cuda, has_vllm, expected):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: (object() if has_vllm else None) if name == "vllm" else real(name, *a))
    assert factory.choose_backend("auto") == expected
    assert factory.choose_backend("hf") == "hf" and factory.choose_backend("vllm") == "vllm"


def test_parallel_flags_reach_vllm(monkeypatch):
    seen = {}

    class Recorder:
        def __init__(self, path, identity, **kw):
            seen.update(kw, path=path)
            self.args = engine_args(path, **{k: v for k, v in kw.items() if k != "dtype"})

    module = types.ModuleType("rlaif.engines.vllm")
    module.VLLMEngine = Recorder
    monkeypatch.setitem(sys.modules, "rlaif.engines.vllm", module)
    monkeypatch.setattr("rlaif.models.resolve", lambda name: ("/models/x", "x"))
    monkeypatch.setattr(factory.EnginePool, "_context", lambda self, path: 2048)  # no config.json at /models/x
    cfg = _cfg("--engine", "vllm", "--tensor-parallel-size", "4", "--data-parallel-size", "2", "--seed", "3",
               "--gpu-memory-utilization", "0.5")
    engine = factory.EnginePool(cfg).get(cfg.judge.model)
    assert seen["tensor_parallel_size"] == 4 and seen["data_parallel_size"] == 2 and seen["seed"] == 3
    assert seen["gpu_memory_utilization"] == 0.5 and seen["max_model_len"] == 2048
    assert seen["trust_remote_code"] is False
    assert engine.args["tensor_parallel_size"] == 4 and engine.args["data_parallel_size"] == 2
    assert engine.args["enable_prefix_caching"] is True


def test_generator_and_judge_share_one_engine(monkeypatch):
    built = []
    monkeypatch.setattr(factory.EnginePool, "_build", lambda self, model, base_url, backend: built.append(model) or object())
    pool = factory.EnginePool(_cfg("--engine", "hf"))
    assert pool.get("SmolLM2-135M-Instruct") is pool.get("SmolLM2-135M-Instruct")
    assert built == ["SmolLM2-135M-Instruct"]
