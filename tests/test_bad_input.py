"""Bad and hostile input: one line on stderr, exit 2, no partial files, nothing earlier lost."""

import hashlib
import subprocess
from pathlib import Path

import pytest

from conftest import MINI_CONSTITUTION, pipeline_cmd

GOOD_PROMPTS = "How do I bake bread?\nWrite a haiku.\n"


def _c(edit):
    return lambda t: edit(MINI_CONSTITUTION)


# name -> (constitution text edit, prompt file (name, bytes), extra args, fragment expected in the message)
CASES = {
    "yaml-syntax": (lambda t: t.replace("version: 1", "version: [1"), None, [], "YAML syntax error"),
    "unknown-key": (lambda t: t + "bogus_key: 1\n", None, [], "bogus_key"),
    "wrong-type": (lambda t: t.replace("weight: 2.0", "weight: [2]"), None, [], "must be int/float"),
    "duplicate-id": (lambda t: t.replace("id: help", "id: harm"), None, [], "duplicate principle id"),
    "missing-text": (lambda t: t.replace("    text: Choose the more helpful response.\n", ""), None, [], "missing required key `text`"),
    "empty-text": (lambda t: t.replace("Choose the more helpful response.", '"   "'), None, [], "empty text"),
    "negative-weight": (lambda t: t.replace("weight: 2.0", "weight: -1"), None, [], "positive"),
    "template-missing": (lambda t: t.replace("judge_logprob.j2", "nothere.j2"), None, [], "not found"),
    "template-traversal": (lambda t: t.replace("judge_logprob.j2", "../../../etc/passwd"), None, [], "plain file name"),
    "name-traversal": (lambda t: t.replace("name: mini", "name: ../../tmp/evil"), None, [], "name"),
    "sandbox-mro": (lambda t: t.replace("judge_logprob.j2", "evil.j2"), None, [], "sandbox"),
    "empty-prompt-txt": (None, ("p.txt", b"How do I bake bread?\n\nWrite a haiku.\n"), [], "empty or whitespace-only"),
    "blank-prompt-jsonl": (None, ("p.jsonl", b'{"prompt": "ok"}\n{"prompt": "   "}\n'), [], "p.jsonl:2"),
    "not-utf8": (None, ("p.txt", b"caf\xe9 au lait\n"), [], "not valid UTF-8"),
    "bad-json": (None, ("p.jsonl", b'{"prompt": "ok"}\n{"prompt": \n'), [], "invalid JSON"),
    "no-prompt-field": (None, ("p.jsonl", b'{"text": "ok"}\n'), [], "`prompt`"),
    "wrong-extension": (None, ("p.csv", b"prompt\nok\n"), [], "unsupported prompt file type"),
    "missing-prompt-file": (None, "MISSING", [], "prompt file not found"),
    "missing-model-folder": (None, None, ["--policy-model", "./no/such/model"], "not found"),
    "missing-judge-folder": (None, None, ["--judge-model", "/no/such/judge"], "not found"),
    "judge-endpoint-without-url": (None, None, ["--judge-model", "openai:judge"], "--judge-base-url"),
    "policy-endpoint-without-url": (None, None, ["--policy-model", "openai:policy"], "--policy-base-url"),
    "bad-stage": (None, None, ["--stages", "generate,bake"], "unknown stage"),
    "negative-prompts": (None, None, ["--num-prompts", "-3"], "--num-prompts"),
    "zero-batch-size": (None, None, ["--batch-size", "0"], "--batch-size must be positive"),
    "config-zero-judge-batch": (None, None, ["--config", "CONFIG:judge:\n  batch_size: 0\n"], "judge.batch_size must be positive"),
    "zero-tokens": (None, None, ["--max-new-tokens", "0"], "--max-new-tokens"),
    "config-unknown-key": (None, None, ["--config", "CONFIG:judge:\n  modle: x\n"], "judge.modle"),
    "config-wrong-type": (None, None, ["--config", "CONFIG:seed: abc\n"], "`seed` must be int"),
    "missing-constitution": (None, None, ["--constitution", "no_such_constitution"], "constitution file not found"),
    "zero-rounds": (None, None, ["--rounds", "0"], "--rounds must be positive"),
    "zero-ray-replicas": (None, None, ["--executor", "ray", "--ray-replicas", "0"], "--ray-replicas must be positive"),
    "rounds-with-ppo": (None, None, ["--rounds", "2", "--algo", "ppo"], "--algo is ppo"),
    "rounds-without-policy": (None, None, ["--rounds", "2"], "--stages lacks policy"),
}


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def earlier_run(tmp_path_factory) -> Path:
    """A run folder with earlier work in it; no bad command may change it."""
    out = tmp_path_factory.mktemp("earlier") / "run"
    (out / "stages").mkdir(parents=True)
    (out / "pairs.jsonl").write_text('{"pair_id": "00000-x", "prompt": "p", "response_a": "a", "response_b": "b"}\n')
    (out / "summary.json").write_text('{"generate": {"pairs": 1}}\n')
    (out / "stages" / "generate.done").write_text("{}\n")
    return out


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input(name, tmp_path, earlier_run):
    edit, prompt_file, extra, fragment = CASES[name]
    constitution = tmp_path / "c.yaml"
    constitution.write_text(edit(MINI_CONSTITUTION) if edit else MINI_CONSTITUTION)
    (tmp_path / "evil.j2").write_text("{{ ''.__class__.__mro__[1].__subclasses__() }}{{ principle.text }}")
    prompts = tmp_path / "ok.txt"
    prompts.write_text(GOOD_PROMPTS)
    if prompt_file == "MISSING":
        prompts = tmp_path / "missing.txt"
    elif prompt_file:
        prompts = tmp_path / prompt_file[0]
        prompts.write_bytes(prompt_file[1])
    args = ["--constitution", constitution, "--prompts", prompts, "--stages", "generate,judge,preferences"]
    extra = list(extra)
    for i, arg in enumerate(extra):
        if arg.startswith("CONFIG:"):
            (tmp_path / "cfg.yaml").write_text(arg.removeprefix("CONFIG:"))
            extra[i] = str(tmp_path / "cfg.yaml")
    if "--constitution" in extra:
        args = args[2:]
    before = _snapshot(earlier_run)
    for target in (tmp_path / "fresh", earlier_run):
        proc = subprocess.run(pipeline_cmd(*args, *extra, "--output-dir", target), capture_output=True, text=True,
                              cwd=tmp_path, timeout=120)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
        assert len(lines) == 1 and fragment in lines[0], lines
        assert lines[0].startswith("rlaif: error: ")
    assert not (tmp_path / "fresh").exists() and not (tmp_path / "runs").exists()
    assert _snapshot(earlier_run) == before  # nothing earlier lost or touched


def test_resume_with_other_sampling_settings_is_refused(tmp_path, mini_constitution, prompts_file, fake_engine, capsys):
    from conftest import run_cli

    out = tmp_path / "run"
    assert run_cli("--constitution", mini_constitution, "--prompts", prompts_file, "--output-dir", out,
                   "--stages", "generate") == 0
    before = _snapshot(out)
    assert run_cli("--constitution", mini_constitution, "--prompts", prompts_file, "--output-dir", out,
                   "--stages", "generate", "--seed", "9") == 2
    assert "other model or sampling settings" in capsys.readouterr().err
    assert _snapshot(out) == before
