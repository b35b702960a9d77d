"""--samples-per-prompt K > 2: samples.jsonl, --pairing, the Bradley-Terry ranking and --keep, with the counting
fake engine (the embedded model's runs: test_trust.py::test_four_samples_per_prompt_do_not_depend_on_the_batch_size
and test_resume.py::test_kill_during_generate_with_four_samples_per_prompt_then_resume)."""

import json
from itertools import combinations

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import expit, log_expit

from conftest import run_cli
from rlaif.judging.pairing import pairs_of
from rlaif.judging.ranking import RIDGE, best_worst, bradley_terry, win_counts
from rlaif.store.files import read_jsonl


def _run(out, constitution, prompts, *extra):
    return run_cli("--constitution", constitution, "--prompts", prompts, "--output-dir", out,
                   "--stages", "generate,judge,preferences", "--batch-size", 2, *extra)


# ---------------------------------------------------------------- ranking, against scipy

def _scipy_bt(k, judged):
    """The same objective, minimised by scipy (an independent optimiser)."""
    def loss(t):
        nll = -sum(s * log_expit(t[i] - t[j]) + (1 - s) * log_expit(t[j] - t[i]) for i, j, s in judged)
        return nll + RIDGE / 2 * float(t @ t)
    return minimize(loss, np.zeros(k), method="BFGS", options={"gtol": 1e-10}).x


@pytest.mark.parametrize("seed", range(5))
def test_bradley_terry_matches_scipy_and_recovers_the_order(seed):
    rng = np.random.default_rng(seed)
    k = 5
    true = rng.normal(size=k) * 2
    judged = [(i, j, float(expit(true[i] - true[j]))) for i, j in combinations(range(k), 2)]
    ours = bradley_terry(k, judged)
    assert np.allclose(ours, _scipy_bt(k, judged), atol=1e-5)
    assert list(np.argsort(ours)) == list(np.argsort(true))  # exact scores: the true order


def test_bradley_terry_is_unchanged_by_swapping_a_pair_or_relabelling_samples():
    judged = [(0, 1, 0.7), (0, 2, 0.4), (1, 3, 0.9), (2, 3, 0.55), (0, 3, 0.8)]
    base = bradley_terry(4, judged)
    swapped = bradley_terry(4, [(j, i, 1 - s) for i, j, s in judged])
    assert np.allclose(base, swapped, atol=1e-9)
    perm = [2, 0, 3, 1]
    relabelled = bradley_terry(4, [(perm[i], perm[j], s) for i, j, s in judged])
    assert np.allclose([relabelled[perm[x]] for x in range(4)], base, atol=1e-9)


def test_outright_wins_stay_finite_and_rank_first():
    t = bradley_terry(3, [(0, 1, 1.0), (0, 2, 1.0), (1, 2, 1.0)])
    assert all(np.isfinite(t)) and t[0] > t[1] > t[2]


def test_few_pairs_use_win_counts_and_the_direct_score():
    # adjacent pairing of 4 samples: 3 pairs (K-1), so win counts rank them
    judged = [(0, 1, 0.2), (1, 2, 0.7), (2, 3, 0.6)]
    assert win_counts(4, judged) == [0.0, 2.0, 1.0, 0.0]
    r = best_worst(4, judged)
    assert r["method"] == "win-counts" and r["best"] == 1
    assert r["worst"] == 0  # 0 and 3 have no wins; 0 lost by more (its strength is lower)
    assert r["p_best"] == pytest.approx(0.8)  # best and worst were judged against each other: that pair's score
    r = best_worst(4, judged + [(0, 3, 0.5)])
    assert r["method"] == "bradley-terry"


def test_a_prompt_whose_samples_all_tie_has_no_best():
    assert best_worst(3, [(0, 1, 0.5), (1, 2, 0.5), (0, 2, 0.5)]) is None
    assert best_worst(3, []) is None


# ---------------------------------------------------------------- pairing

def test_pairings():
    assert pairs_of(4, "all", 0, "k") == list(combinations(range(4), 2))
    assert pairs_of(4, "adjacent", 0, "k") == [(0, 1), (1, 2), (2, 3)]
    drawn = pairs_of(5, "random-3", 0, "k")
    assert len(set(drawn)) == 3 and drawn == sorted(drawn) and set(drawn) <= set(combinations(range(5), 2))
    assert drawn == pairs_of(5, "random-3", 0, "k")  # seeded: the same pairs every time
    assert pairs_of(6, "random-15", 0, "k") == list(combinations(range(6), 2))
    assert len({tuple(pairs_of(6, "random-2", 0, f"k{n}")) for n in range(20)}) > 1  # differs between prompts


# ---------------------------------------------------------------- the stages with the fake engine

