"""--executor ray: an engine whose work runs on `--ray-replicas` replicas of a local engine, as a Ray Data pipeline.

The stages hand their work over as blocks, each one batch exactly as the local executor would send it to its
engine (`Engine.map_blocks`). Here the blocks become a `ray.data.Dataset` with one row per block; `map_batches`
runs them, one row at a time, on an actor pool of `--ray-replicas` actors, each holding one engine (hf or vLLM)
with `--ray-cpus-per-replica` CPUs and `--ray-gpus-per-replica` GPUs. Results come back in block order
(`preserve_order`), as each block finishes, and the driver alone writes them to the run folder through the stage's
own append-only store. A replica that dies is restarted by Ray and its block retried (Ray Data's actor pool: unlimited
restarts and task retries); a block's result reaches the driver once. Since every sample is seeded by its own
(seed, id, sample name) and every batch is the one the local executor forms, the files are those of one process.

Why not `ray.data.llm`: its vLLM processor takes sampling parameters per row but returns generated text and, at
most, the top log-probs of generated tokens; the judge needs the log-probabilities of given label tokens ("A",
" A", "B", " B") at one position, which our engines read from the logits, and our samples must come from our own
seeded nucleus sampler to match the local files. So each replica wraps our own engine (the same class the local
executor uses) in a Ray Data actor.
"""

from __future__ import annotations

import json
import os
from typing import Iterator

from rlaif.engines.base import Engine
from rlaif.errors import RlaifError

EXTRA = "pip install 'rlaif[ray]' (from a checkout: pip install '.[ray]')"


def import_ray():
    """ray and ray.data, or the one-line error that names the extra."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise RlaifError(f"--executor ray needs Ray, which is not installed ({e.name or e})", "--executor ray",
                         f"{EXTRA}, or drop --executor ray") from None
    return ray


def connect(address: str | None) -> None:
    """Join the cluster at `address` (auto, or HOST:PORT), or start a local Ray instance sized to this machine."""
    ray = import_ray()
    if ray.is_initialized():
        return
    import logging

    env = {k: v for k, v in os.environ.items() if k.startswith(("HF_", "TRANSFORMERS_", "RLAIF_", "OMP_"))}
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False, include_dashboard=False,
                 runtime_env={"env_vars": env} if env else None)
    except ConnectionError as e:
        raise RlaifError(f"cannot reach a Ray cluster at {address!r} ({str(e).splitlines()[0][:160]})",
                         "--ray-address", "start one with `ray start --head`, or leave --ray-address unset for a "
                         "local Ray instance") from None
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # not a line per Dataset executed
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # results in block order: rows are written as one process writes them
    ctx.enable_progress_bars = False  # the stages' own bars count rows


def _probe(cfg, spec: tuple, build) -> dict:
    engine = build(cfg, spec)
    try:
        return {"identity": engine.identity, "batch_size": engine.batch_size,
                "supports_logprobs": getattr(engine, "supports_logprobs", True)}
    finally:
        engine.close()


class Replica:
    """A Ray Data actor: one engine, and the stage's work function run on each block it is given."""

    def __init__(self, cfg, spec: tuple, work, params, build):
        self.engine, self.work, self.params = build(cfg, spec), work, params

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        out = [json.dumps(self.work(self.engine, json.loads(block), self.params)) for block in batch["block"]]
        return {"block": np.array(out, dtype=object)}


_PROBED = {}  # (model, base_url, backend) -> what _probe found: once per process


class RayEngine(Engine):
    """The Engine interface over Ray replicas. `map_blocks` is the stages' hot path; the plain engine calls
    (generate, label_logprobs, complete) run as one block each, for the odd call outside it."""

    remote = True

    def __init__(self, cfg, model: str, base_url: str | None, backend: str, build):
        """build(cfg, (model, base_url, backend)): the engine each replica holds (EnginePool passes the local
        executor's; bench/scale.py its instant fake engine)."""
        ray = import_ray()
        connect(cfg.ray.address)
        self.cfg, self.spec, self.build = cfg, (model, base_url, backend), build
        self.resources = {"num_cpus": cfg.ray.cpus_per_replica, "num_gpus": cfg.ray.gpus_per_replica}
        # What the run folder's keys and checks need (the identity names dtype and context), from an engine built
        # as a replica builds it, on a replica's resources.
        info = _PROBED.get(self.spec)
        if info is None:
            try:
                info = _PROBED[self.spec] = ray.get(ray.remote(_probe).options(**self.resources).remote(cfg, self.spec,
                                                                                               self.build))
            except Exception as e:
                raise _cause(e) from None
        self.identity, self.batch_size = info["identity"], info["batch_size"]
        self.supports_logprobs = info["supports_logprobs"]
        self.stats = {"replicas": cfg.ray.replicas, "executor": "ray", "truncated": 0}

    def map_blocks(self, work, blocks, params) -> Iterator[list]:
        ray = import_ray()
        import pyarrow as pa

        # Each block goes to Ray's object store as it is made (one row each: Ray never regroups a batch), so the
        # driver holds none of the stage's inputs, and the Dataset reads them block by block.
        refs = [ray.put(pa.table({"block": [json.dumps(block)]})) for block in blocks]
        if not refs:
            return
        ds = ray.data.from_arrow_refs(refs).map_batches(
            Replica, fn_constructor_kwargs={"cfg": self.cfg, "spec": self.spec, "work": work, "params": params,
                                           "build": self.build},
            batch_size=1, compute=ray.data.ActorPoolStrategy(size=min(self.cfg.ray.replicas, len(refs))),
            **self.resources)
        del refs
        try:
            for batch in ds.iter_batches(batch_size=1, batch_format="numpy"):
                for block in batch["block"]:
                    yield json.loads(block)
        except Exception as e:
            raise _cause(e) from None

    def generate(self, conversations, *, seed, max_new_tokens: int, temperature: float, top_p: float) -> list[str]:
        from rlaif.engines.base import row_seeds

        block = {"conversations": list(conversations), "seed": row_seeds(seed, len(conversations)),
                 "kw": dict(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)}
        return next(self.map_blocks(_call, [block], "generate"))

    def label_logprobs(self, conversations, labels) -> list[dict]:
        return next(self.map_blocks(_call, [{"conversations": list(conversations), "labels": list(labels)}],
                                    "label_logprobs"))

    def complete(self, conversations, *, max_new_tokens: int) -> list[str]:
        block = {"conversations": list(conversations), "kw": {"max_new_tokens": max_new_tokens}}
        return next(self.map_blocks(_call, [block], "complete"))


def _call(engine, block: dict, method: str):
    args = {k: block[k] for k in ("seed", "labels") if k in block}
    if "labels" in args:
        return engine.label_logprobs(block["conversations"], args["labels"])
    return getattr(engine, method)(block["conversations"], **({"seed": args["seed"]} if "seed" in args else {}),
                                   **block.get("kw", {}))


def _cause(e: BaseException) -> BaseException:
    """The RlaifError (or KeyboardInterrupt) that a replica raised, unwrapped from Ray's task errors; else `e`."""
    seen, link = set(), e
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        if isinstance(link, RlaifError):
            return link
        link = getattr(link, "cause", None) or link.__cause__
    return e
