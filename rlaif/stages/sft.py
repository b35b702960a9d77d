"""SFT stage: trl's SFTTrainer on conversations (user prompt, assistant final revision) plus optional demonstrations.

Loss only on assistant turns: trl's `assistant_only_loss` needs a chat template with `{% generation %}` markers.
SmolLM2's ChatML template has none, and trl cannot patch ChatML, so `training_template` writes the same ChatML with
the markers around each assistant turn (its content and `<|im_end|>`), and uses it only after checking that it
renders exactly as the model's own template on probe conversations. The saved `sft_model/` keeps the original
tokenizer. Later stages use `sft_model/` as the policy (see `use_sft_model`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from rlaif.errors import RlaifError
from rlaif.store.files import atomic_write_text, json_lines, jsonl_text, read_jsonl

ROLES = ("system", "user", "assistant")
SFT_STEPS = ["eval-sft", "eval-sft-base", "eval-sft-judge"]  # the engine pool's steps after SFT training
_CHATML = ("{%- for message in messages %}"
           "{%- if loop.first and messages[0]['role'] != 'system' %}{{ DEFAULT }}{%- endif %}"
           "{%- if message['role'] == 'assistant' %}{{ '<|im_start|>assistant\\n' }}"
           "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}"
           "{%- else %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{%- endif %}"
           "{%- endfor %}{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}")
_PROBES = [[{"role": "user", "content": "u1"}],
           [{"role": "user", "content": "u1"}, {"role": "assistant", "content": "a1"}],
           [{"role": "system", "content": "s"}, {"role": "user", "content": "u1"}, {"role": "assistant", "content": "a1"},
            {"role": "user", "content": "u2"}, {"role": "assistant", "content": "a2"}]]


def training_template(tok) -> str:
    """A chat template with `{% generation %}` markers that renders exactly like the tokenizer's own."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    if has_generation_markers(tok.chat_template or ""):
        return tok.chat_template
    try:
        patched = get_training_chat_template(tok)  # the templates trl knows (Qwen, Llama 3, Gemma, ...)
        if patched:
            return patched
    except ValueError:
        pass
    head = tok.apply_chat_template(_PROBES[0], tokenize=False).split("<|im_start|>user")[0]
    candidate = _CHATML.replace("DEFAULT", json.dumps(head))
    same = all(tok.apply_chat_template(c, tokenize=False, add_generation_prompt=g) ==
               tok.apply_chat_template(c, tokenize=False, add_generation_prompt=g, chat_template=candidate)
               for c in _PROBES for g in (False, True))
    if not same:
        raise RlaifError("the policy's chat template has no {% generation %} markers, so trl cannot restrict the "
                         "SFT loss to assistant turns", "sft", "use a model whose template marks assistant turns "
                         "(or one of trl's known templates), or a ChatML model")
    return candidate


def _messages(value, where: str, what: str) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise RlaifError(f"`{what}` must be a non-empty list of messages", where, 'write [{"role": "user", "content": "..."}, ...]')
    for m in value:
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise RlaifError(f"a message in `{what}` lacks a role ({'/'.join(ROLES)}) or string content", where,
                             'write each message as {"role": "user", "content": "..."}')
    return [{"role": m["role"], "content": m["content"]} for m in value]


def to_messages(row, where: str) -> list[dict]:
    """One demonstration in trl's `messages` or `prompt`/`completion` format (plain strings or messages) -> messages."""
    if not isinstance(row, dict):
        raise RlaifError("a row must be an object", where, "write one object per row")
    if "messages" in row:
        messages = _messages(row["messages"], where, "messages")
    elif "prompt" in row and "completion" in row:
        prompt, completion = row["prompt"], row["completion"]
        if isinstance(prompt, str) and isinstance(completion, str):
            messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
        else:
            messages = _messages(prompt, where, "prompt") + _messages(completion, where, "completion")
    else:
        raise RlaifError("a row needs `messages`, or `prompt` and `completion`", where,
                         "use trl's conversational (messages) or prompt-completion format")
    if not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
        raise RlaifError("the row has no non-empty assistant turn to train on", where, "add an assistant reply")
    return messages


def load_sft_data(path: str) -> list[list[dict]]:
    """--sft-data: .jsonl, .json (a list of rows), .parquet, or a datasets.save_to_disk folder."""
    return [messages for _, messages in sft_rows(path)]


