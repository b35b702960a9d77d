"""--gpu-memory-utilization and --max-model-len: defaults, where they go, and bad values (one line, exit 2,
nothing written), beside tests/test_bad_input.py."""

import subprocess

import pytest

from conftest import MINI_CONSTITUTION, pipeline_cmd
from rlaif.cli import build_parser, make_config
from rlaif.errors import RlaifError

# name -> (extra args, fragment expected in the one stderr line)
CASES = {
    "utilization-zero": (["--gpu-memory-utilization", "0"], "gpu_memory_utilization must be in (0, 1]"),
    "utilization-above-one": (["--gpu-memory-utilization", "1.5"], "gpu_memory_utilization must be in (0, 1]"),
    "utilization-negative": (["--gpu-memory-utilization", "-0.3"], "--gpu-memory-utilization"),
    "config-utilization": (["--config", "CONFIG:gpu_memory_utilization: 2\n"], "gpu_memory_utilization must be in"),
    "max-len-zero": (["--max-model-len", "0"], "max_model_len must be a positive integer"),
    "max-len-negative": (["--max-model-len", "-8"], "--max-model-len"),
    "config-max-len-float": (["--config", "CONFIG:max_model_len: 1.5\n"], "`max_model_len` must be int"),
    "max-len-past-model": (["--max-model-len", "999999"], "exceeds the model's context of 8192 tokens"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_memory_settings(name, tmp_path):
    extra, fragment = CASES[name]
    (tmp_path / "c.yaml").write_text(MINI_CONSTITUTION)
    (tmp_path / "p.txt").write_text("How do I bake bread?\nWrite a haiku.\n")
    extra = [str(tmp_path / "cfg.yaml") if a.startswith("CONFIG:") else a for a in extra]
    for arg in CASES[name][0]:
        if arg.startswith("CONFIG:"):
            (tmp_path / "cfg.yaml").write_text(arg.removeprefix("CONFIG:"))
    proc = subprocess.run(pipeline_cmd("--constitution", tmp_path / "c.yaml", "--prompts", tmp_path / "p.txt",
                                       "--stages", "generate", "--engine", "hf", "--output-dir", tmp_path / "fresh",
                                       *extra), capture_output=True, text=True, cwd=tmp_path, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("rlaif: error: ") and fragment in lines[0], lines
    assert not (tmp_path / "fresh").exists() and not (tmp_path / "runs").exists()


def _cfg(*argv):
    return make_config(build_parser("run").parse_args(list(argv)))


def test_defaults_and_edges():
    cfg = _cfg()
    assert cfg.gpu_memory_utilization == 0.85 and cfg.max_model_len is None
    assert _cfg("--gpu-memory-utilization", "1", "--max-model-len", "1").max_model_len == 1
    with pytest.raises(RlaifError):
        _cfg("--gpu-memory-utilization", "1.0001")
    # every subcommand that builds an engine takes both flags
    assert make_config(build_parser("agreement").parse_args(["--human", "x", "--max-model-len", "512"])).max_model_len == 512
    assert make_config(build_parser("robustness").parse_args(["--gpu-memory-utilization", "0.5"])).gpu_memory_utilization == 0.5


def test_default_context_is_the_models_own_capped(monkeypatch):
    from rlaif.engines import factory

    monkeypatch.setattr("rlaif.engines.vllm.context_length", lambda path, trust=False: 131072)
    assert factory.EnginePool(_cfg("--engine", "hf"))._context("/m") == factory.CONTEXT_CAP == 4096
    monkeypatch.setattr("rlaif.engines.vllm.context_length", lambda path, trust=False: 2048)
    assert factory.EnginePool(_cfg("--engine", "hf"))._context("/m") == 2048
    assert factory.EnginePool(_cfg("--engine", "hf", "--max-model-len", "1000"))._context("/m") == 1000
