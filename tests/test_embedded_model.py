"""The real thing: the embedded SmolLM2-135M-Instruct through generate, judge and preferences."""

import json
import math

import pytest
from datasets import load_from_disk

from rlaif.store.files import read_jsonl

from conftest import run_cli

pytestmark = pytest.mark.slow  # loads the model in subprocesses, trains, or both


@pytest.fixture(scope="module")
def engine():
    from rlaif.engines.hf import HFEngine
    from rlaif.models import resolve

    return HFEngine(*resolve("SmolLM2-135M-Instruct"))


def test_pipeline_on_four_prompts(tmp_path, prompts_file):
    out = tmp_path / "run"
    code = run_cli("--constitution", "safety.yaml", "--prompts", prompts_file, "--num-prompts", 4,
                   "--max-new-tokens", 24, "--stages", "generate,judge,preferences", "--output-dir", out,
                   "--engine", "hf")
    assert code == 0
    pairs = read_jsonl(out / "pairs.jsonl")
    assert [p["prompt"] for p in pairs] == ["How do I bake bread?", "How do I hurt someone?",
                                            "Write a poem about rain.", "What is the capital of France?"]
    for p in pairs:
        assert p["response_a"].strip() and p["response_b"].strip()
        assert p["response_a"] != p["response_b"]  # two samples with distinct seeds
        assert p["sampling"]["seed_a"] != p["sampling"]["seed_b"]
        assert p["generator"].startswith("hf:SmolLM2-135M-Instruct")
    judgments = read_jsonl(out / "judgments.jsonl")
    assert len(judgments) == 4 * 2  # one principle drawn per pair, both orders
    for j in judgments:
        lp = j["raw_output"]
        assert set(lp) == {"A", "B"} and all(v < 0 for v in lp.values())
        first = math.exp(lp["A"]) / (math.exp(lp["A"]) + math.exp(lp["B"]))
        assert abs(j["p_a"] - (first if j["order"] == "ab" else 1 - first)) < 1e-9
    ds = load_from_disk(str(out / "preferences"))
    summary = json.loads((out / "summary.json").read_text())
    assert len(ds) == summary["preferences"]["kept"] >= 1
    assert ds[0]["prompt"][0]["role"] == "user" and ds[0]["chosen"][0]["role"] == "assistant"
    assert summary["generate"]["tokens_per_second"] > 0 and summary["judge"]["seconds_per_pair"] > 0


def test_generation_is_deterministic_and_judge_sees_labels(engine):
    conv = [[{"role": "user", "content": "Name a fruit."}], [{"role": "user", "content": "Name a colour."}]]
    kw = dict(seed=5, max_new_tokens=8, temperature=0.8, top_p=0.95)
    first = engine.generate(conv, **kw)
    assert first == engine.generate(conv, **kw) and all(first)
    lp = engine.label_logprobs([[{"role": "user", "content": "Answer A or B."}]], ["A", "B"])[0]
    assert set(lp) == {"A", "B"}


def test_sampling_is_transformers_temperature_and_top_p_without_a_hidden_top_k(engine):
    """Each row samples what transformers' own warpers sample with top_k=0 for that conversation alone, seeded
    with the row's seed, through nucleus.py rather than a vocabulary sort. Left to itself transformers would
    also cut to the top 50 tokens, which vLLM and endpoints do not."""
    import torch

    convs = [[{"role": "user", "content": "Write a short story about a dragon who collects spoons."}],
             [{"role": "user", "content": "List some unusual hobbies."}]]
    kw = dict(max_new_tokens=24, temperature=1.0, top_p=0.98)  # wide nuclei: well over 50 tokens at some steps
    seeds = [11, 12]
    ours = [engine.generate([c], seed=[s], **kw)[0] for c, s in zip(convs, seeds)]  # same shapes as theirs
    for top_k, same in ((0, True), (50, False)):
        theirs = []
        for conv, s in zip(convs, seeds):
            ids, mask = engine._batch([engine.chat_ids(conv, 24)])
            torch.manual_seed(s)
            with torch.inference_mode():
                out = engine.model.generate(input_ids=ids, attention_mask=mask, do_sample=True, top_k=top_k,
                                            pad_token_id=engine.tok.pad_token_id, **kw)
            theirs += engine._decode(out, ids.shape[1])
        assert (theirs == ours) is same


def test_a_sample_does_not_depend_on_its_batch():
    """Per-row generators: a conversation's sample is the same alone, at another position, or beside others
    (fp32: in bf16 the padding of a batch can move a logit enough to change a token, see the README)."""
    from rlaif.engines.hf import HFEngine
    from rlaif.models import resolve

    engine = HFEngine(*resolve("SmolLM2-135M-Instruct"), dtype="float32")
    convs = [[{"role": "user", "content": q}] for q in ("Name a fruit.", "Tell me a joke.", "Describe rain.")]
    kw = dict(max_new_tokens=12, temperature=0.8, top_p=0.95)
    together = engine.generate(convs, seed=[1, 2, 3], **kw)
    alone = [engine.generate([c], seed=[s], **kw)[0] for c, s in zip(convs, (1, 2, 3))]
    reversed_ = engine.generate(convs[::-1], seed=[3, 2, 1], **kw)[::-1]
    assert together == alone == reversed_
    assert len(set(engine.generate([convs[0]] * 3, seed=[1, 2, 3], **kw))) > 1  # the seed does matter


def test_prompt_longer_than_context_is_truncated_and_counted(engine):
    saved = engine.max_context
    engine.max_context = 128
    try:
        before = engine.stats["truncated"]
        long = "Please summarise this. " + "word " * 400
        out = engine.generate([[{"role": "user", "content": long}]], seed=1, max_new_tokens=8,
                              temperature=0.8, top_p=0.95)
        lp = engine.label_logprobs([[{"role": "user", "content": long + " Answer A or B."}]], ["A", "B"])
        assert len(out) == 1 and set(lp[0]) == {"A", "B"}
        assert engine.stats["truncated"] == before + 2
    finally:
        engine.max_context = saved


def test_chain_of_thought_gives_every_judgment_a_probability(engine):
    """The 135M judge rarely ends with a well-formed verdict line; scoring the verdict turn still decides."""
    from rlaif.judging.constitution import load
    from rlaif.stages.judge import run_judge

    c = load("safety.yaml")
    c.label_mode, c.template = "cot", "judge_cot.j2"
    pairs = [{"pair_id": "p", "prompt": "How do I hurt someone?", "response_a": "I can't help with that.",
              "response_b": "Hit them hard."}]
    judgments, counts = run_judge(engine, pairs, c, seed=0, mode="cot", settings={"max_new_tokens": 24},
                                  progress=False)
    assert counts["parse_failures"] == 0 and len(judgments) == 2
    for j in judgments:
        assert j["raw_output"]["rationale"].strip() and set(j["raw_output"]["verdict_logprobs"]) == {"A", "B"}
        assert 0 < j["p_a"] < 1 and j["mode"] == "cot"
