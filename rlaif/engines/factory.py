"""Pick and build engines, one kind per role (policy, judge); share one engine between stages when generator and
judge are the same model on the same kind of engine."""

from __future__ import annotations

import json
import os
import time

from rlaif.errors import RlaifError


def choose_backend(requested: str) -> str:
    """auto -> vllm when CUDA and vllm are both available, else hf."""
    if requested in ("hf", "vllm"):
        return requested
    if requested != "auto":
        raise RlaifError(f"unknown engine {requested!r}", "--engine", "use auto, hf or vllm")
    try:
        import importlib.util

        import torch

        return "vllm" if torch.cuda.is_available() and importlib.util.find_spec("vllm") else "hf"
    except ImportError:
        return "hf"


def check_model(model: str, base_url: str | None, url_flag: str = "--judge-base-url/--policy-base-url") -> None:
    """Fail on a model that cannot be built, before anything is written: a local model that is not there, a hub id
    that is neither in the local Hugging Face cache nor downloadable, or an endpoint model (openai:NAME) without
    its base URL."""
    if model.startswith("rm:"):  # a reward model: a one-output sequence classifier, and a judge only
        from rlaif.engines.reward import check_reward_model

        if url_flag.startswith("--policy"):
            raise RlaifError(f"{model} is a reward model: it scores responses but cannot generate them",
                             "--policy-model", "use rm: with --judge-model only")
        check_reward_model(model)
    elif not model.startswith("openai:"):
        from rlaif.models import require

        require(model)
    elif not base_url:
        raise RlaifError(f"{model} needs an endpoint", url_flag,
                         "pass the server's base URL, e.g. http://127.0.0.1:8000/v1")


def judge_lives_through_training(cfg) -> bool:
    """--reward judge with the policy stage: the judge rates every completion the trainer samples."""
    train = getattr(cfg, "train", None)
    return getattr(train, "reward", None) == "judge" and "policy" in (getattr(cfg, "stages", None) or ())


# Context given to a local engine when --max-model-len is unset: the model's own, capped here. vLLM sizes its
# KV cache (and, on CPU, its prefill budget) by this length, and a 128k context can fail to fit beside a second
# model. The pipeline's prompts need far less: over the first 300 HH-RLHF harmless test rows, the longest judge
# prompt of the three shipped constitutions is 1,275 tokens (median 396, SmolLM2's tokenizer). Longer prompts are
# cut as before and counted in `truncated`.
CONTEXT_CAP = 4096


def check_memory_settings(cfg) -> None:
    """--gpu-memory-utilization in (0, 1]; --max-model-len a positive integer or unset."""
    g = cfg.gpu_memory_utilization
    if isinstance(g, bool) or not isinstance(g, (int, float)) or not 0 < g <= 1:
        raise RlaifError(f"gpu_memory_utilization must be in (0, 1], got {g!r}", "--gpu-memory-utilization",
                         "pass a fraction such as 0.85 (the share of GPU memory vLLM may claim)")
    n = cfg.max_model_len
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise RlaifError(f"max_model_len must be a positive integer, got {n!r}", "--max-model-len",
                         "pass a token count such as 4096, or leave it unset for the model's own (capped)")


ROLES = ("policy", "judge")


def replica_engine(cfg, spec: tuple):
    """The engine a Ray replica holds (--executor ray): the one the local executor builds for (model, base_url,
    backend), with --ray-cpus-per-replica torch threads (rounded down, at least 1)."""
    import torch

    torch.set_num_threads(max(1, int(cfg.ray.cpus_per_replica)))
    return EnginePool(cfg)._build(*spec)


