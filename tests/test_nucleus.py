"""nucleus.py: top-p by the transformers/vLLM rule, found among the top-k tokens instead of a vocabulary sort."""

import pytest
import torch
from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

from rlaif.engines.nucleus import HFNucleus, top_p_filter


def exact_keep(logits: torch.Tensor, top_p):
    """The rule in float64 with a full sort: keep a token iff the mass above it is below top_p. Also marks
    tokens whose mass above lies within 1e-5 of top_p, where float32 rounding may decide either way."""
    p = torch.as_tensor(top_p, dtype=torch.float64).expand(logits.shape[0]).unsqueeze(1)
    vals, idx = logits.double().sort(-1, descending=True)
    probs = vals.softmax(-1)
    above = probs.cumsum(-1) - probs
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, idx, above < p)
    near = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, idx, (above - p).abs() < 1e-5)
    return keep, near


@pytest.mark.parametrize("scale", [0.3, 3.0, 30.0])  # flat rows (nucleus of thousands), mixed, peaked (a few)
@pytest.mark.parametrize("top_p", [0.5, 0.95, 0.99])
def test_same_tokens_as_the_exact_rule(scale, top_p):
    torch.manual_seed(0)
    logits = torch.randn(16, 49152) * scale
    out = top_p_filter(logits, top_p)
    keep, near = exact_keep(logits, top_p)
    kept = torch.isfinite(out)
    assert not ((kept != keep) & ~near).any()
    assert torch.equal(out[kept], logits[kept])  # kept tokens keep their logits
    assert kept.sum(-1).min() >= 1 and kept[torch.arange(16), logits.argmax(-1)].all()  # the top token stays


def test_rows_of_every_width_in_one_batch_and_per_row_top_p():
    """Rows whose nucleus fits in the first 64, needs 1,024, or needs the whole vocabulary, each with its own
    top_p, come out as each would alone."""
    torch.manual_seed(1)
    logits = torch.cat([torch.randn(2, 5000) * 20, torch.randn(2, 5000) * 3, torch.randn(2, 5000) * 0.1])
    top_p = torch.tensor([0.9, 0.5, 0.95, 0.8, 0.99, 0.9])
    out = top_p_filter(logits, top_p)
    widths = torch.isfinite(out).sum(-1)
    assert widths[:2].max() <= 64 and 64 < widths[2:4].min() and widths[2:4].max() <= 1024 and widths[4:].min() > 1024
    keep, near = exact_keep(logits, top_p)
    assert not ((torch.isfinite(out) != keep) & ~near).any()
    for i in range(6):
        assert torch.equal(top_p_filter(logits[i:i + 1], float(top_p[i])), out[i:i + 1])


def test_hf_processor_equals_transformers_temperature_then_top_p():
    torch.manual_seed(2)
    scores = torch.randn(8, 49152) * 4
    ours = HFNucleus(0.8, 0.95)(None, scores.clone())
    theirs = TopPLogitsWarper(0.95)(None, TemperatureLogitsWarper(0.8)(None, scores.clone()))
    assert torch.equal(torch.isfinite(ours), torch.isfinite(theirs))
    assert torch.allclose(ours[torch.isfinite(ours)], theirs[torch.isfinite(theirs)])
    assert torch.equal(HFNucleus(0.5, 1.0)(None, scores.clone()), scores / 0.5)  # top_p 1: temperature only
