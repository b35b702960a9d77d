"""engine_args is pure: these run without vllm installed."""

import pytest

from rlaif.engines.base import request_seed
from rlaif.engines.vllm import dtype_name, engine_args
from rlaif.errors import RlaifError


def test_defaults():
    args = engine_args("/m")
    assert args["model"] == args["tokenizer"] == "/m"
    assert args["trust_remote_code"] is False
    assert args["tensor_parallel_size"] == 1 and args["data_parallel_size"] == 1
    assert args["enable_prefix_caching"] is True
    assert "enforce_eager" not in args and "max_model_len" not in args  # vLLM's own defaults


def test_pass_through():
    args = engine_args("/m", dtype="bfloat16", trust_remote_code=True, tensor_parallel_size=2, data_parallel_size=4,
                       enable_prefix_caching=False, enforce_eager=True, max_model_len=2048, seed=7,
                       gpu_memory_utilization=0.5)
    assert args["dtype"] == "bfloat16"
    assert args["trust_remote_code"] is True
    assert args["tensor_parallel_size"] == 2
    assert args["data_parallel_size"] == 4
    assert args["enable_prefix_caching"] is False
    assert args["enforce_eager"] is True
    assert args["max_model_len"] == 2048
    assert args["seed"] == 7
    assert args["gpu_memory_utilization"] == 0.5


def test_dtype_auto_matches_hf(monkeypatch):
    import torch

    from rlaif.engines.hf import pick_dtype

    for native, want in ((False, "float32"), (True, "bfloat16")):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
        assert dtype_name("auto", cuda=False) == want and pick_dtype("auto", cuda=False) == getattr(torch, want)
    assert dtype_name("auto", cuda=True) == "bfloat16"
    assert dtype_name("float16", cuda=False) == "float16"
    with pytest.raises(RlaifError):
        dtype_name("int8", cuda=False)


def test_request_seeds_stable_and_distinct():
    seeds = [request_seed(0, i) for i in range(100)] + [request_seed(1, i) for i in range(100)]
    assert len(set(seeds)) == 200
    assert request_seed(3, 5) == request_seed(3, 5)
    assert all(0 <= s < 2**63 for s in seeds)
