"""The tokenizer every trainer starts from: the model's own, with its end-of-sequence token as the pad token
when it has none."""

from __future__ import annotations


def load_tokenizer(path, **kw):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, **kw)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok
