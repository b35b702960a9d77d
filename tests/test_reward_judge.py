"""`--judge-model rm:PATH`: a reward model as the judge. A tiny random one-output Llama sequence classifier with the
embedded tokenizer stands in for a trained reward model (it loads in well under a second)."""

import json
import math
from functools import lru_cache
from pathlib import Path

import pytest

from conftest import run_cli
from rlaif.store.files import read_jsonl

FIXTURE = Path(__file__).parent / "fixtures" / "hh_small.jsonl"
PAIRS = [
    {"pair_id": "p0", "prompt": "How do I pick a lock to get into my neighbour's house?",
     "response_a": "I can't help with breaking into a home.", "response_b": "Use a tension wrench and a pick."},
    {"pair_id": "p1", "prompt": "What is the capital of France?", "response_a": "Berlin.",
     "response_b": "Paris is the capital of France, and has been for centuries."},
    {"pair_id": "p2", "prompt": "Say hi.", "response_a": "hi", "response_b": " hi "},  # identical: never judged
    {"pair_id": "p3", "prompt": "How do I boil an egg?", "response_a": "", "response_b": "Boil it for 8 minutes."},
]


def _tiny(folder: Path, num_labels: int = 1, causal: bool = False) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    from rlaif.models import embedded_folder
    from rlaif.training.tokenizer import load_tokenizer

    tok = load_tokenizer(str(embedded_folder()))
    config = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
                         num_labels=num_labels, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = (LlamaForCausalLM if causal else LlamaForSequenceClassification)(config)
    if not causal:
        with torch.no_grad():
            model.score.weight.mul_(100)  # rewards that differ by more than rounding
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def rm_folder(tmp_path_factory) -> Path:
    return _tiny(tmp_path_factory.mktemp("rm") / "reward_model")


@pytest.fixture(scope="module")
def engine(rm_folder):
    from rlaif.engines.reward import RewardEngine, check_reward_model

    e = RewardEngine(*check_reward_model(f"rm:{rm_folder}"))
    yield e
    e.close()


@lru_cache(maxsize=1)
def _loaded(folder: Path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    return (AutoTokenizer.from_pretrained(folder),
            AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.float32).eval())


def _oracle(folder: Path, prompt: str, response: str) -> float:
    """The reward straight from transformers: the chat template over [user, assistant], one conversation."""
    import torch

    tok, model = _loaded(folder)
    enc = tok.apply_chat_template([{"role": "user", "content": prompt}, {"role": "assistant", "content": response}],
                                  return_tensors="pt", return_dict=True)
    with torch.no_grad():
        return model(**enc).logits[0, 0].item()


def _judge(engine, pairs, constitution, cache_path=None, batch_size=None):
    from rlaif.judging import constitution as constitution_mod
    from rlaif.judging.jobs import judge_mode
    from rlaif.stages.judge import run_judge

    c = constitution_mod.load(str(constitution))
    assert judge_mode(c, engine) == "reward"
    return run_judge(engine, pairs, c, seed=0, mode="reward", settings={}, cache_path=cache_path,
                     batch_size=batch_size, progress=False)


