"""The CLI contract outside scripts rely on (issues: pipeline, constitutions)."""

import subprocess
import time

from conftest import MINI_CONSTITUTION, ROOT, pipeline_cmd


def _run(*args, cwd=None, timeout=60):
    t = time.time()
    proc = subprocess.run(pipeline_cmd(*args), capture_output=True, text=True, cwd=cwd, timeout=timeout)
    return proc, time.time() - t


def test_help_is_fast():
    proc, seconds = _run("--help")
    assert proc.returncode == 0 and "--constitution" in proc.stdout and "--dry-run" in proc.stdout
    assert seconds < 2.0, seconds


def test_dry_run_prints_judge_prompts_and_writes_nothing(tmp_path):
    proc, seconds = _run("--constitution", "safety.yaml", "--dry-run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert seconds < 10
    assert proc.stdout.count("=====") >= 4 and "<<<RESPONSE A" in proc.stdout
    assert "Reply with a single letter, A or B." in proc.stdout
    assert list(tmp_path.iterdir()) == []  # no run folder, nothing written


def test_dry_run_uses_the_runs_pairs_when_present(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "pairs.jsonl").write_text('{"pair_id": "p1", "prompt": "UNIQUE-PROMPT-42", "response_a": "x", "response_b": "y"}\n')
    proc, _ = _run("--constitution", "honesty", "--dry-run", "--output-dir", out)
    assert proc.returncode == 0 and "UNIQUE-PROMPT-42" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == ["pairs.jsonl"]


def test_unknown_key_contract(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(MINI_CONSTITUTION + "bogus_key: true\n")
    proc, _ = _run("--constitution", bad, "--dry-run", cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "bogus_key" in lines[0] and str(bad) in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]  # no run folder


def test_undefined_variable_contract(tmp_path):
    (tmp_path / "mine.j2").write_text("{{ principle.text }}\n{{ responze_a }}\n")
    bad = tmp_path / "c.yaml"
    bad.write_text(MINI_CONSTITUTION.replace("judge_logprob.j2", "mine.j2"))
    proc, _ = _run("--constitution", bad, "--dry-run", cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "responze_a" in lines[0]
    assert not (tmp_path / "runs").exists()


def test_list_principles():
    proc, _ = _run("--constitution", "safety.yaml", "--list-principles")
    assert proc.returncode == 0
    assert "physical-harm" in proc.stdout and len(proc.stdout.strip().splitlines()) >= 9


def test_every_shipped_template_renders_every_constitution():
    for template in sorted((ROOT / "prompts").glob("judge_*.j2")):
        for constitution in sorted((ROOT / "constitutions").glob("*.yaml")):
            from rlaif.judging.constitution import load
            from rlaif.judging.templates import render

            c = load(str(constitution))
            text = render(template.name, dirs=c.template_dirs, principle=c.principles[0], prompt="p",
                          response_a="RA", response_b="RB")
            assert c.principles[0].text.split()[0] in text and text.index("RA") < text.index("RB")
