"""Generate stage: prompts -> pairs. K samples per prompt (--samples-per-prompt, default 2), with distinct
seeds, batch by batch. With K = 2 each prompt's two samples are its pair, in pairs.jsonl; with K > 2 every sample
goes to samples.jsonl and pairs.jsonl holds the pairs --pairing picks, each naming its two samples.

Each sample has its own seed, from the run seed, its prompt's key and its index (sample_seed), and every engine
samples each conversation from its own seed: a sample never depends on the batch it was generated in, so a
resumed run, or a run with another --batch-size, regenerates exactly what an uninterrupted run would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from tqdm import tqdm

from rlaif import DATA_DIR
from rlaif.engines.base import request_seed
from rlaif.errors import RlaifError
from rlaif.records import Pair, to_dict
from rlaif.judging.pairing import pairs_of
from rlaif.store.files import (
    append_jsonl,
    atomic_write_lines,
    iter_jsonl,
    json_lines,
    lines_at,
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


def sample_seed(seed: int, key: str, i: int) -> int:
    """Sample i of the prompt with this key (its pair id when K = 2): samples 0 and 1 are named a and b, as the two
    samples of a pair always were, so the first two of K samples are the pair K = 2 gives."""
    return request_seed(seed, key, "ab"[i] if i < 2 else i)


def run_generate(engine, prompts: list[str], out: Path, *, seed: int, batch_size: int | None, max_new_tokens: int,
                 temperature: float, top_p: float, progress: bool = True, samples_per_prompt: int = 2,
                 pairing: str = "all", samples: Path | None = None) -> dict:
    """Append the missing pairs to `out` (K = 2), or the missing samples to `samples` and then write every pair
    --pairing picks to `out` (K > 2). Returns counts. batch_size None: the engine's own."""
    batch_size = batch_size or engine.batch_size
    k = samples_per_prompt
    settings = {"seed": seed, "max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p}
    if k > 2:
        settings["samples_per_prompt"] = k
    target = out if k == 2 else samples
    _check_layout(out, samples, k)
    done = _done(engine, target, settings, k)  # prompt keys: a resumed run of any size keeps what is on disk
    ids = [pair_id(i, p) for i, p in enumerate(prompts)]
    todo = sum(i not in done for i in ids)
    unit = "pair" if k == 2 else "prompt"
    bar = tqdm(total=len(ids), initial=len(ids) - todo, desc="generate", unit=unit, disable=not progress)
    generated = 0
    blocks = ([{"prompt": prompts[i], "pair_id": ids[i]} for i in range(start, min(start + batch_size, len(ids)))
               if ids[i] not in done] for start in range(0, len(ids), batch_size))
    for records in engine.map_blocks(generate_block, (b for b in blocks if b), settings):
        append_jsonl(target, records)
        generated += len(records)
        bar.update(len(records) // (1 if k == 2 else k))
    bar.close()
    if k == 2:
        return {"pairs": len(ids), "generated": generated, "reused": len(ids) - todo}
    n = atomic_write_lines(out, pairs_from_samples(samples, ids, k, pairing, seed))
    return {"prompts": len(ids), "samples": len(ids) * k, "generated": generated, "reused": (len(ids) - todo) * k,
            "pairs": n, "pairing": pairing}


def _check_layout(pairs: Path, samples: Path | None, k: int) -> None:
    """A folder generated with K = 2 (pairs.jsonl alone) never gets K > 2 samples mixed in, nor the reverse."""
    if k > 2 and not Path(samples).exists() and any(True for _ in iter_jsonl(pairs)):
        raise RlaifError("this run folder's pairs.jsonl was generated with 2 samples per prompt", str(pairs),
                         "use a new --output-dir for --samples-per-prompt above 2, or keep 2")
    if k == 2 and samples is not None and Path(samples).exists():
        raise RlaifError("this run folder was generated with more than 2 samples per prompt", str(samples),
                         "pass the original --samples-per-prompt, or use a new --output-dir")


def _done(engine, path: Path, settings: dict, k: int) -> set:
    """Prompt keys whose samples are all on disk, checked against this run's model and settings. With K > 2 a
    prompt's samples are written together; a kill that left only some of the last prompt's is cut back to the
    whole prompts before it, so a resume appends exactly what an uninterrupted run would."""
    read_jsonl_tail_repair(path)
    done, group, start = set(), [], 0
    for offset, line in lines_at(path):
        r = json.loads(line)
        sampling = r["sampling"]
        if r.get("generator") != engine.identity or {key: sampling.get(key) for key in settings} != settings:
            raise RlaifError(f"{Path(path).name} was generated with other model or sampling settings", str(path),
                             "use a new --output-dir, or the original --policy-model/--seed/--max-new-tokens/"
                             "--samples-per-prompt")
        if k == 2:
            done.add(r["pair_id"])
            continue
        key = r["sample_id"].rsplit("-", 1)[0]
        if not group:
            start = offset
        if r["sample"] != len(group) or group and group[0] != key:
            raise RlaifError(f"samples out of order at {r['sample_id']}", str(path),
                             "samples.jsonl is written by the generate stage; use a new --output-dir")
        group.append(key)
        if len(group) == k:
            done.add(key)
            group = []
    if group:  # the last prompt's samples were cut short by a kill
        with open(path, "r+b") as f:
            f.truncate(start)
    return done


def pairs_from_samples(samples: Path, keys: list[str], k: int, pairing: str, seed: int) -> Iterator[dict]:
    """The pairs --pairing picks from each prompt's K samples, prompts in `keys` order: the columns of pairs.jsonl
    for K = 2, the two samples' indices in sample_a and sample_b, and their seeds in sampling."""
    offsets = {}
    for offset, line in lines_at(samples):
        offsets.setdefault(json.loads(line)["sample_id"].rsplit("-", 1)[0], []).append(offset)
    with open(samples, "rb") as f:
        for key in keys:
            rows = []
            for offset in offsets[key][:k]:
                f.seek(offset)
                rows.append(json.loads(f.readline()))
            for i, j in pairs_of(k, pairing, seed, key):
                a, b = rows[i], rows[j]
                sampling = {x: a["sampling"][x] for x in ("seed", "max_new_tokens", "temperature", "top_p",
                                                          "samples_per_prompt")}
                yield to_dict(Pair(f"{key}-{i}-{j}", a["prompt_id"], a["prompt"], a["response"], b["response"],
                                   a["generator"], {**sampling, "seed_a": a["sampling"]["seed_sample"],
                                                    "seed_b": b["sampling"]["seed_sample"]})) | {"sample_a": i,
                                                                                                 "sample_b": j}


def generate_block(engine, block: list[dict], settings: dict) -> list[dict]:
    """One batch of prompts ({prompt, pair_id}), all samples of each in one engine call: their pairs (K = 2) or
    their samples, prompt by prompt (K > 2). Runs where the engine is: in this process, or on a Ray replica
    (--executor ray)."""
    seed, k = settings["seed"], settings.get("samples_per_prompt", 2)
    convs = [[{"role": "user", "content": b["prompt"]}] for b in block]
    seeds = [[sample_seed(seed, b["pair_id"], i) for b in block] for i in range(k)]
    kw = {x: settings[x] for x in ("max_new_tokens", "temperature", "top_p")}
    outs = engine.generate(convs * k, seed=[s for column in seeds for s in column], **kw)  # every sample in one batch
    n = len(block)
    if k == 2:
        return [to_dict(Pair(b["pair_id"], prompt_id(b["prompt"]), b["prompt"], a, o, engine.identity,
                             {**settings, "seed_a": sa, "seed_b": sb}))
                for b, a, o, sa, sb in zip(block, outs[:n], outs[n:], seeds[0], seeds[1])]
    return [{"sample_id": f"{b['pair_id']}-{i}", "prompt_id": prompt_id(b["prompt"]), "prompt": b["prompt"], "sample": i,
             "response": outs[i * n + x], "generator": engine.identity, "sampling": {**settings, "seed_sample": seeds[i][x]}}
            for x, b in enumerate(block) for i in range(k)]