def sft_rows(path: str) -> list[tuple[str, list[dict]]]:
    """(where, messages) of each --sft-data row; `where` names the file and row, as its errors do."""
    p = Path(path)
    fix = "pass a .jsonl, .json, .parquet file or a save_to_disk folder"
    if p.is_dir():
        from datasets import Dataset, load_from_disk

        try:
            data = load_from_disk(str(p))
        except (FileNotFoundError, ValueError) as e:
            raise RlaifError(f"not a save_to_disk folder ({str(e).splitlines()[0][:120]})", str(p), fix) from None
        if not isinstance(data, Dataset):
            raise RlaifError("a DatasetDict, not one dataset", str(p), "pass the folder of one split, e.g. .../train")
        rows = [(f"{p} (row {n})", r) for n, r in enumerate(data, 1)]
    elif not p.is_file():
        raise RlaifError("SFT data not found", str(p), fix)
    elif p.suffix == ".jsonl":
        rows = []
        for n, row in json_lines(p.read_text(encoding="utf-8", errors="replace").splitlines()):
            where = f"{p}:{n} (row {len(rows) + 1})"
            if isinstance(row, json.JSONDecodeError):
                raise RlaifError(f"invalid JSON ({row.msg})", where, "write one JSON object per line")
            rows.append((where, row))
    elif p.suffix == ".json":
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RlaifError(f"invalid JSON ({getattr(e, 'msg', e)})", str(p), "write a JSON list of rows") from None
        if not isinstance(data, list):
            raise RlaifError("a .json file must hold a list of rows", str(p), "write [{...}, {...}] (or use .jsonl)")
        rows = [(f"{p} (row {n})", r) for n, r in enumerate(data, 1)]
    elif p.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            rows = [(f"{p} (row {n})", r) for n, r in enumerate(pq.read_table(p).to_pylist(), 1)]
        except Exception as e:  # pyarrow raises several types for a corrupt file
            raise RlaifError(f"cannot read parquet ({type(e).__name__})", str(p), fix) from None
    else:
        raise RlaifError(f"unsupported SFT data type {p.suffix!r}", str(p), fix)
    if not rows:
        raise RlaifError("no rows in the SFT data", str(p), "add at least one demonstration")
    return [(where, to_messages(r, where)) for where, r in rows]


def build_trainer(base_model: str, conversations: list[list[dict]], args):
    """An SFTTrainer on `messages` rows with the loss on assistant tokens only."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTTrainer

    from rlaif.training.tokenizer import load_tokenizer

    tok = load_tokenizer(base_model)
    tok.chat_template = training_template(tok)
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32, use_safetensors=True)
    data = Dataset.from_list([{"messages": m} for m in conversations])
    return SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok)


def train_sft(base_model: str, conversations: list[list[dict]], out_dir: Path, cfg, seed: int, *,
              max_steps: int | None, learning_rate: float) -> dict:
    """cfg: TrainConfig (batch size, max_length, threads, report_to, train.trl). max_steps None: the train
    section's steps or epochs. Saves an ordinary transformers folder."""
    from trl import SFTConfig

    from rlaif.training.options import trl_config
    from rlaif.training.trainers import _finish, _mean_logged, _run, _setup

    steps = {"max_steps": max_steps, "num_train_epochs": None} if max_steps else {}  # sft.max_steps wins for SFT
    cfg = dataclasses.replace(cfg, learning_rate=learning_rate, **steps)
    state, staging, common = _setup(cfg, seed, out_dir)
    args = trl_config(SFTConfig, cfg, max_length=cfg.max_length, assistant_only_loss=True, packing=False, **common)
    trainer = build_trainer(base_model, conversations, args)
    run = _run(trainer, None, "sft")  # full finetuning; no checkpoint resume or LoRA for SFT yet
    _finish(state, staging, out_dir, base_model, trainer=trainer)
    return {"n_train": len(conversations), "steps": run["steps"], "seconds_per_step": run["seconds_per_step"],
            "train_loss": _mean_logged(run["history"], "loss"), "precision": run["precision"]}


def sft_path(run) -> Path:
    """Absolute, so the engine pool keys the SFT model the same way in the sft stage and in later stages."""
    return (run.root / "sft_model").resolve()


