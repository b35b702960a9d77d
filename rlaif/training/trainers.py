"""Thin wrappers around trl: a reward model (RewardTrainer) and a policy (DPO, PPO or RLOO).

No training loop of our own: each function builds a trl config, runs the trainer, saves the final model
and tokenizer as an ordinary safetensors transformers folder (written next to `out_dir`, then renamed
into place) and returns a small metrics dict. Runs unchanged on CPU, on one GPU (bf16) and under
`accelerate launch` (only rank 0 writes and renames). torch and trl are imported inside the functions.
The trainers checkpoint into the run folder and resume from there (rlaif.training.checkpoints); with LoRA the
saved folder is the merged model and the adapter sits in its adapter/ (rlaif.training.lora).
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
from pathlib import Path

from rlaif.training import checkpoints
from rlaif.training import lora
from rlaif.config import TrainConfig
from rlaif.errors import RlaifError
from rlaif.store.files import replace_dir
from rlaif.training.options import trl_config, trl_max_steps, trl_options, validate
from rlaif.training.tokenizer import load_tokenizer

ALGOS = ("dpo", "ppo", "rloo", "grpo")
_PAIR_COLUMNS = ("prompt", "chosen", "rejected")


def _setup(cfg: TrainConfig, seed: int, out_dir: Path):
    """Threads, device flags, the shared trainer kwargs and a clean staging folder next to out_dir.
    The trainer's own output_dir is the stage's checkpoint folder inside the run folder."""
    validate(cfg)
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    import torch
    from accelerate import PartialState

    cuda = torch.cuda.is_available()
    # Threads: measured on a shared 2-core machine (135M model, batch 2, max_length 384, other jobs running):
    # reward 4.3-7.4 s/step and DPO 6.2-12.2 s/step with one thread, 24 and 26-38 s/step with two.
    # So 0 (auto) means one thread on CPU; on CUDA the CPU side does little, up to two.
    torch.set_num_threads(cfg.threads if cfg.threads > 0 else (min(2, os.cpu_count() or 1) if cuda else 1))
    state = PartialState(cpu=not cuda)
    out_dir = Path(out_dir)
    staging = out_dir.parent / f".{out_dir.name}.partial"  # same name on every rank
    if state.is_main_process:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
    state.wait_for_everyone()
    every = checkpoints.save_steps(cfg)
    common = dict(
        output_dir=str(checkpoints.folder(out_dir)), use_cpu=not cuda, bf16=cuda and torch.cuda.is_bf16_supported(),
        fp16=False, gradient_checkpointing=False, max_steps=trl_max_steps(cfg), learning_rate=cfg.learning_rate,
        per_device_train_batch_size=cfg.batch_size, report_to=cfg.report_to, seed=seed,
        save_strategy="steps" if every else "no", save_steps=every or 500, save_total_limit=2,
        eval_strategy="no", logging_steps=1, dataloader_num_workers=0, **trl_options(cfg),
    )
    return state, staging, common


def _pairs(dataset):
    missing = [c for c in _PAIR_COLUMNS if c not in dataset.column_names]
    if missing:
        raise RlaifError(f"preference dataset lacks column(s) {', '.join(missing)}", "train",
                         "build it with the preferences stage (columns prompt, chosen, rejected)")
    if len(dataset) == 0:
        raise RlaifError("preference dataset is empty", "train", "lower preferences.min_margin or judge more pairs")
    # margin and pair_id are dropped: RewardTrainer would otherwise use `margin` as a loss margin.
    return dataset.select_columns(list(_PAIR_COLUMNS))


def _encode(tok, messages: list, max_length: int | None) -> list[int]:
    """Token ids of a whole conversation, as trl's RewardTrainer builds them, truncated keeping the start."""
    ids = list(tok.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])
    return ids[:max_length] if max_length else ids


def _score(model, tok, conversations: list, batch_size: int, max_length: int | None) -> list[float]:
    import torch

    device = next(model.parameters()).device
    out = []
    for i in range(0, len(conversations), batch_size):
        ids = [_encode(tok, c, max_length) for c in conversations[i:i + batch_size]]
        width = max(len(x) for x in ids)
        input_ids = torch.tensor([x + [tok.pad_token_id] * (width - len(x)) for x in ids], device=device)
        mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids], device=device)
        with torch.no_grad():
            out += model(input_ids=input_ids, attention_mask=mask).logits[:, 0].float().tolist()
    return out


