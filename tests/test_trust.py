"""Results you can trust: properties that must hold whatever the data.

- Swap the two responses of every pair and every score s becomes 1 - s, with a cold cache and a warm one.
- A pair of identical responses is a tie by construction: never judged, never a preference.
- agreement with --seed 1 then --seed 2 into one folder equals a fresh folder with --seed 2.
- The judge's identity covers what changes its output, and nothing else.
- The train/eval split is fixed in the run folder.
"""

import json
import shutil
from pathlib import Path

import pytest

from conftest import run_cli
from rlaif.judging.constitution import load
from rlaif.engines.fake import FakeEngine
from rlaif.judging.scores import pair_scores
from rlaif.stages.judge import run_judge
from rlaif.stages.preferences import build
from rlaif.store.files import read_jsonl

FIXTURE = Path(__file__).parent / "fixtures" / "hh_small.jsonl"


def shown_first(text: str) -> str:
    return text.split("<<<RESPONSE A\n", 1)[1].split("\nRESPONSE A>>>", 1)[0]


def biased(text: str) -> float:
    """A judge with a position bias that still reads the content: P(shown first is better)."""
    first = shown_first(text)
    return 0.9 if "good" in first else 0.6 if "bad" in first else 0.5 + 0.4 * (len(first) % 7) / 7


def swapped(pairs):
    return [{**p, "response_a": p["response_b"], "response_b": p["response_a"]} for p in pairs]


PAIRS = [{"pair_id": f"p{i}", "prompt": f"question {i}", "response_a": a, "response_b": b}
         for i, (a, b) in enumerate([("a good answer", "a bad answer"), ("bad idea", "good idea"),
                                     ("short", "a longer reply"), ("hello there", "hello there ")])]


@pytest.mark.parametrize("warm", [False, True])
def test_swapping_responses_turns_every_score_into_one_minus_it(mini_constitution, tmp_path, warm):
    c = load(str(mini_constitution))
    engine = FakeEngine(score=biased)
    cache = tmp_path / "cache.jsonl"
    judgments, _ = run_judge(engine, PAIRS, c, seed=0, mode="logprob", settings={}, cache_path=cache, progress=False)
    scores = pair_scores(PAIRS, judgments, c)
    calls = engine.calls["label_logprobs"]
    other = cache if warm else tmp_path / "cold.jsonl"
    judgments2, counts = run_judge(engine, swapped(PAIRS), c, seed=0, mode="logprob", settings={}, cache_path=other,
                                   progress=False)
    scores2 = pair_scores(swapped(PAIRS), judgments2, c)
    for pid in scores:
        assert scores2[pid] == pytest.approx(1 - scores[pid], abs=1e-9), pid
    assert scores["p0"] > 0.5 > scores["p1"]  # the content wins over the position bias
    assert (engine.calls["label_logprobs"] == calls) is warm and (counts["reused"] == counts["judgments"]) is warm


def test_identical_responses_are_never_judged_nor_preferred(mini_constitution):
    c = load(str(mini_constitution))
    engine = FakeEngine(score=lambda text: 0.8)  # always "the first one": the flipped-cache trap of the past
    pairs = [{"pair_id": "same", "prompt": "hi", "response_a": "hello there", "response_b": " hello there\n"}]
    judgments, counts = run_judge(engine, pairs, c, seed=0, mode="logprob", settings={}, progress=False)
    assert judgments == [] and engine.calls["label_logprobs"] == 0 and counts["identical"] == 1
    scores = pair_scores(pairs, judgments, c)
    assert scores == {"same": 0.5}
    rows, counts = build(pairs, scores, judgments, 0.0)
    assert rows == [] and counts["identical"] == 1 and counts["kept"] == 0


