"""Generate stage: prompts -> pairs. Two samples per prompt, with distinct seeds, batch by batch.

Each sample has its own seed, from the run seed, its pair id and "a" or "b", and every engine samples each
conversation from its own seed: a sample never depends on the batch it was generated in, so a resumed run,
or a run with another --batch-size, regenerates exactly what an uninterrupted run would.
"""

from __future__ import annotations

import json
from pathlib import Path

from tqdm import tqdm

from rlaif import DATA_DIR
from rlaif.engines.base import request_seed
from rlaif.errors import RlaifError
from rlaif.records import Pair, to_dict
from rlaif.store.files import (
    append_jsonl,
    iter_jsonl,
    json_lines,
    read_jsonl_tail_repair,
)
from rlaif.store.splits import prompt_id

DEFAULT_PROMPTS = DATA_DIR / "prompts" / "safety.jsonl"


def load_prompts(path: str | None, limit: int = 0) -> list[str]:
    """A .jsonl with a `prompt` field, or a .txt file with one prompt per line. Blank prompts are errors."""
    p = Path(path) if path else DEFAULT_PROMPTS
    if p.suffix not in (".jsonl", ".txt"):
        raise RlaifError(f"unsupported prompt file type {p.suffix!r}", str(p), "use .jsonl (a `prompt` field per line) or .txt")
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RlaifError("prompt file not found", str(p), "pass an existing file to --prompts") from None
    except UnicodeDecodeError as e:
        line = p.read_bytes()[:e.start].count(b"\n") + 1
        raise RlaifError(f"not valid UTF-8 (byte {e.start})", f"{p}:{line}", "save the file as UTF-8") from None
    except IsADirectoryError:
        raise RlaifError("is a folder, not a prompt file", str(p), "pass a .jsonl or .txt file") from None
    prompts = []
    lines = enumerate(text.splitlines(), 1) if p.suffix == ".txt" else json_lines(text.splitlines())
    for n, row in lines:
        if p.suffix == ".txt":
            prompt = row
        elif isinstance(row, json.JSONDecodeError):
            raise RlaifError(f"invalid JSON ({row.msg})", f"{p}:{n}", "write one JSON object per line")
        elif not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
            raise RlaifError("missing string field `prompt`", f"{p}:{n}", 'write {"prompt": "..."}')
        else:
            prompt = row["prompt"]
        if not prompt.strip():
            raise RlaifError("empty or whitespace-only prompt", f"{p}:{n}", "remove the line or write a prompt")
        prompts.append(prompt.strip())
        if limit and len(prompts) >= limit:
            break
    if not prompts:
        raise RlaifError("no prompts in the file", str(p), "add at least one prompt")
    return prompts


def pair_id(index: int, prompt: str) -> str:
    return f"{index:05d}-{prompt_id(prompt)[:8]}"


def run_generate(engine, prompts: list[str], out: Path, *, seed: int, batch_size: int | None, max_new_tokens: int,
                 temperature: float, top_p: float, progress: bool = True) -> dict:
    """Append the missing pairs to `out`. Returns counts. batch_size None: the engine's own."""
    batch_size = batch_size or engine.batch_size
    settings = {"seed": seed, "max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p}
    done = set()  # pair ids only: a resumed run of any size keeps the pairs on disk
    read_jsonl_tail_repair(out)
    for r in iter_jsonl(out):
        if r.get("generator") != engine.identity or {k: r["sampling"].get(k) for k in settings} != settings:
            raise RlaifError("pairs.jsonl was generated with other model or sampling settings", str(out),
                             "use a new --output-dir, or the original --policy-model/--seed/--max-new-tokens")
        done.add(r["pair_id"])
    ids = [pair_id(i, p) for i, p in enumerate(prompts)]
    todo = sum(i not in done for i in ids)
    bar = tqdm(total=len(ids), initial=len(ids) - todo, desc="generate", unit="pair", disable=not progress)
    generated = 0
    blocks = ([{"prompt": prompts[i], "pair_id": ids[i]} for i in range(start, min(start + batch_size, len(ids)))
               if ids[i] not in done] for start in range(0, len(ids), batch_size))
    for records in engine.map_blocks(generate_block, (b for b in blocks if b), settings):
        append_jsonl(out, records)
        generated += len(records)
        bar.update(len(records))
    bar.close()
    return {"pairs": len(ids), "generated": generated, "reused": len(ids) - todo}


def generate_block(engine, block: list[dict], settings: dict) -> list[dict]:
    """The pairs of one batch of prompts ({prompt, pair_id}), both samples of each in one engine call. Runs where
    the engine is: in this process, or on a Ray replica (--executor ray)."""
    seed = settings["seed"]
    convs = [[{"role": "user", "content": b["prompt"]}] for b in block]
    seeds = {s: [request_seed(seed, b["pair_id"], s) for b in block] for s in ("a", "b")}
    kw = {k: settings[k] for k in ("max_new_tokens", "temperature", "top_p")}
    outs = engine.generate(convs + convs, seed=seeds["a"] + seeds["b"], **kw)  # both samples in one batch
    return [to_dict(Pair(b["pair_id"], prompt_id(b["prompt"]), b["prompt"], a, o, engine.identity,
                         {**settings, "seed_a": sa, "seed_b": sb}))
            for b, a, o, sa, sb in zip(block, outs[:len(block)], outs[len(block):], seeds["a"], seeds["b"])]
