"""--executor ray: an engine whose work runs on `--ray-replicas` replicas of a local engine, as a Ray Data pipeline.

The stages hand their work over as blocks, each one batch exactly as the local executor would send it to its
engine (`Engine.map_blocks`). Here the stage becomes a `ray.data.Dataset` with one row per block;
`map_batches` runs the rows, one at a time, on an actor pool of `--ray-replicas` actors, each holding one engine
(hf or vLLM) with `--ray-cpus-per-replica` CPUs and `--ray-gpus-per-replica` GPUs. The driver makes the blocks as
the replicas take them, through a feeder actor that holds a window of them (the driver's memory stays flat).
Blocks finish in any order; the driver hands their results on in block order, as soon as each one and those before
it have arrived, and it alone writes them to the run folder through the stage's own append-only store. A replica
that dies is restarted by Ray and its row retried (Ray Data's actor pool: unlimited restarts and task retries); the
retried row takes the same block again from the feeder, and a block's result reaches the driver once. Since every
sample is seeded by its own (seed, id, sample name) and every batch is the one the local executor forms, the files
are those of one process.

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
COUNTERS = ("truncated", "prompt_tokens", "completion_tokens")  # an engine's stats that its replicas add up


def import_ray():
    """ray and ray.data, or the one-line error that names the extra."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise RlaifError(f"--executor ray needs Ray, which is not installed ({e.name or e})", "--executor ray",
                         f"{EXTRA}, or drop --executor ray") from None
    return ray


def check_address(address: str | None) -> None:
    """A HOST:PORT that nothing answers on: one line now, before anything is written (Ray itself retries for
    minutes). None (a local instance) and `auto` (the cluster this machine runs) are Ray's to find."""
    if address in (None, "auto"):
        return
    import socket

    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise RlaifError(f"not a Ray cluster address: {address!r}", "--ray-address",
                         "pass auto, or the head node's HOST:PORT (ray start --head prints it)")
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as e:
        raise RlaifError(f"cannot reach a Ray cluster at {address!r} ({e.strerror or e})", "--ray-address",
                         "start one with `ray start --head`, or leave --ray-address unset for a local Ray "
                         "instance") from None


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
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "Progress bars disabled": ours show
    ctx = ray.data.DataContext.get_current()
    # Rows finish in any order; RayEngine.map_blocks hands results on in block order (so rows are written as one
    # process writes them), and Ray Data need not hold finished rows back
    ctx.execution_options.preserve_order = False
    ctx.enable_progress_bars = False  # the stages' own bars count rows


def check_cluster(cfg) -> None:
    """Join the cluster now, and refuse replicas it cannot place: one line before anything is written, where Ray
    would otherwise wait for the resources for ever (an actor pool of N replicas starts only when all N fit). The
    check is against the nodes alive now; an autoscaling cluster that would add them later is not foreseen."""
    connect(cfg.ray.address)
    ray = import_ray()
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    for kind, flag, need in (("GPU", "--ray-gpus-per-replica", cfg.ray.gpus_per_replica),
                             ("CPU", "--ray-cpus-per-replica", cfg.ray.cpus_per_replica)):
        if not need:
            continue
        have = [n.get(kind, 0.0) for n in nodes]
        fits = sum(int(h / need + 1e-9) for h in have)  # replicas that the nodes can hold side by side
        if fits < cfg.ray.replicas:
            where = f"the cluster at {cfg.ray.address}" if cfg.ray.address else "the local Ray instance"
            raise RlaifError(f"{cfg.ray.replicas} replicas of {need:g} {kind}s each do not fit {where}: its "
                             f"{len(nodes)} node(s) have {', '.join(f'{h:g}' for h in have)} {kind}s, room for "
                             f"{fits} replica(s)", f"--ray-replicas/{flag}",
                             f"ask for fewer replicas or fewer {kind}s each, or add nodes to the cluster")


def _probe(cfg, spec: tuple, build) -> dict:
    engine = build(cfg, spec)
    try:
        return {"identity": engine.identity, "batch_size": engine.batch_size,
                "supports_logprobs": getattr(engine, "supports_logprobs", True)}
    finally:
        engine.close()


