"""Engine lifecycle in a run: one model in memory at a time, none during training, one engine for a policy that is
also the judge. Counting fake engines (logic only); tests/test_engine_memory.py measures the memory itself."""

import gc
import weakref

import pytest

from conftest import run_cli
from rlaif.engines import factory
from rlaif.engines.base import Engine
from rlaif.engines.fake import FakeEngine


class Stop(Exception):
    pass


@pytest.fixture
def events(monkeypatch):
    """Every engine the pool builds is a fresh fake that logs its build and its close."""
    log, built = [], []

    class Logged(FakeEngine):
        def close(self):
            log.append(("close", self.identity))

    def build(self, model, base_url, backend="hf"):
        log.append(("build", model))
        engine = Logged(identity=model)
        built.append(weakref.ref(engine))
        return engine

    monkeypatch.setattr(factory.EnginePool, "_build", build)
    monkeypatch.setattr("rlaif.models.resolve", lambda name: (name, f"fake:{name}"))
    return log, built


def _live_engines() -> list:
    gc.collect()
    return [o for o in gc.get_objects() if issubclass(type(o), Engine)]


@pytest.mark.parametrize("judge", ["judge-model", "policy-model"])
def test_no_engine_alive_when_the_reward_stage_starts(events, judge, tmp_path, mini_constitution, prompts_file,
                                                      monkeypatch):
    log, built = events
    seen = {}

    def reward_stage(*args, **kwargs):
        seen["live"] = _live_engines()
        seen["refs"] = [r() for r in built]
        raise Stop

    monkeypatch.setattr("rlaif.training.trainers.train_reward", reward_stage)
    with pytest.raises(Stop):
        run_cli("--constitution", mini_constitution, "--prompts", prompts_file, "--output-dir", tmp_path / "run",
                "--policy-model", "policy-model", "--judge-model", judge)
    assert seen["live"] == [] and seen["refs"] == [None] * len(built)
    if judge == "policy-model":  # one engine generated and judged
        assert log == [("build", "policy-model"), ("close", "policy-model")]
    else:  # the policy's engine was closed before the judge's was built
        assert log == [("build", "policy-model"), ("close", "policy-model"),
                       ("build", "judge-model"), ("close", "judge-model")]


@pytest.mark.parametrize("judge", ["judge-model", "policy-model"])
def test_evaluation_holds_one_model_at_a_time(events, judge, tmp_path):
    from rlaif.cli import build_parser, make_config
    from rlaif.judging.constitution import load
    from rlaif.pipeline import engine_plan
    from rlaif.store.folder import Run
    from rlaif.stages.train import evaluate

    log, built = events
    cfg = make_config(build_parser("run").parse_args(["--policy-model", "policy-model", "--judge-model", judge,
                                                       "--engine", "hf"]))
    run = Run(tmp_path / "run")
    run.root.mkdir()
    pool = factory.EnginePool(cfg, plan=engine_plan(cfg, run))
    result = evaluate(cfg, load("safety.yaml"), run, pool, ["How do I bake bread?", "How do I hurt someone?"])
    assert result["n_judged"] == 2
    trained = str(run.policy)
    if judge == "policy-model":  # the base policy's engine stays for judging, then goes
        assert log == [("build", trained), ("close", trained), ("build", "policy-model"), ("close", "policy-model")]
    else:
        assert log == [("build", trained), ("close", trained), ("build", "policy-model"), ("close", "policy-model"),
                       ("build", "judge-model"), ("close", "judge-model")]
    assert pool.alive() == [] and _live_engines() == []


def test_without_a_plan_engines_live_until_close(events):
    from rlaif.cli import build_parser, make_config

    log, _ = events
    pool = factory.EnginePool(make_config(build_parser("run").parse_args(["--engine", "hf"])))
    assert pool.get("judge-model") is pool.get("judge-model")
    pool.done("judge")  # not in a plan: nothing happens
    assert log == [("build", "judge-model")]
    pool.close()
    assert log == [("build", "judge-model"), ("close", "judge-model")] and pool.alive() == []


