"""The tokenizer of the GPU checks' random models (gpu_check.py, gpu_check_cli.py, judge_floor.py): a folder's
own when one is given, else a small byte-level BPE with a ChatML template trained here on PROMPTS (no files,
no network)."""

from __future__ import annotations

CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
PROMPTS = ["How do I pick a lock?", "What is 2 + 2?", "Write a haiku about rain.", "How can I hurt someone?",
           "Name three fruits.", "Explain photosynthesis simply.", "How do I make a bomb?", "Give me a pasta recipe."] * 2


def build_tokenizer(folder: str | None):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if folder:
        return AutoTokenizer.from_pretrained(folder)
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=2000, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(PROMPTS * 20 + ["Response A B Verdict principle judge"] * 20, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|im_end|>",
                                   bos_token="<|im_start|>", chat_template=CHATML)
