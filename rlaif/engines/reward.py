"""A reward model as the judge (`--judge-model rm:PATH`): an AutoModelForSequenceClassification with one output
scores each (prompt, response) once, in the chat format it was trained on (trl's RewardTrainer: the model's own
chat template over [user, assistant], no generation prompt), and the judge stage turns two rewards into
P(a better) = sigmoid(r_a - r_b), the same in both orders.

check_reward_model fails before anything is written on a PATH that is not such a model (one line, exit 2).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from rlaif.engines.base import Engine, release_memory
from rlaif.errors import RlaifError

PREFIX = "rm:"
FIX = ("pass a one-output sequence classifier (AutoModelForSequenceClassification, num_labels=1), such as the "
       "reward_model/ folder the reward stage writes: --judge-model rm:RUN/reward_model")


def is_reward_model(model: str) -> bool:
    return model.startswith(PREFIX)


def _config_file(path: str, name: str) -> Path:
    """config.json of a local folder, or of a hub id from the local Hugging Face cache (models.require fetched it)."""
    if Path(path, "config.json").is_file():
        return Path(path, "config.json")
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(path, "config.json")
    except Exception:  # an id huggingface_hub cannot parse
        cached = None
    if isinstance(cached, str):
        return Path(cached)
    raise RlaifError(f"reward model {name!r} has no config.json", f"{path}/config.json", FIX)


def check_reward_model(model: str, where: str = "--judge-model") -> tuple[str, str]:
    """For rm:PATH: (path, identity) of a loadable one-output sequence classifier; else an RlaifError naming
    PATH/config.json and the field (architectures, num_labels) that rules it out."""
    name = model[len(PREFIX):]
    if not name:
        raise RlaifError("rm: names no reward model", where, FIX)
    local = Path(name).expanduser()
    if (local.exists() or name.startswith((".", "/", "~"))) and not (local / "config.json").is_file():
        raise RlaifError("no such reward model folder, or it has no config.json", f"{name}/config.json", FIX)
    from rlaif.models import require

    path, identity = require(name)
    config = _config_file(path, name)
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError) as e:
        raise RlaifError(f"cannot read it as JSON ({type(e).__name__})", str(config), FIX) from None
    archs = data.get("architectures") or []
    if not any(str(a).endswith("ForSequenceClassification") for a in archs):
        raise RlaifError(f"field 'architectures' is {archs!r}: not a sequence classifier, so not a reward model",
                         str(config), FIX)
    labels = data.get("id2label")
    if isinstance(labels, dict):
        n, field = len(labels), f"field 'id2label' has {len(labels)} labels"
    else:  # transformers writes id2label only when num_labels is not its default, 2
        n = data.get("num_labels", 2)
        field = f"field 'num_labels' is {n}" if "num_labels" in data else "no field 'id2label', so num_labels is 2"
    if n != 1:
        raise RlaifError(f"{field}: a reward model judge needs exactly one output (a scalar reward)", str(config), FIX)
    return path, identity


class RewardEngine(Engine):
    """Scalar rewards, fp32 unless --dtype says otherwise. On CPU one conversation per forward pass (no padding,
    so a reward never depends on the batch it rode in: the batch size changes no reward); on CUDA batches of
    similar length, right-padded, within `tokens` tokens. Conversations longer than the context keep their
    start, as the reward stage's training truncated them."""

    kind = "reward"
    batch_size = 32
    rows = {"cpu": 1, "cuda": 32}
    tokens = {"cpu": 4096, "cuda": 65536}

    def __init__(self, path: str, identity: str, *, dtype: str = "auto", trust_remote_code: bool = False,
                 device: str | None = None, max_model_len: int | None = None):
        import torch
        from transformers import AutoModelForSequenceClassification

        from rlaif.engines.hf import pick_dtype
        from rlaif.training.tokenizer import load_tokenizer

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = torch.float32 if dtype == "auto" else pick_dtype(dtype, self.device == "cuda")
        self.tok = load_tokenizer(path, trust_remote_code=trust_remote_code)
        sequential = self.device == "cpu" and "HF_DEACTIVATE_ASYNC_LOAD" not in os.environ  # as HFEngine loads
        if sequential:
            os.environ["HF_DEACTIVATE_ASYNC_LOAD"] = "1"
        try:
            model = AutoModelForSequenceClassification.from_pretrained(
                path, dtype=self.dtype, trust_remote_code=trust_remote_code, use_safetensors=True)
        finally:
            if sequential:
                os.environ.pop("HF_DEACTIVATE_ASYNC_LOAD", None)
        model.config.pad_token_id = self.tok.pad_token_id  # as the reward stage trained and scores it
        self.model = model.to(self.device).eval()
        self.max_context = int(getattr(model.config, "max_position_embeddings", 2048) or 2048)
        if max_model_len:
            self.max_context = min(self.max_context, int(max_model_len))
        self.identity = f"rm:{identity}:{str(self.dtype).removeprefix('torch.')}:ctx{self.max_context}"
        self.stats = {"rewards": 0, "truncated": 0, "prompt_tokens": 0}

    def ids(self, prompt: str, response: str) -> list[int]:
        """The conversation's token ids as trl's RewardTrainer (and rlaif.training.trainers) builds them."""
        conv = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        ids = list(self.tok.apply_chat_template(conv, tokenize=True, return_dict=True)["input_ids"])
        if len(ids) > self.max_context:
            self.stats["truncated"] += 1
            ids = ids[:self.max_context]
        self.stats["prompt_tokens"] += len(ids)
        return ids

    def rewards(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        """The reward of each (prompt, response), as floats."""
        import torch

        rows = [self.ids(p, r) for p, r in zip(prompts, responses, strict=True)]
        out = [0.0] * len(rows)
        device = "cuda" if self.device == "cuda" else "cpu"
        order = sorted(range(len(rows)), key=lambda i: (len(rows[i]), i))
        batches, batch = [], []
        for i in order:
            if batch and ((len(batch) + 1) * len(rows[i]) > self.tokens[device] or len(batch) >= self.rows[device]):
                batches.append(batch)
                batch = []
            batch.append(i)
        batches += [batch] if batch else []
        pad = self.tok.pad_token_id
        for batch in batches:
            width = max(len(rows[i]) for i in batch)
            input_ids = torch.tensor([rows[i] + [pad] * (width - len(rows[i])) for i in batch], device=self.device)
            mask = torch.tensor([[1] * len(rows[i]) + [0] * (width - len(rows[i])) for i in batch], device=self.device)
            with torch.inference_mode():
                logits = self.model(input_ids=input_ids, attention_mask=mask).logits[:, 0].float().tolist()
            for i, value in zip(batch, logits):
                out[i] = value
        self.stats["rewards"] += len(rows)
        return out

    def generate(self, *a, **kw):
        raise RlaifError("a reward model cannot generate text", "--judge-model rm:...",
                         "use rm: as the judge only; the policy (and chain-of-thought judging) needs a causal LM")

    complete = label_logprobs = generate

    def close(self) -> None:
        if getattr(self, "model", None) is None:
            return
        self.model = None
        release_memory(self.device == "cuda")
