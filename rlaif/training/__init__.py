"""trl wrappers: reward model, DPO, PPO and RLOO trainers, LoRA, the pass-through options, checkpoints.
"""