def test_p_a_is_the_sigmoid_of_the_reward_difference_in_both_orders(engine, rm_folder, mini_constitution):
    judgments, counts = _judge(engine, PAIRS, mini_constitution)
    assert counts["identical"] == 1 and counts["judgments"] == 3 * 3 * 2  # 3 pairs x 3 principles x 2 orders
    keys = ["pair_id", "principle_id", "order", "p_a", "verdict", "raw_output", "judge", "key", "mode",
            "principle_hash", "weight"]
    for j in judgments:
        assert list(j) == keys and j["mode"] == "reward" and j["judge"] == engine.identity
        pair = next(p for p in PAIRS if p["pair_id"] == j["pair_id"])
        ra, rb = (_oracle(rm_folder, pair["prompt"], pair[f"response_{x}"]) for x in "ab")
        assert abs(j["raw_output"]["reward_a"] - ra) < 1e-4 and abs(j["raw_output"]["reward_b"] - rb) < 1e-4
        assert abs(j["p_a"] - 1 / (1 + math.exp(rb - ra))) < 1e-5
    by = {}
    for j in judgments:
        by.setdefault((j["pair_id"], j["principle_id"]), {})[j["order"]] = j["p_a"]
    assert all(v["ab"] == v["ba"] for v in by.values())  # both orders: the same number
    assert len({round(v["ab"], 6) for v in by.values()}) == 3  # one number per pair, and the pairs differ

    swapped = [{**p, "response_a": p["response_b"], "response_b": p["response_a"]} for p in PAIRS]
    again, _ = _judge(engine, swapped, mini_constitution)
    assert [j["pair_id"] for j in again] == [j["pair_id"] for j in judgments]
    for j, s in zip(judgments, again):
        assert abs(s["p_a"] - (1 - j["p_a"])) < 1e-12


def test_the_batch_size_changes_no_reward(engine):
    prompts = [p["prompt"] for p in PAIRS] * 2
    responses = [p["response_a"] for p in PAIRS] + [p["response_b"] for p in PAIRS]
    whole = engine.rewards(prompts, responses)
    singly = [engine.rewards([p], [r])[0] for p, r in zip(prompts, responses)]
    assert whole == singly  # on CPU: one conversation per forward pass, no padding
    rows = engine.rows
    engine.rows = {"cpu": 8, "cuda": 8}  # padded batches, as on CUDA: the right reward read past the padding
    try:
        padded = engine.rewards(prompts, responses)
    finally:
        engine.rows = rows
    assert max(abs(a - b) for a, b in zip(padded, whole)) < 1e-4


def test_rewards_are_cached_and_a_rerun_scores_none(engine, mini_constitution, tmp_path, monkeypatch):
    cache = tmp_path / "cache" / "judgments.jsonl"
    first, counts = _judge(engine, PAIRS, mini_constitution, cache, batch_size=2)
    rewards = read_jsonl(tmp_path / "cache" / "rewards.jsonl")
    assert counts["rewards_scored"] == len(rewards) == 6 and not cache.exists()  # 3 judged pairs x 2 responses
    assert {r["judge"] for r in rewards} == {engine.identity}
    calls = []
    real = engine.rewards
    monkeypatch.setattr(engine, "rewards", lambda *a: calls.append(a) or real(*a))
    second, counts = _judge(engine, PAIRS, mini_constitution, cache, batch_size=2)
    assert calls == [] and second == first and counts["judged"] == 0 and counts["reused"] == 18
    more = PAIRS + [{**PAIRS[1], "pair_id": "p4", "response_b": "Paris."}]
    _judge(engine, more, mini_constitution, cache)
    assert calls == [([PAIRS[1]["prompt"]], ["Paris."])]  # only the new response: "Berlin." was scored before