def test_k4_all_pairs_writes_samples_pairs_and_one_preference_per_prompt(tmp_path, mini_constitution, prompts_file,
                                                                        fake_engine):
    out = tmp_path / "run"
    assert _run(out, mini_constitution, prompts_file, "--samples-per-prompt", 4) == 0
    samples = read_jsonl(out / "samples.jsonl")
    assert [(s["sample_id"].rsplit("-", 1)[0], s["sample"]) for s in samples][:4] == [(samples[0]["sample_id"][:-2], i)
                                                                                      for i in range(4)]
    assert len(samples) == 20 and len({s["response"] for s in samples}) == 20
    pairs = read_jsonl(out / "pairs.jsonl")
    assert len(pairs) == 5 * 6
    by_sample = {s["sample_id"]: s for s in samples}
    for p in pairs:
        key = p["pair_id"].rsplit("-", 2)[0]
        a, b = by_sample[f"{key}-{p['sample_a']}"], by_sample[f"{key}-{p['sample_b']}"]
        assert (p["response_a"], p["response_b"]) == (a["response"], b["response"])
        assert (p["sampling"]["seed_a"], p["sampling"]["seed_b"]) == (a["sampling"]["seed_sample"],
                                                                      b["sampling"]["seed_sample"])
    prefs = read_jsonl(out / "preferences.jsonl")
    assert len(prefs) <= 5 and len({r["prompt"][0]["content"] for r in prefs}) == len(prefs)
    judgments = read_jsonl(out / "judgments.jsonl")
    scores = {}
    for j in judgments:
        scores.setdefault(j["pair_id"], []).append(j)
    for row in prefs:  # chosen is the sample with the largest Bradley-Terry strength, rejected the smallest
        key = row["pair_id"].rsplit("-", 2)[0]
        judged = []
        for p in pairs:
            if p["pair_id"].startswith(key + "-"):
                weights = {"harm": 2.0, "help": 1.0, "honest": 1.0}
                rs = scores[p["pair_id"]]
                num = sum(weights[r["principle_id"]] * r["p_a"] for r in rs) / 2
                judged.append((p["sample_a"], p["sample_b"], num / 4.0))
        t = _scipy_bt(4, judged)
        texts = {by_sample[f"{key}-{i}"]["response"]: i for i in range(4)}
        assert texts[row["chosen"][0]["content"]] == int(np.argmax(t))
        assert texts[row["rejected"][0]["content"]] == int(np.argmin(t))
        i, j = sorted((int(np.argmax(t)), int(np.argmin(t))))
        direct = next(s for a, b, s in judged if (a, b) == (i, j))
        assert row["score"] == pytest.approx(direct) and row["margin"] == pytest.approx(abs(direct - 0.5))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["generate"]["samples"] == 20 and summary["generate"]["pairs"] == 30
    assert summary["judge_calls_per_preference"] == pytest.approx(len(judgments) / len(prefs), abs=1e-4)
    assert summary["mean_kept_margin"] == pytest.approx(np.mean([r["margin"] for r in prefs]), abs=1e-4)


def test_keep_all_pairs_and_adjacent(tmp_path, mini_constitution, prompts_file, fake_engine):
    out = tmp_path / "run"
    assert _run(out, mini_constitution, prompts_file, "--samples-per-prompt", 4, "--pairing", "adjacent",
                "--keep", "all-pairs") == 0
    pairs = read_jsonl(out / "pairs.jsonl")
    assert len(pairs) == 15 and {(p["sample_a"], p["sample_b"]) for p in pairs} == {(0, 1), (1, 2), (2, 3)}
    prefs = read_jsonl(out / "preferences.jsonl")
    assert {r["pair_id"] for r in prefs} <= {p["pair_id"] for p in pairs} and len(prefs) > 5


def test_k4_extends_k2_samples_zero_and_one_are_the_k2_pair(tmp_path, mini_constitution, prompts_file, fake_engine):
    assert _run(tmp_path / "k2", mini_constitution, prompts_file, "--stages", "generate") == 0
    assert _run(tmp_path / "k4", mini_constitution, prompts_file, "--stages", "generate", "--samples-per-prompt", 4) == 0
    k2 = read_jsonl(tmp_path / "k2" / "pairs.jsonl")
    k4 = {s["sample_id"]: s["response"] for s in read_jsonl(tmp_path / "k4" / "samples.jsonl")}
    assert [(p["response_a"], p["response_b"]) for p in k2] == [(k4[p["pair_id"] + "-0"], k4[p["pair_id"] + "-1"])
                                                                for p in k2]


