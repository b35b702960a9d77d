"""An engine per role (issue 22, point 5): --policy-engine and --judge-engine, each defaulting to --engine. A model
that generates and judges shares one engine only when both roles use the same kind."""

import json

import pytest

from conftest import run_cli
from rlaif.config import EMBEDDED_MODEL
from rlaif.engines import factory
from rlaif.engines.fake import FakeEngine


@pytest.fixture
def recorders(monkeypatch):
    """HFEngine and VLLMEngine replaced by counting fakes that note their kind, model and dtype role."""
    from rlaif.engines import hf, vllm

    built = []

    def recorder(kind):
        class Recorder(FakeEngine):
            def __init__(self, path, identity, **kw):
                super().__init__(identity=f"{kind}:{identity}")
                self.kind, self.path, self.role = kind, path, kw.get("role")
                built.append(self)
        return Recorder

    monkeypatch.setattr(hf, "HFEngine", recorder("hf"))
    monkeypatch.setattr(vllm, "VLLMEngine", recorder("vllm"))
    monkeypatch.setattr("rlaif.models.resolve", lambda name: (name, f"fake:{name}"))
    monkeypatch.setattr(factory.EnginePool, "_context", lambda self, path: 512)
    return built


def _run(tmp_path, constitution, prompts, *extra):
    return run_cli("--constitution", constitution, "--prompts", prompts, "--output-dir", tmp_path / "run",
                   "--stages", "generate,judge", "--num-prompts", 3, *extra)


def test_generate_uses_the_policy_engine_and_judge_the_judge_engine(recorders, tmp_path, mini_constitution,
                                                                    prompts_file):
    """The same (embedded) model generates and judges; with two kinds it gets two engines, never shared."""
    assert _run(tmp_path, mini_constitution, prompts_file, "--policy-engine", "hf", "--judge-engine", "vllm") == 0
    assert [(e.kind, e.path, e.role) for e in recorders] == [("hf", EMBEDDED_MODEL, "generate"),
                                                             ("vllm", EMBEDDED_MODEL, "judge")]
    policy, judge = recorders
    assert policy.calls["generate"] == 6 and policy.calls["label_logprobs"] == 0  # 3 prompts x 2 samples
    assert judge.calls["generate"] == 0 and judge.calls["label_logprobs"] > 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["judge"]["judged"] == judge.calls["label_logprobs"]


def test_roles_default_to_engine_and_share_one_engine(recorders, tmp_path, mini_constitution, prompts_file):
    assert _run(tmp_path, mini_constitution, prompts_file, "--engine", "vllm") == 0
    assert [(e.kind, e.role) for e in recorders] == [("vllm", "both")]
    assert recorders[0].calls["generate"] == 6 and recorders[0].calls["label_logprobs"] > 0


def test_one_role_overridden_in_yaml(recorders, tmp_path, mini_constitution, prompts_file):
    """judge_engine in the --config YAML, the policy on --engine: the judge model runs on its own kind."""
    config = tmp_path / "run.yaml"
    config.write_text("engine: hf\njudge_engine: vllm\njudge:\n  model: judge-model\n")
    assert _run(tmp_path, mini_constitution, prompts_file, "--config", config) == 0
    assert [(e.kind, e.path) for e in recorders] == [("hf", EMBEDDED_MODEL), ("vllm", "judge-model")]
