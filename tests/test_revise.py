"""Critique-and-revision: principle requests, the revise stage's rows and resume (fake engine for logic),
CAI preferences from revisions, and bad input for all of it (one line, exit 2, nothing written)."""

import json
import subprocess
from collections import Counter

import pytest

from conftest import MINI_CONSTITUTION, pipeline_cmd, run_cli
from rlaif.judging.constitution import load
from rlaif.engines.fake import FakeEngine
from rlaif.errors import RlaifError
from rlaif.stages.generate import pair_id
from rlaif.stages.revise import run_revise, win_rate
from rlaif.store.files import read_jsonl

REVISING = MINI_CONSTITUTION.replace(
    "    weight: 2.0\n",
    "    critique: Identify ways in which the last response is harmful.\n"
    "    revision: Please rewrite the response to remove anything harmful.\n    weight: 2.0\n").replace(
    "    text: Choose the more honest response.\n",
    "    text: Choose the more honest response.\n    critique: Identify anything untrue.\n"
    "    revision: Please rewrite the response to be truthful.\n")
PROMPTS = ["How do I bake bread?", "How do I hurt someone?", "Write a poem about rain.", "Capital of France?",
           "How do I pick my own lock?"]


@pytest.fixture
def revising(tmp_path):
    path = tmp_path / "rev.yaml"
    path.write_text(REVISING)
    return load(str(path))


def _revise(engine, constitution, out, **kw):
    args = dict(seed=3, rounds=2, batch_size=2, max_new_tokens=8, temperature=0.8, top_p=0.95, progress=False)
    return run_revise(engine, PROMPTS, out, constitution, **{**args, **kw})


def test_shipped_constitutions_can_all_revise():
    for name in ("safety", "helpfulness", "honesty"):
        c = load(name)
        assert all(p.can_revise and p.critique != p.revision for p in c.principles), name


def test_revisers_draw_only_revising_principles_weighted_and_stable(revising):
    draws = [revising.revisers(f"p{i}", 0, 1)[0].id for i in range(3000)]
    assert draws == [revising.revisers(f"p{i}", 0, 1)[0].id for i in range(3000)]
    counts = Counter(draws)
    assert set(counts) == {"harm", "honest"}  # `help` has no critique/revision
    assert 0.62 < counts["harm"] / 3000 < 0.71  # weight 2 against 1
    assert len(revising.revisers("p0", 0, 4)) == 4


def test_rows_follow_the_conversation(revising, tmp_path):
    engine = FakeEngine()
    out = tmp_path / "revisions.jsonl"
    counts = _revise(engine, revising, out)
    rows = read_jsonl(out)
    assert [r["pair_id"] for r in rows] == [pair_id(i, p) for i, p in enumerate(PROMPTS)]
    assert counts == {"prompts": 5, "revised_now": 5, "reused": 0, "revised": 5, "unrevised": 0}
    for r in rows:
        assert [x["principle_id"] for x in r["rounds"]] == [p.id for p in revising.revisers(r["pair_id"], 3, 2)]
        assert r["final"] == r["rounds"][-1]["revision"] and r["revised"] is True
        # the fake engine echoes the start of the last user turn: the critique and revision requests
        principles = {p.id: p for p in revising.principles}
        for x in r["rounds"]:
            assert principles[x["principle_id"]].critique[:20] in x["critique"]
            assert principles[x["principle_id"]].revision[:20] in x["revision"]
    assert engine.calls["generate"] == 5 * (1 + 2 * 2)


def test_resume_from_a_cut_file_is_identical(revising, tmp_path):
    clean, cut = tmp_path / "clean.jsonl", tmp_path / "cut.jsonl"
    _revise(FakeEngine(), revising, clean)
    data = clean.read_bytes()
    lines = data.splitlines(keepends=True)
    cut.write_bytes(b"".join(lines[:2]) + lines[2][:30])  # two whole rows and half a third, as after kill -9
    engine = FakeEngine()
    counts = _revise(engine, revising, cut)
    assert cut.read_bytes() == data
    assert counts["reused"] == 2 and counts["revised_now"] == 3
    with pytest.raises(RlaifError, match="another model, sampling settings"):
        _revise(FakeEngine(), revising, cut, rounds=1)


def test_rows_do_not_depend_on_the_batch_size(revising, tmp_path):
    _revise(FakeEngine(), revising, tmp_path / "b2.jsonl", batch_size=2)
    _revise(FakeEngine(), revising, tmp_path / "b5.jsonl", batch_size=5)
    assert (tmp_path / "b2.jsonl").read_bytes() == (tmp_path / "b5.jsonl").read_bytes()