def _load_scorer(path):
    import torch
    from transformers import AutoModelForSequenceClassification

    tok = load_tokenizer(str(path))
    model = AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=1, dtype=torch.float32,
                                                               use_safetensors=True)
    model.config.pad_token_id = tok.pad_token_id
    return model.to("cuda" if torch.cuda.is_available() else "cpu").eval(), tok


def reward_scores(reward_model: Path, prompts: list[str], responses: list[str], batch_size: int = 8) -> list[float]:
    """Scalar reward of each (prompt, response), scored as the reward model was trained (chat template)."""
    if len(prompts) != len(responses):
        raise RlaifError(f"{len(prompts)} prompts but {len(responses)} responses", "reward_scores")
    if not prompts:
        return []
    model, tok = _load_scorer(reward_model)
    convs = [[{"role": "user", "content": p}, {"role": "assistant", "content": r}] for p, r in zip(prompts, responses)]
    return _score(model, tok, convs, batch_size, None)


def _finish(state, staging: Path, out_dir: Path, base_model: str, save=None, trainer=None, load_base=None):
    """Save into the staging folder (all ranks take part), then rank 0 swaps it into place and drops the
    stage's checkpoints. With LoRA (load_base given) the adapter goes to staging/adapter and staging gets
    the merged model."""
    out_dir = Path(out_dir)
    target = staging / lora.ADAPTER if load_base else staging
    if save is not None:
        save(target)
    else:
        trainer.save_model(str(target))
    if state.is_main_process:
        if load_base:
            lora.merge_into(staging, base_model, load_base)
        if trainer is not None:  # steps and the logged losses, as in a trl checkpoint
            trainer.state.save_to_json(str(staging / "trainer_state.json"))
        load_tokenizer(base_model).save_pretrained(staging)  # the untouched tokenizer (trainers may change padding)
        for folder in (staging, staging / lora.ADAPTER):
            (folder / "training_args.bin").unlink(missing_ok=True)  # a pickle, and of no use to a reader
        replace_dir(staging, out_dir)
    state.wait_for_everyone()
    checkpoints.remove(out_dir, state)


def _resume(state, out_dir: Path, label: str, *fingerprint_args) -> str | None:
    return checkpoints.prepare(out_dir, checkpoints.fingerprint(*fingerprint_args), state, label)


def _run(trainer, resume: str | None, label: str, model=None) -> dict:
    """Train (from the checkpoint `resume` if given); seconds_per_step counts only the steps run now."""
    share = lora.trainable_share(model if model is not None else trainer.model)
    if trainer.accelerator.is_main_process:
        print(f"rlaif: {label}: training {share['trainable_params']:,} of {share['total_params']:,} parameters "
              f"({100 * share['trainable_share']:.2f}%)", file=sys.stderr)
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume) if resume else trainer.train()
    seconds = time.perf_counter() - t0
    steps = int(trainer.state.global_step)
    start = checkpoints.step_of(resume) if resume else 0
    return {"steps": steps, "resumed_from_step": start, "seconds_per_step": seconds / max(steps - start, 1),
            "trainable_share": share["trainable_share"], "precision": str(trainer.accelerator.mixed_precision),
            "history": trainer.state.log_history}


def _mean_logged(history: list, key: str) -> float | None:
    vals = [h[key] for h in history if key in h]
    return sum(vals) / len(vals) if vals else None


def _share(n: int, fraction: float) -> int:
    return 0 if n < 2 or fraction <= 0 else min(n - 1, max(1, round(fraction * n)))


