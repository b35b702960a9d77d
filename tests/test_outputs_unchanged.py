"""The files of a run are byte-identical to the format they had before the pipeline streamed (issue 17).

A small run through the fake engine (generate, judge, preferences) must produce exactly these bytes. The
hashes were taken from main at c3247fa, before the judgment cache got an index and the stages streamed.
If a change is *meant* to alter a file, update its hash here and say why in the commit message.
"""

import hashlib

from conftest import run_cli

GOLDEN = {
    "pairs.jsonl": "64dcab6858dd8f60e8902616a4d8b65d7a3b2f500fb40a1739f8871518e0c883",
    "judgments.jsonl": "5f8599f0afdf10ba56eba0aec8c2755729ab2462d404ff90a29689067c98a1e3",
    "preferences.jsonl": "7c70dbb79e792575fcec4406d409f864667d0ec587668410f59bebb9a7a34434",
    "cache/judgments.jsonl": "5f8599f0afdf10ba56eba0aec8c2755729ab2462d404ff90a29689067c98a1e3",
    "preferences/data-00000-of-00001.arrow": "1d96cf539075ced07e2ece60c12a9060e5731b6e15ae03e8c2c40fdf34082566",
    "preferences/dataset_info.json": "9fe61aa791e3a5a9a11e7e13e0b138c795651fd2aa4b9d21ae101595622938e1",
    "preferences/state.json": "11ccacbecf24e071b8715ca2c39eb908c8b3d69e87a844fa43425c4f4ed40b14",
}


def _digests(root) -> dict:
    return {name: hashlib.sha256((root / name).read_bytes()).hexdigest() for name in GOLDEN}


def _run(out, constitution, prompts, *extra):
    return run_cli("--constitution", constitution, "--prompts", prompts, "--output-dir", out, "--seed", 3,
                   "--stages", "generate,judge,preferences", "--batch-size", 2, *extra)


def test_run_files_match_the_golden_bytes(tmp_path, mini_constitution, prompts_file, fake_engine):
    out = tmp_path / "run"
    assert _run(out, mini_constitution, prompts_file) == 0
    assert _digests(out) == GOLDEN


def test_resumed_and_rebatched_runs_write_the_same_bytes(tmp_path, mini_constitution, prompts_file, fake_engine):
    """Judging in other batch sizes, and again over a full cache, changes no byte of any file."""
    one, other = tmp_path / "one", tmp_path / "other"
    config = tmp_path / "judge-batch.yaml"
    config.write_text("judge:\n  batch_size: 3\n")
    assert _run(one, mini_constitution, prompts_file) == 0
    assert _run(other, mini_constitution, prompts_file, "--config", config) == 0
    assert _digests(one) == _digests(other)
    before = _digests(one)
    calls = fake_engine.calls["label_logprobs"]
    assert _run(one, mini_constitution, prompts_file) == 0  # resume over a full cache: nothing re-judged
    assert fake_engine.calls["label_logprobs"] == calls
    assert _digests(one) == before