def test_samples_do_not_depend_on_the_batch_size(tmp_path, mini_constitution, prompts_file, fake_engine):
    for b in (1, 3):
        assert _run(tmp_path / f"b{b}", mini_constitution, prompts_file, "--stages", "generate",
                    "--samples-per-prompt", 4, "--batch-size", b) == 0
    for name in ("samples.jsonl", "pairs.jsonl"):
        assert (tmp_path / "b1" / name).read_bytes() == (tmp_path / "b3" / name).read_bytes()


def test_a_kill_mid_prompt_is_cut_back_and_resumed_to_the_same_bytes(tmp_path, mini_constitution, prompts_file,
                                                                    fake_engine):
    clean = tmp_path / "clean"
    assert _run(clean, mini_constitution, prompts_file, "--stages", "generate", "--samples-per-prompt", 4) == 0
    data = (clean / "samples.jsonl").read_bytes()
    lines = data.splitlines(keepends=True)
    killed = tmp_path / "killed"
    killed.mkdir()
    (killed / "samples.jsonl").write_bytes(b"".join(lines[:6]) + lines[6][:17])  # 1.5 prompts and a torn line
    calls = fake_engine.calls["generate"]
    assert _run(killed, mini_constitution, prompts_file, "--stages", "generate", "--samples-per-prompt", 4) == 0
    assert fake_engine.calls["generate"] - calls == 4 * 4  # the cut prompt again, and the three after it
    for name in ("samples.jsonl", "pairs.jsonl"):
        assert (killed / name).read_bytes() == (clean / name).read_bytes()


def test_k2_writes_no_samples_file_and_keeps_its_columns(tmp_path, mini_constitution, prompts_file, fake_engine):
    out = tmp_path / "run"
    assert _run(out, mini_constitution, prompts_file) == 0
    assert not (out / "samples.jsonl").exists()
    assert list(read_jsonl(out / "pairs.jsonl")[0]) == ["pair_id", "prompt_id", "prompt", "response_a", "response_b",
                                                        "generator", "sampling"]


@pytest.mark.parametrize("args, where", [
    (("--samples-per-prompt", 1), "--samples-per-prompt"),
    (("--pairing", "random-0"), "--pairing"),
    (("--samples-per-prompt", 3, "--pairing", "random-4"), "--pairing"),
    (("--pairing", "best"), "--pairing"),
    (("--keep", "best"), "--keep"),
])
def test_bad_samples_settings_are_one_line_and_exit_2(tmp_path, mini_constitution, prompts_file, fake_engine, capsys,
                                                     args, where):
    out = tmp_path / "run"
    try:
        code = _run(out, mini_constitution, prompts_file, *args)
    except SystemExit as e:  # a choice argparse refuses
        code = e.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and where in err and "fix:" in err
    assert not out.exists()


def test_a_k2_folder_refuses_k4_and_keeps_its_files(tmp_path, mini_constitution, prompts_file, fake_engine, capsys):
    out = tmp_path / "run"
    assert _run(out, mini_constitution, prompts_file) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert _run(out, mini_constitution, prompts_file, "--samples-per-prompt", 4) == 2
    assert "--output-dir" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_the_reward_models_held_out_pairs_are_split_by_prompt():
    """With --keep all-pairs a prompt has several preferences: none of a held-out prompt's pairs may be trained on
    (reward_accuracy would count pairs whose prompt the model saw). One pair per prompt: the row split as before."""
    from datasets import Dataset

    from rlaif.training.trainers import held_out_split

    def rows(prompts):
        return Dataset.from_list([{"prompt": [{"role": "user", "content": q}],
                                   "chosen": [{"role": "assistant", "content": f"good {i}"}],
                                   "rejected": [{"role": "assistant", "content": f"bad {i}"}]}
                                  for i, q in enumerate(prompts)])

    unique = rows([f"q{i}" for i in range(12)])
    train, held = held_out_split(unique, 0.25, seed=3)
    old = unique.train_test_split(test_size=3, seed=3)  # what the reward stage did before: K = 2 is unchanged
    assert train.to_list() == old["train"].to_list() and held.to_list() == old["test"].to_list()

    shared = rows([f"q{i // 6}" for i in range(48)])  # 8 prompts, 6 kept pairs each (K = 4, all pairs)
    for seed in range(5):
        train, held = held_out_split(shared, 0.25, seed=seed)
        seen = {r["prompt"][0]["content"] for r in train}
        out = {r["prompt"][0]["content"] for r in held}
        assert not seen & out and len(out) == 2 and len(held) == 12 and len(train) == 36
        assert sorted(r["chosen"][0]["content"] for r in [*train, *held]) == sorted(
            r["chosen"][0]["content"] for r in shared)  # every pair on exactly one side
    assert held_out_split(shared, 0.0, seed=0)[1] is None
