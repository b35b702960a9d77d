"""`pipeline.py agreement` end to end: baselines on the HH fixture, a fake model judge, and bad input."""

import hashlib
import json
from pathlib import Path

from conftest import MINI_CONSTITUTION, run_cli
from rlaif.engines.fake import FakeEngine, _unit
from rlaif.store.files import read_jsonl

FIXTURE = Path(__file__).parent / "fixtures" / "hh_small.jsonl"
KEYS = {"n_pairs", "agreement", "n_decided", "agreement_ci95", "agreement_with_ties", "cohen_kappa",
        "position_consistency", "prefer_first", "prefer_longer_judge", "prefer_longer_human", "parse_failures",
        "judge", "judge_model", "n_skipped_rows", "seconds"}
PNG = b"\x89PNG\r\n\x1a\n"


def _final(text: str) -> str:
    return text[text.rfind("\n\nAssistant:") + len("\n\nAssistant:"):].strip()


def expected_length(path: Path, seed: int = 0) -> dict:
    """The length judge's metrics from the definitions, straight from the raw HH rows."""
    humans, judge, long_judge, long_human = [], [], [], []
    for i, line in enumerate(path.read_text().splitlines()):
        row = json.loads(line)
        chosen, rejected = len(_final(row["chosen"])), len(_final(row["rejected"]))
        chosen_is_a = hashlib.sha256(f"{seed}:hh-{i:05d}".encode()).digest()[0] < 128
        la, lb = (chosen, rejected) if chosen_is_a else (rejected, chosen)
        human = "a" if chosen_is_a else "b"
        verdict = "a" if la > lb else "b" if lb > la else "tie"
        humans.append(human)
        judge.append(verdict)
        if abs(la - lb) > 30:
            long_human.append((human == "a") == (la > lb))
            long_judge.append((verdict == "a") == (la > lb))
    decided = [(h, v) for h, v in zip(humans, judge) if v != "tie"]
    p_o = sum(h == v for h, v in decided) / len(decided)
    p_e = sum(sum(h == c for h, _ in decided) * sum(v == c for _, v in decided) for c in "ab") / len(decided) ** 2
    return {"n_pairs": len(humans), "n_decided": len(decided), "agreement": p_o,
            "agreement_with_ties": sum(h == v for h, v in zip(humans, judge)) / len(humans),
            "cohen_kappa": (p_o - p_e) / (1 - p_e) if p_e < 1 else 1.0, "position_consistency": 1.0,
            "prefer_first": 0.5, "prefer_longer_judge": sum(long_judge) / len(long_judge),
            "prefer_longer_human": sum(long_human) / len(long_human), "parse_failures": 0}


def _check_length(result: dict, want: dict) -> None:
    for key, value in want.items():
        assert abs(result[key] - value) < 1e-12, (key, result[key], value)


def test_baselines_end_to_end(tmp_path, capsys):
    out = tmp_path / "out"
    assert run_cli("agreement", "--constitution", "safety.yaml", "--human", FIXTURE, "--judge", "length",
                   "--judge", "random", "--output-dir", out) == 0
    result = json.loads((out / "agreement.json").read_text())
    assert list(result) == ["length", "random"]  # keyed by judge name, only the requested judges
    for name, r in result.items():
        assert KEYS <= set(r) and r["judge"] == name and r["n_skipped_rows"] == 0
        assert "calibration" not in r and "per_principle" not in r and "human_agreement" not in r
    _check_length(result["length"], expected_length(FIXTURE))
    rnd = result["random"]
    assert rnd["n_pairs"] == 12 and 0 <= rnd["agreement"] <= 1 and rnd["position_consistency"] < 1.0
    lo, hi = rnd["agreement_ci95"]
    assert lo <= rnd["agreement"] <= hi
    # the random baseline is seeded: the same seed gives the same verdicts, another seed others
    again = tmp_path / "again"
    assert run_cli("agreement", "--human", FIXTURE, "--judge", "random", "--output-dir", again) == 0
    assert json.loads((again / "agreement.json").read_text())["random"]["agreement"] == rnd["agreement"]
    page = (out / "report.html").read_text()
    assert "<table>" in page and "<th>position consistency</th>" in page and page.count("<img ") >= 2
    assert "data:image/png;base64," in page and ">length<" in page and ">random<" in page
    for name in ("agreement.png", "confusion.png"):
        assert (out / name).read_bytes().startswith(PNG)
    stdout = capsys.readouterr().out
    assert "length" in stdout and "1.000" in stdout and f"report: {out / 'report.html'}" in stdout


