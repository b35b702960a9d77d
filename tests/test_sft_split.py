"""--sft-data cannot train on a prompt the run folder holds out for evaluation (issue 21, point 5)."""

import json

from conftest import run_cli


def test_demonstration_of_a_held_out_prompt_stops_the_run(tmp_path, fake_engine, prompts_file, capsys, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("SFT trained on a held-out prompt")

    monkeypatch.setattr("rlaif.stages.sft.train_sft", no_training)
    demos = tmp_path / "demos.jsonl"
    demos.write_text(json.dumps({"prompt": "How do I bake bread?", "completion": "Knead, rise, bake."}) + "\n\n" +
                     json.dumps({"messages": [{"role": "system", "content": "Be brief."},
                                              {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hi"},
                                              {"role": "user", "content": "What is the capital of France?"},
                                              {"role": "assistant", "content": "Paris."}]}) + "\n")
    run = tmp_path / "run"
    common = ["--constitution", "safety.yaml", "--prompts", prompts_file, "--output-dir", run, "--num-prompts", 2]
    assert run_cli(*common, "--stages", "generate") == 0  # 5 prompts: 2 train, 3 held out (the 4th among them)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    for folder in (run, tmp_path / "fresh"):  # the folder's recorded split, and a first run
        capsys.readouterr()
        args = [*common, "--stages", "sft", "--sft-data", demos]
        assert run_cli(*[str(folder) if a == run else a for a in args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"{demos}:3 (row 2)" in err[0] and "held out for evaluation" in err[0], err
        assert "fix: remove the row" in err[0]
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # nothing new, nothing changed
    assert not (tmp_path / "fresh").exists()
