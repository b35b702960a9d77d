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