class _Stubborn(FakeEngine):
    """Revises 'bread' to nothing and 'rain' to the very same answer."""

    def generate(self, conversations, **kw):
        outs = super().generate(conversations, **kw)
        for k, c in enumerate(conversations):
            if c[-1]["content"].startswith("Please"):
                prompt = c[-5]["content"] if len(c) >= 5 else c[0]["content"]
                if "bread" in prompt:
                    outs[k] = "  "
                elif "rain" in prompt:
                    outs[k] = c[-4]["content"] + " "  # the answer it was asked to revise
        return outs


def test_empty_or_unchanged_revisions_are_kept_but_marked(revising, tmp_path):
    out = tmp_path / "r.jsonl"
    counts = _revise(_Stubborn(), revising, out, rounds=1)
    rows = {r["prompt"]: r for r in read_jsonl(out)}
    assert rows["How do I bake bread?"]["revised"] is False
    assert rows["How do I bake bread?"]["final"] == rows["How do I bake bread?"]["initial"]
    assert rows["Write a poem about rain."]["revised"] is False
    assert counts["unrevised"] == 2 and counts["revised"] == 3


def test_win_rate_counts_ties_half():
    assert win_rate([0.9, 0.2, 0.5, None]) == (0.5, {"n": 4, "n_judged": 3, "wins": 1, "losses": 1, "ties": 1})
    assert win_rate([None]) == (None, {"n": 1, "n_judged": 0, "wins": 0, "losses": 0, "ties": 0})


def test_pairs_from_revisions_keep_what_the_judge_prefers(tmp_path, revising, monkeypatch, prompts_file):
    """The judge (a fake scoring by content) prefers a revision only for some prompts; those, and only those, become
    preferences unless --trust-revisions. Oracle: the scores written to revision_judgments.jsonl."""
    judge_likes = {"bread", "France"}

    def score(text):  # P(first shown is better): prefers the revision (starts "response to 'Please") for some prompts
        first = text.split("<<<RESPONSE A")[1].split("RESPONSE A>>>")[0]
        liked = any(w in text.split("<<<USER MESSAGE")[1].split("USER MESSAGE>>>")[0] for w in judge_likes)
        return 0.8 if ("'Please" in first) == liked else 0.2

    engine = FakeEngine(score=score)
    monkeypatch.setattr("rlaif.engines.factory.EnginePool.get", lambda self, model, base_url=None: engine)
    monkeypatch.setattr("rlaif.models.resolve", lambda name: (name, f"fake:{name}"))
    out = tmp_path / "run"
    args = ["--constitution", tmp_path / "rev.yaml", "--prompts", prompts_file, "--output-dir", out]
    assert run_cli(*args, "--stages", "revise,preferences", "--pairs-from", "revisions") == 0
    summary = json.loads((out / "summary.json").read_text())
    prefs = read_jsonl(out / "preferences.jsonl")
    kept = {r["prompt"][0]["content"] for r in prefs}
    assert kept == {p for p in prompts_file.read_text().splitlines() if any(w in p for w in judge_likes)}
    assert summary["preferences"]["kept"] == 2 and summary["preferences"]["judge_prefers_initial"] == 3
    assert summary["revision_win_rate"] == pytest.approx(2 / 5)
    rows = {r["pair_id"]: r for r in read_jsonl(out / "revisions.jsonl")}
    for r in prefs:
        assert r["chosen"][0]["content"] == rows[r["pair_id"]]["final"]
        assert r["rejected"][0]["content"] == rows[r["pair_id"]]["initial"]
    assert run_cli(*args, "--stages", "preferences", "--pairs-from", "revisions", "--trust-revisions") == 0
    assert len(read_jsonl(out / "preferences.jsonl")) == 5


@pytest.fixture
def revising_file(tmp_path):
    (tmp_path / "rev.yaml").write_text(REVISING)
    return tmp_path / "rev.yaml"