def test_engine_start_is_reported_apart_from_the_stage_and_a_slow_vllm_start_prints_a_hint(
        monkeypatch, tmp_path, mini_constitution, prompts_file, capsys):
    """summary.json: each stage's engine_start_seconds (with the engine's own parts) is its engines' build time, and
    tokens/s and seconds per pair leave it out; a vLLM start longer than the stage's work prints one hint line."""
    import json
    import time

    class Counting(FakeEngine):
        def generate(self, conversations, **kw):
            time.sleep(0.1)  # work long enough that summary.json's seconds, rounded to 0.01, still measure it
            texts = super().generate(conversations, **kw)
            self.stats["completion_tokens"] = self.stats.get("completion_tokens", 0) + 10 * len(texts)
            return texts

    def build(self, model, base_url, backend="hf"):
        time.sleep(0.4)  # the start, four times the work below
        engine = Counting(identity=model)
        engine.start = {"import_s": 0.1, "engine_s": 0.3}
        return engine

    monkeypatch.setattr(factory.EnginePool, "_build", build)
    monkeypatch.setattr("rlaif.models.resolve", lambda name: (name, f"fake:{name}"))
    assert run_cli("--constitution", mini_constitution, "--prompts", prompts_file, "--output-dir", tmp_path / "run",
                   "--engine", "vllm", "--stages", "generate,judge", "--policy-model", "p", "--judge-model", "j") == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    for stage, model in (("generate", "p"), ("judge", "j")):
        info = summary[stage]
        assert info["engine_start_seconds"] >= 0.4 and info["seconds"] >= info["engine_start_seconds"]
        [start] = info["engine_start"]
        assert start["engine"] == "vllm" and start["model"] == model and start["import_s"] == 0.1
    generate = summary["generate"]
    work = generate["seconds"] - generate["engine_start_seconds"]
    assert generate["tokens_per_second"] > generate["completion_tokens"] / generate["seconds"]  # start left out
    assert generate["completion_tokens"] == 100  # 5 prompts x 2 samples x 10 tokens
    assert generate["tokens_per_second"] == pytest.approx(generate["completion_tokens"] / work, rel=0.1)
    judge = summary["judge"]
    assert judge["seconds_per_pair"] * judge["pairs"] < judge["seconds"] - judge["engine_start_seconds"] + 0.05
    hints = [line for line in capsys.readouterr().err.splitlines() if line.startswith("rlaif: hint: vLLM took")]
    assert len(hints) == 2 and all("--engine hf is faster" in h for h in hints)
    assert "generate stage" in hints[0] and "judge stage" in hints[1]


def test_reward_judge_keeps_the_judge_alive_through_training_and_counts_its_calls(
        events, monkeypatch, tmp_path, mini_constitution, prompts_file):
    """--algo grpo --reward judge: the judge's engine is built before training, still open while the trainer calls
    the reward function, closed after the policy step; its calls reach summary.json. With --engine auto the judge
    that lives beside training is a transformers engine where the policy's is vLLM (a vLLM judge would claim
    --gpu-memory-utilization of the GPU)."""
    import json

    log, _ = events
    backends, during = {}, {}
    build = factory.EnginePool._build

    def recording(self, model, base_url, backend="hf"):
        backends[model] = backend
        return build(self, model, base_url, backend)

    def trainer(base, reward_model, dataset, out_dir, cfg, seed, *, reward_func=None, **kw):
        during["log"] = list(log)
        prompts = [[{"role": "user", "content": "How do I bake bread?"}]] * 2
        completions = [[{"role": "assistant", "content": c}] for c in ("Knead and bake.", "Buy some.")]
        during["rewards"] = reward_func(prompts, completions, completion_ids=None)
        reward_func(prompts, completions, completion_ids=None)  # the same completions again: from the cache
        return {"steps": 2, "seconds_per_step": 0.5}

    monkeypatch.setattr(factory.EnginePool, "_build", recording)
    monkeypatch.setattr(factory, "choose_backend", lambda requested: "vllm" if requested == "auto" else requested)  # CUDA
    monkeypatch.setattr("rlaif.judging.rating.check_judge_labels", lambda model, constitution: None)
    monkeypatch.setattr("rlaif.training.trainers.train_policy", trainer)
    monkeypatch.setattr("rlaif.stages.train.evaluate", lambda *a, **k: dict.fromkeys(
        ("policy_win_rate", "reward_base", "reward_policy")))
    out = tmp_path / "run"
    assert run_cli("--constitution", mini_constitution, "--prompts", prompts_file, "--output-dir", out,
                   "--stages", "generate,judge,preferences,policy", "--algo", "grpo", "--reward", "judge",
                   "--policy-model", "p", "--judge-model", "j", "--engine", "auto") == 0
    assert backends == {"p": "vllm", "j": "hf"}
    assert during["log"][-1] == ("build", "j")  # built for the policy step, open while the trainer calls it
    assert log[-1] == ("close", "j")  # released once the policy step is done
    assert len(during["rewards"]) == 2 and all(0 <= r <= 1 for r in during["rewards"])
    policy = json.loads((out / "summary.json").read_text())["policy"]
    ratings = 2 * 3  # 2 completions x the mini constitution's 3 principles (comparison: all)
    assert policy["reward_calls"] == ratings and policy["reward_cache_hits"] == ratings  # the second call: cached
    assert policy["reward_seconds"] >= 0
    assert len(policy["reward_trace"]) == 2


def test_judge_device_reaches_the_judge_transformers_engine_only(monkeypatch):
    """--judge-device: where the judge's transformers engine lives (with --reward judge, beside the policy)."""
    from rlaif import config as config_mod

    seen = []
    monkeypatch.setattr("rlaif.engines.hf.HFEngine", lambda path, identity, **kw: seen.append((path, kw["device"])))
    monkeypatch.setattr("rlaif.models.require", lambda name: (f"/models/{name}", f"fake:{name}"))
    monkeypatch.setattr(factory.EnginePool, "_context", lambda self, path: 512)
    cfg = config_mod.from_dict(config_mod.RunConfig, {"judge": {"model": "j", "device": "cuda:1"},
                                                      "generate": {"model": "p"}}, "test")
    pool = factory.EnginePool(cfg)
    pool._build("j", None, "hf")
    pool._build("p", None, "hf")
    assert seen == [("/models/j", "cuda:1"), ("/models/p", None)]
