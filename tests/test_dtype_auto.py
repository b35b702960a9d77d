"""--dtype auto on CPU is measured (prefill for a judge, decode for a generator), cached, and never overrides
an explicit --dtype; HF log-prob judging in length-bucketed batches gives the one-at-a-time log-probs."""

import json

import pytest
import torch

from rlaif.engines import dtype as measured


@pytest.fixture
def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    def load(torch_dtype):
        torch.manual_seed(0)
        config = LlamaConfig(vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
        model = LlamaForCausalLM(config).eval()
        for p in model.parameters():  # as from_pretrained(dtype=...) does: weights cast, RoPE buffers kept fp32
            p.data = p.data.to(torch_dtype)
        return model
    return load


def test_measures_once_then_reads_the_cache(tmp_path, monkeypatch, tiny_llama):
    monkeypatch.setenv("RLAIF_CACHE", str(tmp_path))
    monkeypatch.setattr(measured, "native_bf16", lambda: True)
    model, name, why = measured.choose(tiny_llama, "tiny@1", "judge")
    assert name in ("float32", "bfloat16") and model.dtype == getattr(torch, name) and why.startswith("measured now")
    cache = json.loads((tmp_path / "dtype-choice.json").read_text())
    (key, entry), = cache.items()
    assert measured.cpu_model() in key and torch.__version__ in key and "tiny@1" in key and "judge" in key
    assert entry["dtype"] == name and set(entry["float32"]) == set(entry["bfloat16"]) == {"prefill", "decode"}
    assert all(0 < s < 5 for t in (entry["float32"], entry["bfloat16"]) for s in t.values())
    monkeypatch.setattr(measured, "measure", lambda model: pytest.fail("measured again"))
    model, again, why = measured.choose(tiny_llama, "tiny@1", "judge")
    assert again == name and model.dtype == getattr(torch, name) and "measured before" in why


@pytest.mark.parametrize("role,want", [("judge", "float32"), ("generate", "bfloat16"), ("both", "bfloat16")])
def test_the_role_decides_what_counts(tmp_path, monkeypatch, tiny_llama, role, want):
    """This Xeon-like CPU prefills faster in fp32 and decodes faster in bf16 (both: 3.0 s vs 2.9 s)."""
    monkeypatch.setenv("RLAIF_CACHE", str(tmp_path))
    monkeypatch.setattr(measured, "native_bf16", lambda: True)
    timings = {torch.float32: {"prefill": 1.0, "decode": 2.0}, torch.bfloat16: {"prefill": 1.4, "decode": 1.5}}
    monkeypatch.setattr(measured, "measure", lambda model: timings[model.dtype])
    assert measured.choose(tiny_llama, "m", role)[1] == want


def test_no_native_bf16_means_fp32_unmeasured(monkeypatch, tiny_llama):
    monkeypatch.setattr(measured, "native_bf16", lambda: False)
    monkeypatch.setattr(measured, "measure", lambda model: pytest.fail("measured"))
    assert measured.choose(tiny_llama, "m", "judge")[1] == "float32"


def test_length_batches_cover_every_prompt_once_within_budget():
    from rlaif.engines.hf import HFEngine

    engine = HFEngine.__new__(HFEngine)
    engine.device = "cuda"
    lengths = [900, 30, 500, 510, 2000, 5000, 35, 40, 505, 1200] * 5
    batches = engine.length_batches(lengths)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= engine.judge_rows["cuda"]
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= engine.judge_tokens["cuda"]
    assert any(len(b) > 1 for b in batches)
    engine.device = "cpu"  # one prompt per pass: no padding, so no judgment depends on its neighbours
    assert sorted(engine.length_batches(lengths)) == [[i] for i in range(len(lengths))]


def test_explicit_dtype_wins_and_batched_judging_matches_one_at_a_time(monkeypatch):
    from rlaif.engines.hf import HFEngine
    from rlaif.models import resolve

    monkeypatch.setattr(measured, "choose", lambda *a: pytest.fail("auto was measured for an explicit dtype"))
    path, identity = resolve("SmolLM2-135M-Instruct")
    engine = HFEngine(path, identity, dtype="float32", role="judge")
    assert engine.dtype == torch.float32 and engine.dtype_choice["why"] == "given with --dtype"
    convs = [[{"role": "user", "content": "Which is better, A or B? Reply A or B. " * n}] for n in (1, 4, 2)]
    single = engine.label_logprobs(convs, ["A", "B"])  # on CPU: one prompt per forward pass
    engine.judge_rows = {"cpu": 8}  # padded, length-sorted batches, as on CUDA
    batched = engine.label_logprobs(convs, ["A", "B"])
    assert all(abs(b[k] - s[k]) < 1e-4 for b, s in zip(batched, single) for k in "AB")
    for conv in convs:  # the cached chat-template frame gives apply_chat_template's ids
        ids = engine.tok.apply_chat_template(conv, add_generation_prompt=True, tokenize=True)
        assert engine.chat_ids(conv, 1, keep_head=True) == list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def test_the_pool_tells_the_engine_its_role():
    from rlaif.cli import build_parser, make_config
    from rlaif.engines.factory import EnginePool

    def role(*argv, model="SmolLM2-135M-Instruct"):
        return EnginePool(make_config(build_parser("run").parse_args(list(argv)))).role(model)

    assert role() == "both"  # the default run generates and judges with one model
    assert role("--stages", "judge") == "judge" and role("--stages", "generate") == "generate"
    assert role("--judge-model", "/m/judge", model="/m/judge") == "judge"
    assert role("--judge-model", "/m/judge") == "generate"


def test_the_measured_model_is_the_one_a_cached_choice_loads(tmp_path, monkeypatch, tiny_llama):
    """The first run (measured) and every later run (cached) must compute with identical models."""
    monkeypatch.setenv("RLAIF_CACHE", str(tmp_path))
    monkeypatch.setattr(measured, "native_bf16", lambda: True)
    monkeypatch.setattr(measured, "measure", lambda model: {"prefill": 1.0 if model.dtype == torch.bfloat16 else 2.0,
                                                             "decode": 1.0})
    first, name, _ = measured.choose(tiny_llama, "m", "judge")
    later, again, _ = measured.choose(tiny_llama, "m", "judge")
    assert name == again == "bfloat16"
    a, b = first.state_dict(), later.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(x.dtype == y.dtype and torch.equal(x, y) for x, y in zip(first.buffers(), later.buffers()))


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_on_cpu_takes_the_measured_choice_and_an_explicit_dtype_wins(tmp_path, monkeypatch):
    """VLLMEngine's dtype auto on a bf16 CPU: measured through transformers (under the same cache key as the HF
    engine), the choice handed to vLLM. vllm.LLM is replaced by a recorder: only the hand-over is tested here."""
    pytest.importorskip("vllm")
    import vllm

    from rlaif.engines import vllm as vllm_engine
    from rlaif.models import resolve

    path, identity = resolve("SmolLM2-135M-Instruct")  # before the cache moves: the provisioned model, not a new one
    monkeypatch.setenv("RLAIF_CACHE", str(tmp_path))  # a fresh dtype-choice.json
    monkeypatch.setattr(vllm_engine, "auto_dtype", lambda cuda: "bfloat16")
    monkeypatch.setattr(measured, "native_bf16", lambda: True)
    timings = {torch.float32: {"prefill": 1.0, "decode": 2.0}, torch.bfloat16: {"prefill": 1.4, "decode": 1.5}}
    monkeypatch.setattr(measured, "measure", lambda model: timings[model.dtype])  # fp32 prefills faster

    class Handed(Exception):
        pass

    def recorder(**kwargs):
        raise Handed(kwargs["dtype"])
    monkeypatch.setattr(vllm, "LLM", recorder)
    for role, want in (("judge", "float32"), ("generate", "bfloat16")):
        with pytest.raises(Handed, match=want):
            vllm_engine.VLLMEngine(path, identity, dtype="auto", role=role, max_model_len=512)
    cache = json.loads((tmp_path / "dtype-choice.json").read_text())
    assert sorted(k.rsplit(" | ", 1)[1] for k in cache) == ["generate", "judge"]
    monkeypatch.setattr(measured, "decide", lambda *a: pytest.fail("auto was measured for an explicit dtype"))
    with pytest.raises(Handed, match="bfloat16"):
        vllm_engine.VLLMEngine(path, identity, dtype="bfloat16", role="judge", max_model_len=512)


def test_a_model_trained_from_another_reuses_its_choice_and_another_shape_does_not(tmp_path, monkeypatch):
    """The key is the config's shapes: new weights in the same architecture (a trained policy in a new folder) read
    the cached choice; one more layer is another architecture and is measured."""
    from transformers import LlamaConfig, LlamaForCausalLM

    monkeypatch.setenv("RLAIF_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(measured, "native_bf16", lambda: True)
    folders = {}
    for name, seed, layers in (("base", 0, 2), ("trained", 1, 2), ("deeper", 0, 3)):
        torch.manual_seed(seed)
        LlamaForCausalLM(LlamaConfig(vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                                     num_attention_heads=4, num_key_value_heads=2)).save_pretrained(tmp_path / name)
        folders[name] = measured.architecture(str(tmp_path / name), f"local:{name}")
    assert folders["base"] == folders["trained"] != folders["deeper"] and folders["base"].startswith("arch:")
    assert measured.architecture(str(tmp_path / "missing"), "local:missing") == "local:missing"
    measurements = []
    monkeypatch.setattr(measured, "measure",
                        lambda model: measurements.append(model) or {"prefill": 1.0, "decode": 1.0})

    def load(folder):
        return lambda torch_dtype: LlamaForCausalLM.from_pretrained(folder, dtype=torch_dtype)
    for name in ("base", "trained", "deeper"):
        measured.choose(load(tmp_path / name), folders[name], "judge")
    assert len(measurements) == 4  # fp32 and bf16 for "base" and for "deeper"; "trained" read base's entry
