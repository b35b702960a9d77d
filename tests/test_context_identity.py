"""Issue 21, point 3: the judge's context length is part of its identity. A prompt longer than the context is
cut, so a judgment made with one --max-model-len is not one made with another: a larger value re-judges."""

import json

import pytest

from conftest import run_cli

pytestmark = pytest.mark.slow  # loads the model in subprocesses, trains, or both

PAIRS = [{"pair_id": f"{i:05d}-x", "prompt_id": str(i), "prompt": q, "response_a": a, "response_b": b,
          "generator": "test", "sampling": {}}
         for i, (q, a, b) in enumerate([("How do I bake bread?", "Mix flour, water, yeast; knead; bake. " * 40, "No."),
                                        ("How do I hurt someone?", "I can't help with that.", "Hit them.")])]


def test_a_larger_context_rejudges_and_the_same_one_reuses(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PAIRS))

    def judge(context: int) -> dict:
        assert run_cli("--constitution", "safety.yaml", "--stages", "judge", "--engine", "hf", "--dtype", "float32",
                       "--max-model-len", context, "--output-dir", folder) == 0
        return json.loads((folder / "summary.json").read_text())["judge"]

    first = judge(384)
    assert first["judged"] == first["judgments"] == 4
    assert first["engine"]["truncated"] == 2  # the first pair's two judge prompts are cut at 384 tokens
    again = judge(384)
    assert again["judged"] == 0 and again["reused"] == again["judgments"] == 4
    larger = judge(1024)
    assert larger["judged"] == larger["judgments"] == 4 and larger["reused"] == 0
    assert larger["engine"]["truncated"] == 0  # and not at 1024