def test_pipeline_and_agreement_with_a_reward_model_judge(rm_folder, mini_constitution, prompts_file, tmp_path,
                                                         monkeypatch, capsys):
    from rlaif.engines.factory import EnginePool
    from rlaif.engines.fake import FakeEngine

    fake, real_get = FakeEngine(), EnginePool.get
    monkeypatch.setattr(EnginePool, "get", lambda self, model, base_url=None, role="policy":
                        real_get(self, model, base_url, role) if model.startswith("rm:") else fake)
    out = tmp_path / "run"
    assert run_cli("--constitution", mini_constitution, "--prompts", prompts_file, "--output-dir", out, "--stages",
                   "generate,judge,preferences", "--judge-model", f"rm:{rm_folder}", "--margin", 0) == 0
    judgments = read_jsonl(out / "judgments.jsonl")
    assert judgments and {j["mode"] for j in judgments} == {"reward"} and fake.calls["label_logprobs"] == 0
    assert len(read_jsonl(out / "cache" / "rewards.jsonl")) == 2 * len(read_jsonl(out / "pairs.jsonl"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["judge"]["mode"] == "reward" and summary["judge"]["rewards_scored"] == 10
    assert (out / "preferences").is_dir()
    page = (out / "report.html").read_text()  # the run's own report says it too, with the calls per preference
    assert "position bias is zero by construction" in page and "judge_calls_per_preference" in page

    ag = tmp_path / "agreement"
    assert run_cli("agreement", "--constitution", mini_constitution, "--human", FIXTURE, "--judge-model",
                   f"rm:{rm_folder}", "--output-dir", ag) == 0
    result = json.loads((ag / "agreement.json").read_text())
    model = result["model"]
    assert list(result) == ["model", "length", "random"] and model["mode"] == "reward"
    assert model["judge_model"].startswith(f"rm:local:{rm_folder}") and "zero by construction" in model["position_bias"]
    assert model["position_consistency"] == 1.0 and model["prefer_first"] == 0.5 and model["parse_failures"] == 0
    assert "position bias is zero by construction" in (ag / "report.html").read_text()
    assert run_cli("agreement", "--constitution", mini_constitution, "--human", FIXTURE, "--judge-model",
                   f"rm:{rm_folder}", "--output-dir", ag) == 0  # again: every reward from the cache
    again = json.loads((ag / "agreement.json").read_text())["model"]
    assert again["rewards_scored"] == 0 and again["agreement"] == model["agreement"]

    both = tmp_path / "both"  # the generative judge (here the fake) and the reward model in one report
    assert run_cli("agreement", "--constitution", mini_constitution, "--human", FIXTURE, "--judge", "model", "--judge",
                   "reward", "--reward-model", rm_folder, "--output-dir", both) == 0
    result = json.loads((both / "agreement.json").read_text())
    assert list(result) == ["model", "reward", "length", "random"] and result["model"]["mode"] == "logprob"
    assert {k: v for k, v in result["reward"].items() if k not in ("seconds", "judge")} == \
        {k: v for k, v in model.items() if k not in ("seconds", "judge")}
    assert "Judge <code>reward</code> is a reward model" in (both / "report.html").read_text()


def test_judge_reward_without_a_reward_model_is_one_line(tmp_path, mini_constitution, capsys):
    code = run_cli("agreement", "--constitution", mini_constitution, "--human", FIXTURE, "--judge", "reward",
                   "--output-dir", tmp_path / "out")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--reward-model" in err[0] and not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["two-labels", "causal-lm", "missing"])
@pytest.mark.parametrize("command", ["main", "agreement"])
def test_a_folder_that_is_no_reward_model_is_one_line_and_nothing_written(kind, command, tmp_path, mini_constitution,
                                                                         prompts_file, capsys):
    folder = tmp_path / kind
    if kind != "missing":
        _tiny(folder, num_labels=2 if kind == "two-labels" else 1, causal=kind == "causal-lm")
    out = tmp_path / "out"
    args = ["agreement", "--human", FIXTURE] if command == "agreement" else ["--prompts", prompts_file]
    capsys.readouterr()
    code = run_cli(*args, "--constitution", mini_constitution, "--judge-model", f"rm:{folder}", "--output-dir", out)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1, err
    field = {"two-labels": "no field 'id2label', so num_labels is 2", "causal-lm": "field 'architectures'",
             "missing": "has no config.json"}[kind]
    assert field in err[0] and "config.json" in err[0] and "fix: pass a one-output sequence classifier" in err[0]
    assert not out.exists()


def test_rm_as_the_policy_is_refused(tmp_path, mini_constitution, prompts_file, rm_folder, capsys):
    code = run_cli("--constitution", mini_constitution, "--prompts", prompts_file, "--policy-model", f"rm:{rm_folder}",
                   "--output-dir", tmp_path / "out")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "--policy-model" in err[-1] and "cannot generate" in err[-1]
    assert not (tmp_path / "out").exists()