def held_out_split(pairs, fraction: float, seed: int):
    """(train, held out or None) for the reward model's accuracy, split by prompt: a prompt's pairs are all on
    one side, so no held-out pair's prompt was trained on (with --keep all-pairs a prompt has several). When every
    prompt has one pair, a seeded row split of `fraction` of them (as before); otherwise `fraction` of the
    distinct prompts, drawn with the seed, and their pairs."""
    import json
    import random

    keys = [json.dumps(p, sort_keys=True) for p in pairs["prompt"]]
    if len(set(keys)) == len(keys):
        n_eval = _share(len(keys), fraction)
        if not n_eval:
            return pairs, None
        split = pairs.train_test_split(test_size=n_eval, seed=seed)
        return split["train"], split["test"]
    prompts = list(dict.fromkeys(keys))
    held = set(random.Random(seed).sample(prompts, _share(len(prompts), fraction)))
    if not held:
        return pairs, None
    return (pairs.select([i for i, k in enumerate(keys) if k not in held]),
            pairs.select([i for i, k in enumerate(keys) if k in held]))


def train_reward(base_model: str, dataset, out_dir: Path, cfg: TrainConfig, seed: int) -> dict:
    """Train a Bradley-Terry reward model on preference pairs; report held-out pairwise accuracy."""
    state, staging, common = _setup(cfg, seed, out_dir)
    import torch
    from transformers import AutoModelForSequenceClassification, set_seed
    from trl import RewardConfig, RewardTrainer

    train, held = held_out_split(_pairs(dataset), cfg.eval_fraction, seed)
    n_eval = len(held) if held is not None else 0
    tok = load_tokenizer(base_model)
    # Tokenize here (truncating, where RewardTrainer would drop long pairs) so that training and
    # `reward_scores` see exactly the same ids.
    train = train.map(lambda ex: {"chosen_ids": _encode(tok, ex["prompt"] + ex["chosen"], cfg.max_length),
                                  "rejected_ids": _encode(tok, ex["prompt"] + ex["rejected"], cfg.max_length)},
                      remove_columns=list(_PAIR_COLUMNS))
    resume = _resume(state, out_dir, Path(out_dir).name, "reward", base_model, cfg, seed, train)

    def load_base(path):
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32,
                                                                   use_safetensors=True)
        model.config.pad_token_id = tok.pad_token_id
        return model

    set_seed(seed)  # the score head is freshly initialised
    model = load_base(base_model)
    args = trl_config(RewardConfig, cfg, max_length=cfg.max_length, **common)
    peft = lora.peft_config(cfg, "SEQ_CLS")
    trainer = RewardTrainer(model=model, args=args, train_dataset=train, processing_class=tok, peft_config=peft)
    run = _run(trainer, resume, Path(out_dir).name)
    _finish(state, staging, out_dir, base_model, trainer=trainer, load_base=load_base if peft else None)
    del trainer, model

    acc = [None]
    if held is not None and state.is_main_process:
        scorer, stok = _load_scorer(out_dir)
        chosen = _score(scorer, stok, [r["prompt"] + r["chosen"] for r in held], 8, cfg.max_length)
        rejected = _score(scorer, stok, [r["prompt"] + r["rejected"] for r in held], 8, cfg.max_length)
        acc = [sum(c > r for c, r in zip(chosen, rejected)) / len(chosen)]
    if state.num_processes > 1:
        from accelerate.utils import broadcast_object_list
        broadcast_object_list(acc)
    return {"reward_accuracy": acc[0], "n_train": len(train), "n_eval": n_eval, **_figures(run, "loss", cfg)}


def _figures(run: dict, loss_key: str, cfg: TrainConfig) -> dict:
    return {"steps": run["steps"], "resumed_from_step": run["resumed_from_step"],
            "seconds_per_step": run["seconds_per_step"], "train_loss": _mean_logged(run["history"], loss_key),
            "precision": run["precision"], "lora_r": cfg.lora_r, "trainable_share": run["trainable_share"]}


