"""Pick and build engines; share one engine between stages when generator and judge are the same model."""

from __future__ import annotations

import os

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
    """Fail on a model that cannot be built, before anything is written: a local model that is not there,
    or an endpoint model (openai:NAME) without its base URL."""
    if not model.startswith("openai:"):
        from rlaif.models import resolve

        resolve(model)
    elif not base_url:
        raise RlaifError(f"{model} needs an endpoint", url_flag,
                         "pass the server's base URL, e.g. http://127.0.0.1:8000/v1")


class EnginePool:
    """Builds engines on first use and reuses them by (backend, model)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.backend = choose_backend(cfg.engine)
        self._engines = {}

    def get(self, model: str, base_url: str | None = None):
        key = (self.backend if not model.startswith("openai:") else "openai", model, base_url)
        if key not in self._engines:
            self._engines[key] = self._build(model, base_url)
        return self._engines[key]

    def _build(self, model: str, base_url: str | None):
        cfg = self.cfg
        if model.startswith("openai:"):
            from rlaif.engines.openai import OpenAIEngine

            check_model(model, base_url)
            return OpenAIEngine(model.removeprefix("openai:"), base_url, api_key=os.environ.get("OPENAI_API_KEY"),
                                concurrency=cfg.judge.concurrency)
        from rlaif.models import resolve

        path, identity = resolve(model)
        if self.backend == "vllm":
            try:
                from rlaif.engines.vllm import VLLMEngine
            except ImportError as e:
                raise RlaifError(f"vllm is not installed ({e})", "--engine vllm",
                                 "install the vllm extra (see README) or use --engine hf") from None
            return VLLMEngine(path, identity, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code,
                              tensor_parallel_size=cfg.tensor_parallel_size, data_parallel_size=cfg.data_parallel_size,
                              seed=cfg.seed)
        from rlaif.engines.hf import HFEngine

        try:
            return HFEngine(path, identity, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code,
                            role=self.role(model))
        except (OSError, ValueError) as e:  # no safetensors weights, not in the offline cache, remote code refused
            reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise RlaifError(f"cannot load model {model!r}: {reason}", "--policy-model/--judge-model",
                             "use a folder with safetensors weights (pickled .bin files are refused), set "
                             "HF_HUB_OFFLINE=0 to download a hub id, or pass --trust-remote-code if you trust it") from None

    def role(self, model: str) -> str:
        """What this run asks of the model (judge, generate or both): what a measured --dtype auto weighs."""
        stages = set(getattr(self.cfg, "stages", ()) or ())
        generates = model == self.cfg.generate.model and bool({"generate", "reward", "policy"} & stages)
        judges = model == self.cfg.judge.model and bool({"judge", "policy"} & stages)
        return "both" if generates == judges else "generate" if generates else "judge"

    def close(self):
        for e in self._engines.values():
            e.close()
        self._engines.clear()
