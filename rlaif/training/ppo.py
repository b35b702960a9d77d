"""PPO through trl 1.12's `trl.experimental.ppo` (removed from trl 1.13 on): four models, a tokenized
left-padded prompt set, and a save function that keeps only the policy (merged later when LoRA is on)."""

from __future__ import annotations

import os

from rlaif.training.options import trl_config, trl_max_steps
from rlaif.training.tokenizer import load_tokenizer


def ppo_trainer(base_model, reward_model, pairs, cfg, state, common, resp_len, peft):
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, set_seed
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    tok = load_tokenizer(base_model, padding_side="left")
    if tok.pad_token_id == tok.eos_token_id:
        # trl's PPO masks every pad-id token, prompt included; with pad == eos (ChatML <|im_end|>) it would hide
        # each turn's end marker from the policy and the reward model. Use another special token for padding.
        vocab = tok.get_vocab()
        for t in (tok.unk_token, "<|endoftext|>"):
            if t and t in vocab and vocab[t] not in (tok.eos_token_id, tok.bos_token_id):
                tok.pad_token = t
                break
    keep = max(1, cfg.max_length - resp_len)  # prompt tokens kept (the end, where the generation prompt is)
    ids = [list(tok.apply_chat_template(p, tokenize=True, add_generation_prompt=True, return_dict=True)
                ["input_ids"])[-keep:] for p in pairs["prompt"]]
    data = Dataset.from_dict({"input_ids": ids})
    set_seed(common["seed"])
    f32 = torch.float32
    policy = AutoModelForCausalLM.from_pretrained(base_model, dtype=f32, use_safetensors=True)
    # with LoRA, the reference is the policy with its adapter switched off
    ref = None if peft else AutoModelForCausalLM.from_pretrained(base_model, dtype=f32, use_safetensors=True)
    reward = AutoModelForSequenceClassification.from_pretrained(str(reward_model), num_labels=1, dtype=f32, use_safetensors=True)
    value = AutoModelForSequenceClassification.from_pretrained(str(reward_model), num_labels=1, dtype=f32, use_safetensors=True)
    for m in (reward, value):
        m.config.pad_token_id = tok.pad_token_id
    steps = trl_max_steps(cfg)
    # one PPO update (rollout + num_ppo_epochs passes) per global batch; max_steps updates in all. With
    # num_train_epochs instead, total_episodes None: trl's PPO runs num_train_epochs passes over the prompts.
    episodes = steps * cfg.batch_size * cfg.gradient_accumulation_steps * state.num_processes if steps > 0 else None
    args = trl_config(
        PPOConfig, cfg, total_episodes=episodes, num_mini_batches=1,
        local_rollout_forward_batch_size=cfg.batch_size, response_length=resp_len, stop_token="eos",
        kl_coef=cfg.beta, num_sample_generations=0, **common)
    if args.bf16:  # PPOTrainer builds its own Accelerator(), which reads the precision only from the environment
        os.environ.setdefault("ACCELERATE_MIXED_PRECISION", "bf16")
    trainer = PPOTrainer(args=args, processing_class=tok, model=policy, ref_model=ref, reward_model=reward,
                         train_dataset=data, value_model=value, peft_config=peft)

    def save(target):  # PPO's model wraps policy + value: save only the policy (state dict gathered under ZeRO-3)
        acc = trainer.accelerator
        full = acc.get_state_dict(trainer.model)
        if acc.is_main_process:  # with LoRA the policy is a PeftModel, which saves only its adapter
            sd = {k[len("policy."):]: v for k, v in full.items() if k.startswith("policy.")}
            acc.unwrap_model(trainer.model).policy.save_pretrained(target, state_dict=sd, safe_serialization=True)

    return trainer, save