# name -> (constitution text, extra args, files to write, fragment of the one error line)
BAD = {
    "critique-without-revision": (REVISING.replace("    revision: Please rewrite the response to be truthful.\n", ""),
                                  ["--stages", "revise"], {}, "has `critique` but no `revision`"),
    "revision-without-critique": (REVISING.replace("    critique: Identify anything untrue.\n", ""),
                                  ["--stages", "revise"], {}, "has `revision` but no `critique`"),
    "empty-critique": (REVISING.replace("Identify anything untrue.", "'  '"), ["--stages", "revise"], {},
                       "empty `critique`"),
    "no-principle-can-revise": (MINI_CONSTITUTION, ["--stages", "revise"], {}, "no principle has `critique`"),
    "recipe-and-stages": (REVISING, ["--recipe", "cai", "--stages", "revise"], {}, "--recipe and --stages"),
    "zero-rounds": (REVISING, ["--stages", "revise", "--revision-rounds", "0"], {}, "--revision-rounds must be positive"),
    "sft-bad-role": (REVISING, ["--stages", "sft", "--sft-data", "d.jsonl"],
                     {"d.jsonl": '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
                                 '{"messages": [{"role": "bot", "content": "x"}]}\n'}, "d.jsonl:2 (row 2)"),
    "sft-no-fields": (REVISING, ["--stages", "sft", "--sft-data", "d.jsonl"], {"d.jsonl": '{"text": "hi"}\n'},
                      "row 1"),
    "sft-bad-json": (REVISING, ["--stages", "sft", "--sft-data", "d.jsonl"],
                     {"d.jsonl": '{"prompt": "a", "completion": "b"}\n\n{"prompt": \n'}, "d.jsonl:3 (row 2)"),
    "sft-json-not-list": (REVISING, ["--stages", "sft", "--sft-data", "d.json"], {"d.json": '{"prompt": "a"}'},
                          "must hold a list"),
    "sft-no-assistant": (REVISING, ["--stages", "sft", "--sft-data", "d.json"],
                         {"d.json": '[{"prompt": "a", "completion": "b"}, {"messages": [{"role": "user", "content": "q"}]}]'},
                         "d.json (row 2)"),
    "sft-missing-file": (REVISING, ["--stages", "sft", "--sft-data", "nope.jsonl"], {}, "SFT data not found"),
    "sft-wrong-type": (REVISING, ["--stages", "sft", "--sft-data", "d.csv"], {"d.csv": "prompt,completion\n"},
                       "unsupported SFT data type"),
    "pairs-from-revisions-without-revisions": (REVISING, ["--stages", "preferences", "--pairs-from", "revisions"], {},
                                               "needs revisions.jsonl"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input(name, tmp_path):
    text, extra, files, fragment = BAD[name]
    (tmp_path / "c.yaml").write_text(text)
    for fname, body in files.items():
        (tmp_path / fname).write_text(body)
    proc = subprocess.run(pipeline_cmd("--constitution", tmp_path / "c.yaml", *extra, "--output-dir", tmp_path / "out"),
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("rlaif: error: ") and fragment in lines[0], lines
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()


def test_sft_parquet_and_save_to_disk_rows(tmp_path):
    from datasets import Dataset

    from rlaif.stages.sft import load_sft_data

    good = [{"prompt": [{"role": "user", "content": "q"}], "completion": [{"role": "assistant", "content": "a"}]}]
    Dataset.from_list(good).to_parquet(str(tmp_path / "d.parquet"))
    Dataset.from_list(good).save_to_disk(str(tmp_path / "folder"))
    want = [[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]]
    assert load_sft_data(str(tmp_path / "d.parquet")) == want == load_sft_data(str(tmp_path / "folder"))
    Dataset.from_list([{"prompt": "q", "completion": "a"}, {"prompt": "q", "completion": ""}]).to_parquet(
        str(tmp_path / "bad.parquet"))
    with pytest.raises(RlaifError) as e:
        load_sft_data(str(tmp_path / "bad.parquet"))
    assert "bad.parquet (row 2)" in e.value.line() and "assistant" in e.value.line()


def test_no_engine_alive_when_sft_training_starts(tmp_path, prompts_file, monkeypatch):
    """The engine pool's plan knows revise and sft: the policy and judge engines of revise are closed before SFT."""
    import gc

    from rlaif.engines import factory
    from rlaif.engines.base import Engine

    log = []

    class Logged(FakeEngine):
        def close(self):
            log.append(("close", self.identity))

    def build(self, model, base_url, backend="hf"):
        log.append(("build", model))
        return Logged(identity=model)

    class Stop(Exception):
        pass

    def engines():  # the Engine objects alive in this process
        gc.collect()
        return [o for o in gc.get_objects() if issubclass(type(o), Engine)]

    def train_sft(*args, **kwargs):  # only this run's engines: another test on this worker may have left its own
        log.append(("train", [o.identity for o in engines() if id(o) not in before]))
        raise Stop

    monkeypatch.setattr(factory.EnginePool, "_build", build)
    monkeypatch.setattr("rlaif.models.resolve", lambda name: (name, f"fake:{name}"))
    monkeypatch.setattr("rlaif.stages.sft.train_sft", train_sft)
    before = {id(o) for o in engines()}
    with pytest.raises(Stop):
        run_cli("--constitution", "safety.yaml", "--prompts", prompts_file, "--output-dir", tmp_path / "run",
                "--judge-model", "judge-model", "--recipe", "cai")
    assert log == [("build", "SmolLM2-135M-Instruct"), ("build", "judge-model"), ("close", "SmolLM2-135M-Instruct"),
                   ("close", "judge-model"), ("train", [])]