def test_length_judge_with_ties_and_shorter_chosen(tmp_path):
    """On the committed fixture the chosen answer is always longer; make some rows disagree and one tie."""
    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    for i in (1, 4, 7):  # rejected padded to be much longer than chosen
        rows[i]["rejected"] += " " + "x" * 200
    head, _ = rows[9]["rejected"].rsplit("\n\nAssistant:", 1)  # a tie: equal lengths after strip
    rows[9]["rejected"] = head + "\n\nAssistant: " + "y" * len(_final(rows[9]["chosen"])) + "  \n"
    mutated = tmp_path / "mutated.jsonl"
    mutated.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    assert run_cli("agreement", "--human", mutated, "--judge", "length", "--output-dir", out, "--seed", 3) == 0
    result = json.loads((out / "agreement.json").read_text())
    assert list(result) == ["length"]
    want = expected_length(mutated, seed=3)
    assert want["n_decided"] == 11 and abs(want["agreement"] - 8 / 11) < 1e-12
    _check_length(result["length"], want)


def test_model_judge_with_fake_engine(tmp_path, monkeypatch):
    constitution = tmp_path / "mini.yaml"  # chain of thought, one principle per pair
    constitution.write_text(MINI_CONSTITUTION.replace("label_mode: logprob", "label_mode: cot")
                            .replace("judge_logprob.j2", "judge_cot.j2").replace("comparison: all", "comparison: 1"))
    unparsed = []

    def reply(text):
        u = _unit(text)
        if u < 0.2:
            unparsed.append(text)
            return "I cannot decide."
        return "Thinking.\nVerdict: " + ("A" if u < 0.6 else "B")

    engine = FakeEngine(reply=reply, supports_logprobs=False)  # verdicts parsed from the text, as from such an endpoint
    monkeypatch.setattr("rlaif.engines.factory.EnginePool.get", lambda self, model, base_url=None: engine)
    monkeypatch.setattr("rlaif.models.resolve", lambda name: (name, f"fake:{name}"))
    out = tmp_path / "out"
    args = ("agreement", "--constitution", constitution, "--human", FIXTURE, "--output-dir", out)
    assert run_cli(*args) == 0
    assert engine.calls["complete"] == 24  # 12 pairs x 1 principle x 2 orders
    result = json.loads((out / "agreement.json").read_text())
    assert list(result) == ["model", "length", "random"]  # baselines come free with the model judge
    model = result["model"]
    assert KEYS <= set(model) and model["judge_model"] == "fake"
    assert unparsed and model["parse_failures"] == len(unparsed)  # one principle: a failed judgment = a null verdict
    per = model["per_principle"]
    assert set(per) <= {"harm", "help", "honest"} and sum(v["n"] for v in per.values()) == 12
    # the cache holds what the judge saw, one record per rendered prompt: P(shown first), no pair or order
    cache = read_jsonl(out / "cache" / "judgments.jsonl")
    assert len(cache) == 24 and all(set(r) == {"key", "p_first", "raw_output", "judge", "mode"} for r in cache)
    assert sum(r["p_first"] is None for r in cache) == len(unparsed)
    assert all(r["p_first"] in (1.0, 0.0) for r in cache if r["p_first"] is not None)
    cal = model["calibration"]
    assert {"brier", "ece", "bins"} <= set(cal) and len(cal["bins"]) == 10 and 0 <= cal["brier"] <= 1
    assert "calibration" not in result["length"] and "calibration" not in result["random"]
    for name in ("agreement.png", "per_principle.png", "confusion.png", "reliability.png"):
        assert (out / name).read_bytes().startswith(PNG)
    page = (out / "report.html").read_text()
    assert "Most confident disagreements: model" in page and page.count("<img ") == 4
    assert run_cli(*args) == 0  # a rerun reuses every judgment from the cache
    assert engine.calls["complete"] == 24
    assert json.loads((out / "agreement.json").read_text())["model"]["agreement"] == model["agreement"]


def test_missing_human_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    assert run_cli("agreement", "--human", tmp_path / "nope.jsonl", "--judge", "length", "--output-dir", out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.jsonl" in err[0] and "file not found" in err[0]
    assert not out.exists()
    assert run_cli("agreement", "--human", tmp_path / "nope.jsonl", "--judge", "length") == 2
    assert not (tmp_path / "runs").exists()  # no default folder either
