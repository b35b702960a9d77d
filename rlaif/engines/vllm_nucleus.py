"""vLLM logits processor for nucleus sampling without sorting the vocabulary (see nucleus.py).

The vLLM engine loads it by name on CPU, where vLLM's own top-p sorts every row. A request opts in with
`SamplingParams(top_p=1.0, extra_args={EXTRA_ARG: top_p})`. vLLM applies processors that leave the argmax
unchanged after temperature and before its own top-k/top-p, which is where nucleus filtering belongs.
This module imports vllm: only vLLM's engine process loads it.
"""

from __future__ import annotations

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor
from vllm.v1.sample.logits_processor.builtin import process_dict_updates

from rlaif.engines.nucleus import top_p_filter
from rlaif.engines.vllm import EXTRA_ARG


class NucleusLogitsProcessor(LogitsProcessor):
    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        self.top_p: dict[int, float] = {}  # batch row -> top_p, for the requests that asked

    def is_argmax_invariant(self) -> bool:
        return True

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        process_dict_updates(self.top_p, batch_update, lambda params, _prompt, _output: (params.extra_args or {}).get(EXTRA_ARG))

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.top_p:
            return logits
        rows = torch.tensor(list(self.top_p), dtype=torch.long, device=logits.device)
        logits[rows] = top_p_filter(logits[rows], torch.tensor(list(self.top_p.values()), device=logits.device))
        return logits