def evaluate_sft(cfg, constitution, run, pool, prompts: list[str], before: str) -> dict:
    """sft_win_rate: the SFT model against the model before SFT on held-out prompts, judged in both orders, as
    policy_win_rate is."""
    from rlaif.judging.scores import win_rate
    from rlaif.stages.train import head_to_head

    if not prompts:
        return {"sft_win_rate": None, "note": "no held-out prompts left in the prompt file after --num-prompts"}
    t = time.time()
    # One model at a time (the engine pool's plan): the SFT model, the model before SFT, then the judge.
    pairs, judgments, scores, _, _ = head_to_head(cfg, constitution, pool, prompts, (str(sft_path(run)), None),
                                                  (before, cfg.generate.base_url),
                                                  ("eval-sft", "eval-sft-base", "eval-sft-judge"), "sft-eval", "sft")
    (run.root / "eval").mkdir(exist_ok=True)
    atomic_write_text(run.root / "eval" / "sft_pairs.jsonl", jsonl_text([{**p, "score": scores[p["pair_id"]]} for p in pairs]))
    atomic_write_text(run.root / "eval" / "sft_judgments.jsonl", jsonl_text(judgments))
    rate, counts = win_rate([scores[p["pair_id"]] for p in pairs])
    return {"sft_win_rate": rate, **counts, "seconds": round(time.time() - t, 2),
            "note": "response_a is the SFT model, response_b the model before SFT; a win rate of 0.5 is a draw"}


def conversations_for(cfg, run) -> tuple[list[list[dict]], dict]:
    """Revised answers from revisions.jsonl (when this run has them), then the --sft-data demonstrations."""
    rows = read_jsonl(run.root / "revisions.jsonl")
    revised = [r for r in rows if r["revised"]]
    convs = [[{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["final"]}] for r in revised]
    demos = load_sft_data(cfg.sft.data) if cfg.sft.data else []
    if not convs and not demos:
        raise RlaifError("nothing to train on: no revised answer in revisions.jsonl and no --sft-data", "sft",
                         "add revise to --stages (or use --recipe cai), or pass --sft-data FILE")
    return convs + demos, {"from_revisions": len(convs), "unrevised_skipped": len(rows) - len(revised),
                           "from_sft_data": len(demos)}


def run_stage(cfg, constitution, run, pool, eval_prompts: list[str], stage) -> None:
    from rlaif.stages.train import _base_model, _is_main_process

    t = time.time()
    convs, counts = conversations_for(cfg, run)
    base = _base_model(cfg)
    info = train_sft(base, convs, sft_path(run), cfg.train, cfg.seed, max_steps=cfg.sft.max_steps or cfg.train.max_steps,
                     learning_rate=cfg.sft.learning_rate)
    info = {**counts, **info, "base_model": cfg.generate.model, "model": str(sft_path(run))}
    if _is_main_process():
        info["evaluation"] = evaluate_sft(cfg, constitution, run, pool, eval_prompts, cfg.generate.model)
        run.update_summary("sft_win_rate", info["evaluation"]["sft_win_rate"])
    stage(run, "sft", t, info)


def policy_after_sft(cfg, run) -> str:
    """The policy of the stages after sft: sft_model/ when this run trains it or has it, and --policy-model was left
    at its default; else --policy-model."""
    from rlaif.config import RunConfig

    has = "sft" in cfg.stages or (sft_path(run) / "config.json").is_file()
    return str(sft_path(run)) if has and cfg.generate.model == RunConfig().generate.model else cfg.generate.model


def use_sft_model(cfg, run) -> None:
    """Later stages (generate, reward base, policy base and DPO/PPO reference) use sft_model/ when it exists and
    --policy-model was left at its default. summary.json's `models` says which model each stage used."""
    before = cfg.generate.model
    if (sft_path(run) / "config.json").is_file():
        cfg.generate.model = policy_after_sft(cfg, run)
    later = [s for s in ("generate", "reward", "policy") if s in cfg.stages]
    if run.root.exists() and ("sft" in cfg.stages or later):
        models = {"judge": cfg.judge.model, **{s: before for s in ("revise", "sft") if s in cfg.stages},
                  **{s: cfg.generate.model for s in later}}
        if "policy" in cfg.stages:
            models["policy_reference"] = cfg.generate.model
        old = json.loads(run.summary.read_text()).get("models", {}) if run.summary.exists() else {}
        run.update_summary("models", {**old, **models})
