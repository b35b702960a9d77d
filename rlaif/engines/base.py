"""The interface every engine implements (hf, vllm, openai, fake).

Conversations are lists of chat messages ({"role": ..., "content": ...}); the engine applies the
model's chat template itself, with the generation prompt added.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

from rlaif.errors import RlaifError
from rlaif.seeded import digest


class LabelClash(RlaifError):
    """Two verdict labels start with the same token: the judge stage names its template when it reports it."""


def request_seed(*parts) -> int:
    """A sampling seed from any parts (run seed, pair id, sample name): a stable 63-bit hash."""
    return int.from_bytes(digest("rlaif", *parts)[:8], "little") >> 1


def row_seeds(seed, n: int) -> list[int]:
    """One seed per conversation. A list is used as given (one per conversation: what makes a sample a
    function of its own seed and never of the batch it rode in). A single int is a batch seed: row i gets
    request_seed(seed, i), so the same conversation at another position gets another sample."""
    if isinstance(seed, int):
        return [request_seed(seed, i) for i in range(n)]
    seeds = [int(s) for s in seed]
    if len(seeds) != n:
        raise ValueError(f"{len(seeds)} seeds for {n} conversations")
    return seeds


class Engine:
    """Base class. `identity` names everything about the engine that changes its outputs
    (model, weights revision, dtype, for local engines the context length that cuts prompts) and nothing that
    does not (batch size, device)."""

    identity: str = "engine"
    # Prompts handed over at once when the run config leaves batch_size unset. HF generation on 2 cores
    # (bf16, 32 prompts x 2 x 64 tokens): 185 tokens/s at 8, 232 at 16, 261 at 32.
    batch_size: int = 32
    stats: dict  # counters reported in summary.json (requests, tokens, truncated, ...)
    start: dict = {}  # where the engine's start went, in seconds by part (vLLM: import, tokenizer, LLM(...))

    def generate(self, conversations: Sequence[list[dict]], *, seed: int | Sequence[int], max_new_tokens: int,
                 temperature: float, top_p: float) -> list[str]:
        """One sampled completion per conversation. `seed`: one seed per conversation (see row_seeds); each
        completion is then a function of (model, conversation, its seed, sampling settings) only."""
        raise NotImplementedError

    def label_logprobs(self, conversations: Sequence[list[dict]], labels: Sequence[str]) -> list[dict]:
        """For each conversation, the log-probability of each label as the first token of the reply (any of
        its token variants, " A" or "A").
        A label missing from what the engine can see (e.g. outside an API's top_logprobs) is absent."""
        raise NotImplementedError

    def complete(self, conversations: Sequence[list[dict]], *, max_new_tokens: int) -> list[str]:
        """Greedy completion (for chain-of-thought judging)."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def map_blocks(self, work, blocks, params) -> Iterator[list]:
        """`work(engine, block, params)` for each block, results in block order. Here one block after another in
        this process; the Ray executor's engine (rlaif/engines/replicas.py) runs them on its replicas."""
        for block in blocks:
            yield work(self, block, params)

    def label_token_ids(self, labels: Sequence[str]) -> list[list[int]]:
        """Each label's token ids (local engines): every token whose text, stripped, is that of the label's first
        token ("A" and " A" for "A"), the variants the OpenAI engine sums among top_logprobs. Labels whose first
        tokens coincide would make every verdict exactly 0.5: an RlaifError, before anything is judged."""
        if not hasattr(self, "_by_text"):  # the vocabulary decoded once: stripped text -> token ids
            self._by_text = {}
            for i, text in enumerate(self.tok.batch_decode([[i] for i in range(len(self.tok))])):
                self._by_text.setdefault(text.strip(), []).append(i)
        heads = [self.tok.decode(self.tok.encode(label, add_special_tokens=False)[:1]).strip() for label in labels]
        for i, head in enumerate(heads):
            if head in heads[:i]:
                other = labels[heads.index(head)]
                raise LabelClash(f"the verdict labels {other!r} and {labels[i]!r} both start with the token {head!r} "
                                 f"in the tokenizer {self.tok.name_or_path} ({type(self.tok).__name__}): every "
                                 "verdict would be exactly 0.5", "judge labels",
                                 "use labels whose first tokens differ, or another judge model")
        return [self._by_text[head] for head in heads]

    def chat_ids(self, conv: list[dict], reserve: int, keep_head: bool = False) -> list[int]:
        """Token ids of the chat template with the generation prompt, cut to fit the context.

        Local engines share this (they need `tok`, `max_context` and `stats`), so HF and vLLM see the same
        tokens. Too long: keep the end (the question and the answer cue) and, for judges, the head too."""
        frame = self._user_frame() if len(conv) == 1 and conv[0].get("role") == "user" and len(conv[0]) == 2 else None
        if frame:  # the chat template rendered once: same text, so the same ids, as apply_chat_template gives
            ids = self.tok(frame[0] + conv[0]["content"] + frame[1], add_special_tokens=False)["input_ids"]
        else:
            ids = self.tok.apply_chat_template(conv, add_generation_prompt=True, tokenize=True)
            if hasattr(ids, "keys"):  # newer transformers return a BatchEncoding
                ids = ids["input_ids"]
        ids = list(ids)
        budget = self.max_context - reserve
        if len(ids) > budget:
            self.stats["truncated"] += 1
            head = budget // 4 if keep_head else 0
            ids = ids[:head] + ids[len(ids) - (budget - head):]
        self.stats["prompt_tokens"] += len(ids)
        return ids


    def _user_frame(self) -> tuple[str, str] | None:
        """(before, after) the content of a single user message in the chat template's text, when the template
        puts that content in verbatim (checked on two probes, one with edge whitespace); else None."""
        if not hasattr(self, "_frame"):
            self._frame = None
            try:
                probe = "\u2063rlaif-probe\u2063"
                text = self.tok.apply_chat_template([{"role": "user", "content": probe}], add_generation_prompt=True,
                                                    tokenize=False)
                before, sep, after = text.partition(probe)
                other = " \n{{ probe 2 }} \n"
                again = self.tok.apply_chat_template([{"role": "user", "content": other}], add_generation_prompt=True,
                                                     tokenize=False)
                if sep and probe not in after and again == before + other + after:
                    ids = self.tok.apply_chat_template([{"role": "user", "content": other}], add_generation_prompt=True,
                                                       tokenize=True)
                    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
                    if list(ids) == self.tok(again, add_special_tokens=False)["input_ids"]:
                        self._frame = (before, after)
            except Exception:  # a template that cannot render a probe: render every conversation instead
                self._frame = None
        return self._frame


def auto_dtype(cuda: bool) -> str:
    """What dtype "auto" means: bfloat16 on CUDA, and on CPUs with native bf16 (AVX512-BF16 or AMX), where it
    is about 2-3x faster than float32 for inference (the default run on 2 AVX512-BF16 cores: generation
    85 -> 154 tokens/s, judging 1.31 -> 0.47 s per pair); float32 on other CPUs."""
    if cuda:
        return "bfloat16"
    import torch

    native = (getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
              or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())
    return "bfloat16" if native else "float32"


def release_memory(cuda: bool) -> None:
    """After an engine drops its model: collect, empty the CUDA cache, return freed heap pages to the OS."""
    import gc

    import torch

    gc.collect()
    if cuda and torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def log_sum_exp(values: Sequence[float]) -> float:
    """log(sum(exp(v))): the log-probability of any one of several tokens (a label's variants)."""
    m = max(values)
    return m + math.log(sum(math.exp(v - m) for v in values))


def label_probability(logprobs: dict, first: str, second: str) -> float | None:
    """P(first) renormalised over the two labels; None when either label is missing."""
    if first not in logprobs or second not in logprobs:
        return None
    a, b = logprobs[first], logprobs[second]
    m = max(a, b)
    ea, eb = math.exp(a - m), math.exp(b - m)
    return ea / (ea + eb)
