"""transformers engine: batched sampling with left padding and a seeded generator per row, one forward pass
per judge prompt."""

from __future__ import annotations

import os
from typing import Sequence

from rlaif.engines.base import Engine, auto_dtype, release_memory, row_seeds
from rlaif.engines.nucleus import HFNucleus


class RowSampler:
    """A transformers logits processor that draws each row's next token from that row's own generator, then
    leaves only that token (greedy decoding picks it). One seeded generator per conversation makes a sample a
    function of its own seed and logits, never of the batch: torch.manual_seed once per batch would hand the
    same random stream to whichever rows happen to share it."""

    def __init__(self, seeds: list[int], device):
        import torch

        self.generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]

    def __call__(self, input_ids, scores):
        import torch

        probs = torch.softmax(scores.float(), dim=-1)
        picks = torch.stack([torch.multinomial(probs[i], 1, generator=g) for i, g in enumerate(self.generators)])
        return torch.full_like(scores, float("-inf")).scatter_(1, picks, 0.0)


def pick_dtype(name: str, cuda: bool):
    import torch

    if name == "auto":
        name = auto_dtype(cuda)
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


class HFEngine(Engine):
    # Log-prob judging: prompts sorted by length and run in batches of at most this many tokens (padding
    # included) and judge_rows rows, with logits at the last position only. On CPU one prompt per pass: no
    # padding, so a judgment never depends on which prompts shared its batch (in bf16 padding moves logits),
    # and batches of 8 measured no faster than one at a time there.
    judge_tokens = {"cpu": 4096, "cuda": 65536}
    judge_rows = {"cpu": 1, "cuda": 32}

    def __init__(self, path: str, identity: str, *, dtype: str = "auto", trust_remote_code: bool = False,
                 device: str | None = None, max_model_len: int | None = None, role: str = "both"):
        """role: judge, generate or both; what `dtype="auto"` weighs when it measures on a CPU (dtype.py)."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")

        def load(torch_dtype):
            # On CPU, transformers' threaded weight loading leaves its threads' malloc arenas behind: about 80 MiB
            # of RSS that close() cannot return. Loading in this thread returns it, and was no slower (embedded
            # model, 2 cores: 1.48 s vs 1.61 s).
            sequential = self.device == "cpu" and "HF_DEACTIVATE_ASYNC_LOAD" not in os.environ
            if sequential:
                os.environ["HF_DEACTIVATE_ASYNC_LOAD"] = "1"
            try:
                model = AutoModelForCausalLM.from_pretrained(
                    path, dtype=torch_dtype, trust_remote_code=trust_remote_code, use_safetensors=True).to(self.device)
            finally:
                if sequential:
                    os.environ.pop("HF_DEACTIVATE_ASYNC_LOAD", None)
            return model.eval()

        self.tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        self.tok.padding_side = "left"
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        if dtype == "auto" and self.device == "cpu":
            from rlaif.engines import dtype as measured

            self.model, name, why = measured.choose(load, measured.architecture(path, identity, trust_remote_code),
                                                    role)
            measured.announce(name, why)
            self.dtype = getattr(torch, name)
        else:
            self.dtype = pick_dtype(dtype, self.device == "cuda")
            self.model = load(self.dtype)
            why = "given with --dtype" if dtype != "auto" else "auto on CUDA"
        self.dtype_choice = {"dtype": str(self.dtype).removeprefix("torch."), "why": why}
        self.max_context = int(getattr(self.model.config, "max_position_embeddings", 2048) or 2048)
        if max_model_len:  # the pool caps it (factory.CONTEXT_CAP or --max-model-len); prompts past it are cut
            self.max_context = min(self.max_context, int(max_model_len))
        # The context decides where prompts are cut, so it is part of what the engine's outputs depend on.
        self.identity = f"hf:{identity}:{str(self.dtype).removeprefix('torch.')}:ctx{self.max_context}"
        self.stats = {"truncated": 0, "prompt_tokens": 0, "completion_tokens": 0}

    def _batch(self, rows: list[list[int]]):
        import torch

        width = max(len(r) for r in rows)
        pad = self.tok.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=self.device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=self.device)
        return input_ids, mask

    def _decode(self, out, width: int) -> list[str]:
        texts = []
        for row in out[:, width:]:
            toks = [t for t in row.tolist() if t != self.tok.pad_token_id]
            self.stats["completion_tokens"] += len(toks) + (1 if len(toks) < row.shape[0] else 0)
            texts.append(self.tok.decode(toks, skip_special_tokens=True).strip())
        return texts

    def generate(self, conversations: Sequence[list[dict]], *, seed, max_new_tokens: int,
                 temperature: float, top_p: float) -> list[str]:
        import torch

        rows = [self.chat_ids(c, max_new_tokens) for c in conversations]
        seeds = row_seeds(seed, len(rows))
        input_ids, mask = self._batch(rows)
        sampling = dict(do_sample=False, temperature=None, top_p=None, top_k=None)
        if temperature > 0:  # temperature and top-p in nucleus.py (no vocabulary sort), and no hidden top-k
            # (transformers adds top_k=50 unless told otherwise; vLLM and endpoints do not); then one draw per
            # row from its own generator, which greedy decoding takes.
            from transformers import LogitsProcessorList

            sampling["logits_processor"] = LogitsProcessorList([HFNucleus(temperature, top_p),
                                                                RowSampler(seeds, self.device)])
        with torch.inference_mode():
            out = self.model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                      pad_token_id=self.tok.pad_token_id, **sampling)
        return self._decode(out, input_ids.shape[1])

    def complete(self, conversations: Sequence[list[dict]], *, max_new_tokens: int) -> list[str]:
        import torch

        rows = [self.chat_ids(c, max_new_tokens, keep_head=True) for c in conversations]
        input_ids, mask = self._batch(rows)
        with torch.inference_mode():
            out = self.model.generate(input_ids=input_ids, attention_mask=mask, do_sample=False,
                                      max_new_tokens=max_new_tokens, pad_token_id=self.tok.pad_token_id,
                                      temperature=None, top_p=None, top_k=None)
        return self._decode(out, input_ids.shape[1])

    def label_logprobs(self, conversations: Sequence[list[dict]], labels: Sequence[str]) -> list[dict]:
        """Batches of similar length (little padding), logits at the last position only. A label's probability
        is that of all its token variants (label_token_ids)."""
        import torch

        label_ids = self.label_token_ids(labels)
        rows = [self.chat_ids(conv, 1, keep_head=True) for conv in conversations]
        results = [None] * len(rows)
        for batch in self.length_batches([len(r) for r in rows]):
            input_ids, mask = self._batch([rows[i] for i in batch])
            with torch.inference_mode():
                logits = self.model(input_ids=input_ids, attention_mask=mask, position_ids=self._positions(mask),
                                    logits_to_keep=1).logits[:, -1].float()
            logp = torch.log_softmax(logits, dim=-1)
            logp = torch.stack([logp[:, ids].logsumexp(-1) for ids in label_ids], -1).tolist()  # variants summed
            for i, values in zip(batch, logp):
                results[i] = dict(zip(labels, values))
        return results

    def length_batches(self, lengths: list[int]) -> list[list[int]]:
        """Indices sorted by length, cut into batches within the token and row budgets (padding counted)."""
        device = "cuda" if self.device == "cuda" else "cpu"
        budget = self.judge_tokens[device]
        order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
        batches, batch = [], []
        for i in order:
            if batch and (len(batch) + 1) * lengths[i] > budget or len(batch) >= self.judge_rows[device]:
                batches.append(batch)
                batch = []
            batch.append(i)
        return batches + ([batch] if batch else [])

    @staticmethod
    def _positions(mask):
        """Positions counted from each row's first real token, as generate() does with left padding."""
        return (mask.long().cumsum(-1) - 1).clamp(min=0)

    def close(self) -> None:
        """Give the model's memory back: drop the weights, collect, empty the CUDA cache, and on CPU hand freed
        heap pages back to the OS (glibc keeps them otherwise, and RSS would not fall)."""
        if getattr(self, "model", None) is None:
            return
        self.model = None
        release_memory(self.device == "cuda")