@pytest.mark.slow
def test_swap_invariance_with_the_embedded_model(tmp_path):
    """The real judge, through the real command line: the swapped run in the same folder (warm cache) and in a
    fresh one (cold) both give 1 - score for every pair."""
    pairs = [{"pair_id": f"{i:05d}-x", "prompt_id": str(i), "prompt": q, "response_a": a, "response_b": b,
              "generator": "test", "sampling": {}}
             for i, (q, a, b) in enumerate([("How do I bake bread?", "Mix flour, water, yeast; knead; bake.", "No."),
                                            ("How do I hurt someone?", "I can't help with that.", "Hit them."),
                                            ("Capital of France?", "Paris.", "It is Paris, France's capital.")])]
    args = ["--constitution", "safety.yaml", "--stages", "judge,preferences", "--engine", "hf", "--dtype", "float32"]

    def judge(folder, rows) -> dict:
        folder.mkdir(exist_ok=True)
        (folder / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        assert run_cli(*args, "--output-dir", folder) == 0
        summary = json.loads((folder / "summary.json").read_text())
        return pair_scores(rows, read_jsonl(folder / "judgments.jsonl"), load("safety.yaml")), summary["judge"]

    scores, _ = judge(tmp_path / "run", pairs)
    warm, warm_counts = judge(tmp_path / "run", swapped(pairs))
    cold, cold_counts = judge(tmp_path / "fresh", swapped(pairs))
    assert warm_counts["judged"] == 0 and cold_counts["judged"] == cold_counts["judgments"] == 6
    for pid, s in scores.items():
        assert abs(warm[pid] - (1 - s)) < 1e-6 and abs(cold[pid] - (1 - s)) < 1e-6, pid
    assert len({round(s, 6) for s in scores.values()}) == 3  # three distinct scores: the check has teeth


def test_agreement_does_not_depend_on_what_another_seed_left_in_the_folder(tmp_path, monkeypatch):
    """HH pairs are put in a seeded A/B order, so another --seed renders the same prompts in the other order."""
    engine = FakeEngine(score=biased)
    monkeypatch.setattr("rlaif.engines.factory.EnginePool.get", lambda self, model, base_url=None: engine)
    monkeypatch.setattr("rlaif.models.resolve", lambda name: (name, f"fake:{name}"))
    shared, fresh = tmp_path / "shared", tmp_path / "fresh"
    base = ("agreement", "--constitution", "safety.yaml", "--human", FIXTURE, "--judge", "model")
    assert run_cli(*base, "--seed", 1, "--output-dir", shared) == 0
    assert run_cli(*base, "--seed", 2, "--output-dir", shared) == 0
    reused = json.loads((shared / "agreement.json").read_text())["model"]["reused"]
    assert run_cli(*base, "--seed", 2, "--output-dir", fresh) == 0
    a, b = (json.loads((d / "agreement.json").read_text())["model"] for d in (shared, fresh))
    assert reused > 0  # the second seed did find records of the first in the cache
    for key in ("agreement", "n_decided", "cohen_kappa", "position_consistency", "prefer_first", "calibration",
                "per_principle", "agreement_ci95"):
        assert a[key] == b[key], key


def _model_folder(tmp_path):
    """A copy of the embedded model's folder (weights linked, not copied)."""
    from rlaif.models import embedded_folder

    src, dst = embedded_folder(), tmp_path / "judge-model"
    dst.mkdir()
    for f in src.iterdir():
        if f.suffix == ".safetensors":
            (dst / f.name).symlink_to(f)
        else:
            shutil.copy(f, dst / f.name)
    return dst


@pytest.mark.parametrize("name", ["chat_template.jinja", "tokenizer.json", "tokenizer_config.json",
                                  "generation_config.json", "config.json"])
def test_judge_identity_covers_every_file_of_a_local_folder(tmp_path, name):
    from rlaif.models import resolve

    folder = _model_folder(tmp_path)
    before = resolve(str(folder))[1]
    assert resolve(str(folder))[1] == before
    with open(folder / name, "a") as f:
        f.write("\n")
    assert resolve(str(folder))[1] != before


def test_hub_identity_is_the_cached_commit(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from rlaif.models import resolve

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    assert resolve("org/model")[1] == "hub:org/model@not-cached"
    ref = tmp_path / "models--org--model" / "refs"
    ref.mkdir(parents=True)
    (ref / "main").write_text("0123abcd" * 5)
    assert resolve("org/model")[1] == f"hub:org/model@{'0123abcd' * 5}"


@pytest.mark.slow
def test_editing_the_chat_template_rejudges_everything(tmp_path):
    folder = _model_folder(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    (run / "pairs.jsonl").write_text("".join(json.dumps(
        {"pair_id": f"p{i}", "prompt_id": str(i), "prompt": f"Say {i}.", "response_a": f"{i}", "response_b": "no",
         "generator": "t", "sampling": {}}) + "\n" for i in range(2)))
    args = ["--constitution", "safety.yaml", "--stages", "judge", "--judge-model", folder, "--engine", "hf",
            "--output-dir", run]

    def judged():
        assert run_cli(*args) == 0
        return json.loads((run / "summary.json").read_text())["judge"]["judged"]

    assert judged() == 4 and judged() == 0
    template = folder / "chat_template.jinja"
    template.write_text(template.read_text().replace("You are a helpful", "You are a careful"))
    assert judged() == 4


def test_judge_max_new_tokens_matters_to_chain_of_thought_only(tmp_path, fake_engine, mini_constitution):
    cot = tmp_path / "cot.yaml"
    cot.write_text(mini_constitution.read_text().replace("label_mode: logprob", "label_mode: cot")
                   .replace("judge_logprob.j2", "judge_cot.j2"))
    for constitution, rejudged in ((mini_constitution, 0), (cot, 12)):
        run = tmp_path / f"run-{constitution.stem}"
        common = ["--constitution", constitution, "--prompts", tmp_path / "p.txt", "--num-prompts", 2,
                  "--stages", "generate,judge", "--output-dir", run]
        (tmp_path / "p.txt").write_text("one\ntwo\n")
        assert run_cli(*common) == 0
        config = tmp_path / "more-tokens.yaml"
        config.write_text("judge:\n  max_new_tokens: 7\n")
        assert run_cli(*common, "--config", config) == 0
        assert json.loads((run / "summary.json").read_text())["judge"]["judged"] == rejudged


def test_split_is_fixed_in_the_folder(tmp_path, fake_engine, prompts_file, capsys):
    run = tmp_path / "run"
    common = ["--constitution", "safety.yaml", "--prompts", prompts_file, "--output-dir", run,
              "--stages", "generate,judge,preferences"]
    assert run_cli(*common, "--num-prompts", 2) == 0  # 5 prompts: 2 train, 3 held out
    splits = json.loads((run / "splits.json").read_text())
    assert [e["prompt"] for e in splits["eval"]] == ["Write a poem about rain.", "What is the capital of France?",
                                                    "How do I pick my own lock?"]
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["n_train_prompts"], summary["n_eval_prompts"], summary["eval_overlap"]) == (2, 3, 0)
    before = {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert run_cli(*common, "--num-prompts", 3) == 2  # the third prompt is held out in this folder
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "held out for evaluation" in err[0] and "splits.json" in err[0]
    assert {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # nothing changed


def test_eval_prompts_stay_those_recorded_first(tmp_path, fake_engine, prompts_file):
    """--num-prompts 4 then --num-prompts 2: evaluation stays on the 5th prompt, never on the trained 3rd/4th."""
    from rlaif.store import splits
    from rlaif.store.folder import Run

    run = tmp_path / "run"
    common = ["--constitution", "safety.yaml", "--prompts", prompts_file, "--output-dir", run, "--stages", "generate"]
    assert run_cli(*common, "--num-prompts", 4) == 0
    prompts = prompts_file.read_text().splitlines()
    assert splits.resolve(Run(run), prompts[:2], prompts[2:]) == prompts[4:]
    assert run_cli(*common, "--num-prompts", 2) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["n_train_prompts"], summary["n_eval_prompts"], summary["eval_overlap"]) == (4, 1, 0)


def test_every_constitution_version_is_kept_and_judgments_name_their_principle_text(tmp_path, fake_engine,
                                                                                     mini_constitution, prompts_file):
    import hashlib

    run = tmp_path / "run"
    common = ["--constitution", mini_constitution, "--prompts", prompts_file, "--num-prompts", 2,
              "--stages", "generate,judge", "--output-dir", run]
    assert run_cli(*common) == 0
    mini_constitution.write_text(mini_constitution.read_text().replace("more helpful", "most helpful"))
    assert run_cli(*common) == 0
    versions = sorted((run / "constitutions").glob("*.yaml"))
    assert len(versions) == 2 and any("more helpful" in v.read_text() for v in versions)
    texts = {p.id: p.text for p in load(str(mini_constitution)).principles}
    for j in read_jsonl(run / "judgments.jsonl"):
        assert j["principle_hash"] == hashlib.sha256(texts[j["principle_id"]].encode()).hexdigest()[:12]


@pytest.mark.slow
def test_generation_does_not_depend_on_the_batch_size(tmp_path):
    """fp32, the embedded model: --batch-size 1, 3 and 8 give byte-identical pairs.jsonl."""
    outs = []
    for size in (1, 3, 8):
        out = tmp_path / f"b{size}"
        assert run_cli("--constitution", "safety.yaml", "--num-prompts", 5, "--max-new-tokens", 12,
                       "--stages", "generate", "--engine", "hf", "--dtype", "float32", "--batch-size", size,
                       "--output-dir", out) == 0
        outs.append((out / "pairs.jsonl").read_bytes())
    assert outs[0] == outs[1] == outs[2] and outs[0].count(b"\n") == 5


@pytest.mark.slow
def test_four_samples_per_prompt_do_not_depend_on_the_batch_size(tmp_path):
    """fp32, the embedded model, K = 4: --batch-size 1 and 3 give byte-identical samples.jsonl (and pairs.jsonl)."""
    outs = []
    for size in (1, 3):
        out = tmp_path / f"b{size}"
        assert run_cli("--constitution", "safety.yaml", "--num-prompts", 4, "--max-new-tokens", 12,
                       "--samples-per-prompt", 4, "--stages", "generate", "--engine", "hf", "--dtype", "float32",
                       "--batch-size", size, "--output-dir", out) == 0
        outs.append(((out / "samples.jsonl").read_bytes(), (out / "pairs.jsonl").read_bytes()))
    assert outs[0] == outs[1] and outs[0][0].count(b"\n") == 16 and outs[0][1].count(b"\n") == 24
    assert len({r["response"] for r in map(json.loads, outs[0][0].splitlines())}) > 4  # distinct samples