def train_policy(base_model: str, reward_model: Path, dataset, out_dir: Path, cfg: TrainConfig, seed: int, *,
                 response_length: int | None = None, reward_func=None) -> dict:
    """Train the policy with cfg.algo: dpo (offline, on the pairs), ppo, rloo or grpo (online, scored by
    reward_model, or for rloo and grpo by `reward_func`: a trl reward function with an `identity`, such as
    rlaif.training.judge_reward.JudgeReward for --reward judge).

    response_length: tokens sampled per rollout for ppo/rloo/grpo (default min(64, max_length // 4)).
    """
    algo = cfg.algo.lower()
    if algo not in ALGOS:
        raise RlaifError(f"unknown policy algorithm {cfg.algo!r}", "train.algo", f"use one of {', '.join(ALGOS)}")
    if algo != "dpo" and reward_func is None and not (Path(reward_model) / "config.json").is_file():
        raise RlaifError(f"reward model folder {str(reward_model)!r} not found", "train",
                         "run the reward stage first")
    pairs = _pairs(dataset)
    state, staging, common = _setup(cfg, seed, out_dir)
    resp_len = response_length or max(8, min(64, cfg.max_length // 4))
    init = {"dtype": "float32", "use_safetensors": True}  # never unpickle weights
    label = Path(out_dir).name
    peft = lora.peft_config(cfg, "CAUSAL_LM")
    save = model = None
    if algo == "ppo":  # trl's PPOTrainer.train() takes no resume_from_checkpoint
        common.update(save_strategy="no")
        resume = None
        if state.is_main_process:
            print(f"rlaif: {label}: trl's PPO trainer cannot resume from a checkpoint; PPO saves none and a rerun "
                  "starts it over", file=sys.stderr)
    else:
        reward = getattr(reward_func, "identity", None) or reward_model
        extra = "" if algo == "dpo" else f"{reward}:{resp_len}" + (f":{cfg.num_generations}" if algo == "grpo" else "")
        resume = _resume(state, out_dir, label, "policy", base_model, cfg, seed, pairs, extra)
    if algo == "dpo":
        from trl import DPOConfig, DPOTrainer

        args = trl_config(DPOConfig, cfg, beta=cfg.beta, max_length=cfg.max_length, model_init_kwargs=init,
                          loss_type=[cfg.loss_type], **common)
        # ref_model=None with a model path: trl loads a frozen reference copy from the same path (with LoRA, the
        # reference is the same model with its adapter switched off).
        trainer = DPOTrainer(model=base_model, ref_model=None, args=args, train_dataset=pairs,
                             processing_class=load_tokenizer(base_model), peft_config=peft)
        loss_key = "loss"
    elif algo in ("rloo", "grpo"):
        Config, Trainer = _import_online(algo)

        # A generation batch holds whole groups: batch_size x processes x steps_per_generation prompts' worth of
        # completions must divide into groups of num_generations (trl's default, None, is gradient_accumulation_steps).
        g, world = cfg.num_generations, state.num_processes
        per_generation = g // math.gcd(cfg.batch_size * world, g)
        args = trl_config(Config, cfg, beta=cfg.beta, num_generations=g, max_completion_length=resp_len,
                          model_init_kwargs=init, steps_per_generation=None if per_generation == 1 else per_generation,
                          **common)
        trainer = Trainer(model=base_model, reward_funcs=reward_func or str(reward_model), args=args, peft_config=peft,
                          train_dataset=pairs.select_columns(["prompt"]), processing_class=load_tokenizer(base_model))
        loss_key = "loss"
    else:
        from rlaif.training.ppo import ppo_trainer

        trainer, save = ppo_trainer(base_model, reward_model, pairs, cfg, state, common, resp_len, peft)
        model = trainer.accelerator.unwrap_model(trainer.model).policy
        loss_key = "loss/policy_avg"
    run = _run(trainer, resume, label, model)
    _finish(state, staging, out_dir, base_model, save=save, trainer=trainer, load_base=_load_causal if peft else None)
    return {"algo": algo, "n_train": len(pairs), **_figures(run, loss_key, cfg)}


def _load_causal(path):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True)


def _import_online(algo: str):
    """(Config, Trainer) of rloo or grpo. trl 1.12 imports its vLLM client whenever vllm is installed, and that
    client fails to import against the vLLM releases our extras bring (trl supports vLLM <= 0.27.1). RLOO and
    GRPO here never use trl's vLLM generation, so vllm is hidden from trl while the trainer module is imported."""
    import trl.import_utils as import_utils

    real = import_utils.is_vllm_available
    import_utils.is_vllm_available = lambda *args, **kwargs: False
    try:
        if algo == "grpo":
            from trl import GRPOConfig as Config, GRPOTrainer as Trainer
        else:
            from trl import RLOOConfig as Config, RLOOTrainer as Trainer
    finally:
        import_utils.is_vllm_available = real
    return Config, Trainer