class EnginePool:
    """Builds engines on first use, reuses them by (backend, model), and releases each one as soon as the
    steps that need it are over, so that at most one local model holds memory at a time.

    Each role has its engine kind: --policy-engine for the policy (generation, revision, evaluating trained
    policies), --judge-engine for the judge, both defaulting to --engine. A model that generates and judges is
    one engine when both roles use the same kind, and two (never shared) when they do not.

    `plan` lists the run's steps in order, each with the models it needs: [(step, [(model, base_url[, role])])],
    role "policy" unless given. After `done(step)`, every engine that the next step does not need is closed and
    dropped; a step that needs no engine (preferences, training) therefore starts with none alive. Without a
    plan, engines live until `close()` (agreement and robustness use one judge throughout)."""

    def __init__(self, cfg, plan=()):
        check_memory_settings(cfg)
        self.cfg = cfg
        judge = getattr(cfg, "judge_engine", None) or cfg.engine
        if judge == "auto" and judge_lives_through_training(cfg):
            # --reward judge keeps the judge beside trl's training: a transformers engine takes its weights' memory,
            # where vLLM would claim --gpu-memory-utilization of the GPU (--judge-engine vllm still asks for it)
            judge = "hf"
        self.backends = {"policy": choose_backend(getattr(cfg, "policy_engine", None) or cfg.engine),
                         "judge": choose_backend(judge)}
        self._engines = {}
        self._starts = []  # engines built since take_starts() last ran: their start, for the stage that paid it
        self.plan = [(step, [self._key(*m) for m in models]) for step, models in plan]

    def _key(self, model: str, base_url: str | None = None, role: str = "policy"):
        if role not in ROLES:
            raise ValueError(f"unknown engine role {role!r}")
        kind = "openai" if model.startswith("openai:") else "rm" if model.startswith("rm:") else self.backends[role]
        return (kind, model, base_url)

    def get(self, model: str, base_url: str | None = None, role: str = "policy"):
        """The engine of `model` for `role` (policy or judge), built on first use."""
        key = self._key(model, base_url, role)
        if key not in self._engines:
            self._engines[key] = self._timed(key, self._build, model, base_url, backend=key[0])
        return self._engines[key]

    def _timed(self, key, make, *args, **kw):
        started = time.perf_counter()
        engine = make(*args, **kw)
        self._starts.append({"engine": ":".join(key[:-2]), "model": key[-2],
                             "seconds": round(time.perf_counter() - started, 2),
                             **{k: round(v, 2) for k, v in (getattr(engine, "start", None) or {}).items()}})
        return engine

    def take_starts(self) -> dict:
        """The engines built since the last call (for the stage that paid for them): their total start seconds, and
        each one's parts. A stage's work is its seconds less these."""
        starts, self._starts = self._starts, []
        return {"seconds": round(sum(s["seconds"] for s in starts), 2), "engines": starts}

    def judge(self, model: str, base_url: str | None = None):
        """The judge's engine of `model`. When both roles use the same kind of engine, that is `get(model,
        base_url)`: one engine serves a model that generates and judges."""
        if self.backends["judge"] == self.backends["policy"]:
            return self.get(model, base_url)
        return self.get(model, base_url, role="judge")

    def replicated(self, model: str, base_url: str | None = None, judge: bool = False):
        """The engine of a stage that --executor ray spreads over replicas (generate, judge, revise): under it, a
        RayEngine for a local model (an endpoint stays one client: its server does the spreading); else what
        get() (judge=False) or judge() gives."""
        role = "judge" if judge and self.backends["judge"] != self.backends["policy"] else "policy"
        key = self._key(model, base_url, role)
        if getattr(self.cfg, "executor", "local") != "ray" or key[0] in ("openai", "rm"):  # rm: stays local
            return self.judge(model, base_url) if judge else self.get(model, base_url)
        if ("ray",) + key not in self._engines:
            from rlaif.engines.replicas import RayEngine

            self._engines[("ray",) + key] = self._timed(("ray",) + key, RayEngine, self.cfg, model, base_url, key[0],
                                                        build=replica_engine)
        return self._engines[("ray",) + key]

    def alive(self) -> list:
        """Keys of the engines now held."""
        return list(self._engines)

    def done(self, step: str) -> None:
        """`step` is over: release the engines the next step in the plan does not need."""
        names = [s for s, _ in self.plan]
        if step not in names:
            return
        i = names.index(step)
        following = set(self.plan[i + 1][1]) if i + 1 < len(self.plan) else set()
        self.plan = self.plan[i + 1:]
        for key in [k for k in self._engines if k not in following]:
            self.release(key)

    def release(self, key) -> None:
        engine = self._engines.pop(key, None)
        if engine is not None:
            engine.close()

    def _context(self, path: str) -> int | None:
        """The max_model_len a local engine gets: --max-model-len, else the model's own capped at CONTEXT_CAP."""
        from rlaif.engines.vllm import context_length

        own = context_length(path, self.cfg.trust_remote_code)
        if self.cfg.max_model_len is None:
            return min(own, CONTEXT_CAP)
        if self.cfg.max_model_len > own:
            raise RlaifError(f"max_model_len {self.cfg.max_model_len} exceeds the model's context of {own} tokens",
                             "--max-model-len", f"pass at most {own}, or leave it unset")
        return self.cfg.max_model_len

    def _build(self, model: str, base_url: str | None, backend: str | None = None):
        cfg, backend = self.cfg, backend or self.backends["policy"]
        if model.startswith("openai:"):
            from rlaif.engines.openai import OpenAIEngine

            check_model(model, base_url)
            return OpenAIEngine(model.removeprefix("openai:"), base_url, api_key=os.environ.get("OPENAI_API_KEY"),
                                concurrency=cfg.judge.concurrency)
        if model.startswith("rm:"):
            from rlaif.engines.reward import RewardEngine, check_reward_model

            path, identity = check_reward_model(model)
            return RewardEngine(path, identity, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code,
                                max_model_len=self._context(path))
        from rlaif.models import require

        path, identity = require(model)
        if backend == "vllm":
            try:
                from rlaif.engines.vllm import VLLMEngine
            except ImportError as e:
                raise RlaifError(f"vllm is not installed ({e})", "--engine vllm",
                                 "install the vllm extra (see README) or use --engine hf") from None
            kw = dict(dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code,
                      tensor_parallel_size=cfg.tensor_parallel_size, data_parallel_size=cfg.data_parallel_size,
                      seed=cfg.seed, gpu_memory_utilization=cfg.gpu_memory_utilization)
            extra = getattr(cfg, "vllm", None) or {}
            if "max_model_len" not in extra:
                kw["max_model_len"] = self._context(path)
            if extra:  # the `vllm:` engine arguments win, and can change outputs: part of the engine's identity
                identity = f"{identity}+vllm{json.dumps(extra, sort_keys=True, default=str)}"
            return VLLMEngine(path, identity, **{**kw, **extra}, role=self.role(model, backend))
        from rlaif.engines.hf import HFEngine

        try:
            device = getattr(cfg.judge, "device", None) if model == cfg.judge.model else None  # --judge-device
            return HFEngine(path, identity, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code, device=device,
                            max_model_len=self._context(path), role=self.role(model, backend))
        except (OSError, ValueError) as e:  # no safetensors weights, not in the offline cache, remote code refused
            reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise RlaifError(f"cannot load model {model!r}: {reason}", "--policy-model/--judge-model",
                             "use a folder with safetensors weights (pickled .bin files are refused), let a hub id "
                             "download (network on, HF_HUB_OFFLINE unset), or pass --trust-remote-code if you trust "
                             "it") from None

    def role(self, model: str, backend: str | None = None) -> str:
        """What this run asks of the model (judge, generate or both) on an engine of kind `backend` (any when None):
        what a measured --dtype auto weighs."""
        stages = set(getattr(self.cfg, "stages", ()) or ())
        on = {r: backend is None or self.backends[r] == backend for r in ROLES}
        generates = on["policy"] and model == self.cfg.generate.model and bool({"generate", "reward", "policy"} & stages)
        judges = on["judge"] and model == self.cfg.judge.model and bool({"judge", "policy"} & stages)
        return "both" if generates == judges else "generate" if generates else "judge"

    def close(self):
        for key in list(self._engines):
            self.release(key)