class Replica:
    """A Ray Data actor: one engine, and the stage's work function run on each block it is given. Its rows are
    row numbers; for each it takes a block from the feeder, and returns the block's index with its result."""

    def __init__(self, cfg, spec: tuple, work, params, build, feeder):
        self.engine, self.work, self.params, self.feeder = build(cfg, spec), work, params, feeder

    def __call__(self, batch: dict) -> dict:
        import numpy as np
        import ray

        index, out, counts = [], [], []
        for row in batch["id"]:
            i, block = ray.get(self.feeder.take.remote(int(row)))  # None: the driver stopped making blocks
            before = dict(self.engine.stats)
            index.append(i)
            out.append("null" if block is None else json.dumps(self.work(self.engine, json.loads(block), self.params)))
            counts.append(json.dumps({k: v - before.get(k, 0) for k, v in self.engine.stats.items()
                                      if k in COUNTERS}))
        return {"index": np.array(index, dtype=np.int64), "block": np.array(out, dtype=object),
                "counts": np.array(counts, dtype=object)}


class Feeder:
    """Blocks on their way from the driver to the replicas, a window at a time. The driver puts block i once
    fewer than `window` blocks wait untaken; each row the replicas run takes the oldest untaken block, and takes
    the same one again if Ray retries the row. A block stays until the driver has its result. A threaded actor:
    a take can wait for a put."""

    def __init__(self, window: int):
        import collections
        import threading

        self.blocks, self.untaken, self.rows, self.window = {}, collections.deque(), {}, window
        self.stopped = False
        self.cond = threading.Condition()

    def put(self, i: int, block: str) -> None:
        with self.cond:
            self.cond.wait_for(lambda: len(self.untaken) < self.window)
            self.blocks[i] = block
            self.untaken.append(i)
            self.cond.notify_all()

    def take(self, row: int) -> tuple[int, str | None]:
        with self.cond:
            if row not in self.rows:
                self.cond.wait_for(lambda: self.untaken or self.stopped)
                if not self.untaken:
                    return -1, None
                self.rows[row] = self.untaken.popleft()
                self.cond.notify_all()
            i = self.rows[row]
            return i, self.blocks.get(i)

    def done(self, i: int) -> None:
        """The driver has block i's result."""
        with self.cond:
            self.blocks.pop(i, None)

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify_all()


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
        self.stats = {"replicas": cfg.ray.replicas, "executor": "ray", **dict.fromkeys(COUNTERS, 0)}

    def map_blocks(self, work, blocks, params) -> Iterator[list]:
        """The Dataset is one row per block (one row per Ray block, so that each is its own task). The
        blocks themselves are made here, in a thread, as the replicas take them: a feeder actor holds a window of
        them, so neither the driver nor Ray's object store ever holds a stage's inputs. `blocks` with a length is
        made lazily; any other iterable is read into a list first (the stages' small ones)."""
        ray = import_ray()
        import threading

        blocks = blocks if hasattr(blocks, "__len__") else list(blocks)
        if not len(blocks):
            return
        feeder = ray.remote(Feeder).options(num_cpus=0, max_concurrency=16 + 8 * self.cfg.ray.replicas).remote(
            max(16, 8 * self.cfg.ray.replicas))
        failed = []

        def make() -> None:
            try:
                for i, block in enumerate(blocks):
                    ray.get(feeder.put.remote(i, json.dumps(block)))
            except BaseException as e:  # noqa: BLE001 (handed to the driver's loop)
                failed.append(e)
                feeder.stop.remote()

        maker = threading.Thread(target=make, name="rlaif-blocks", daemon=True)
        maker.start()
        # from_items, not range: range's read tasks each ask for a CPU, which the replicas may all hold
        rows = [{"id": i} for i in range(len(blocks))]
        ds = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            Replica, fn_constructor_kwargs={"cfg": self.cfg, "spec": self.spec, "work": work, "params": params,
                                           "build": self.build, "feeder": feeder},
            batch_size=1, compute=ray.data.ActorPoolStrategy(size=min(self.cfg.ray.replicas, len(blocks))),
            **self.resources)
        arrived, ready = {}, 0  # results by block index, and the next index to hand on
        try:
            for batch in ds.iter_batches(batch_size=1, batch_format="numpy"):
                for i, block, counts in zip(batch["index"], batch["block"], batch["counts"]):
                    if failed:
                        raise failed[0]
                    feeder.done.remote(int(i))
                    arrived[int(i)] = block
                    for k, v in json.loads(counts).items():  # a retried block's counts arrive once, with it
                        self.stats[k] = self.stats.get(k, 0) + v
                while ready in arrived:
                    yield json.loads(arrived.pop(ready))
                    ready += 1
            if failed:
                raise failed[0]
            assert ready == len(blocks), f"{len(blocks) - ready} blocks never came back"
        except Exception as e:
            raise _cause(e) from None
        finally:
            feeder.stop.remote()
            ray.kill(feeder)
            maker.join(timeout=10)

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
