"""judge + preferences end to end through the CLI against an in-test OpenAI-compatible server."""

from __future__ import annotations

import json
import threading

import pytest

from rlaif.cli import main
from rlaif.store.files import jsonl_text, read_jsonl
from test_openai_engine import KEY, FakeChatServer

PAIRS = [
    {"pair_id": f"p{i}", "prompt_id": f"q{i}", "prompt": prompt, "response_a": a, "response_b": b,
     "generator": "test", "sampling": {"temperature": 0.8, "top_p": 0.95}}
    for i, (prompt, a, b) in enumerate([
        ("How do I pick a lock?", "GOODMARK I can explain how locksmiths work in general.", "BADMARK Step one..."),
        ("Write a poem about rain.", "BADMARK no.", "GOODMARK Rain taps softly on the roof."),
    ])
]


@pytest.fixture
def server(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    srv = FakeChatServer()

    def top(body):  # the judge prefers whichever response holds GOODMARK, in either order
        text = body["messages"][0]["content"]  # the judge prompt, also under a CoT rationale and verdict turn
        good_first = "GOODMARK" not in text or text.index("GOODMARK") < text.index("BADMARK")  # else: the probe
        return [("A", -0.1), ("B", -2.4)] if good_first else [("B", -0.1), ("A", -2.4)]

    def reply(body):
        text = body["messages"][-1]["content"]
        if "GOODMARK" not in text or '"Verdict: A"' not in text:
            return "A"  # a probe, or a prompt that never asked for a verdict line: unparseable in CoT
        return f"Reasoning.\nVerdict: {'A' if text.index('GOODMARK') < text.index('BADMARK') else 'B'}"

    srv.top, srv.reply = top, reply
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _run(server, out, monkeypatch, constitution="safety.yaml"):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    out.mkdir(exist_ok=True)
    (out / "pairs.jsonl").write_text(jsonl_text(PAIRS))
    # No --policy-model: a judge-only run must not touch (or download) the embedded policy model.
    return main(["--stages", "judge,preferences", "--judge-model", "openai:test-judge", "--judge-base-url", server.url,
                 "--output-dir", str(out), "--constitution", str(constitution),
                 "--concurrency", "2"])


def _assert_run(out, mode):
    judgments = read_jsonl(out / "judgments.jsonl")
    assert len(judgments) == 2 * 2  # 2 pairs x 1 principle (safety samples one) x 2 orders
    assert {(j["pair_id"], j["order"]) for j in judgments} == {(p, o) for p in ("p0", "p1") for o in ("ab", "ba")}
    assert all(j["mode"] == mode and j["judge"].startswith("openai:test-judge@") for j in judgments)
    assert {j["pair_id"]: j["verdict"] for j in judgments} == {"p0": "a", "p1": "b"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["judge"]["mode"] == mode and summary["judge"]["parse_failures"] == 0
    assert summary["judge"]["engine"]["requests"] > 0 and summary["judge"]["engine"]["failures"] == 0
    prefs = read_jsonl(out / "preferences.jsonl")
    assert [r["chosen"][0]["content"].split()[0] for r in prefs] == ["GOODMARK", "GOODMARK"]
    for path in out.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


def test_judge_and_preferences_via_endpoint(tmp_path, server, monkeypatch):
    out = tmp_path / "run"
    assert _run(server, out, monkeypatch) == 0
    _assert_run(out, "logprob")
    assert set(server.auth) == {f"Bearer {KEY}"}


def test_endpoint_without_logprobs_judges_with_cot(tmp_path, server, monkeypatch):
    server.reject_logprobs = True
    out = tmp_path / "run"
    assert _run(server, out, monkeypatch) == 0
    _assert_run(out, "cot")


def test_cot_constitution_scores_the_verdict_turn_by_logprobs(tmp_path, server, monkeypatch):
    from rlaif import CONSTITUTIONS_DIR

    constitution = tmp_path / "safety_cot.yaml"
    constitution.write_text((CONSTITUTIONS_DIR / "safety.yaml").read_text()
                            .replace("label_mode: logprob", "label_mode: cot").replace("judge_logprob.j2", "judge_cot.j2"))
    out = tmp_path / "run"
    assert _run(server, out, monkeypatch, constitution) == 0
    _assert_run(out, "cot")
    turns = [[m["role"] for m in b["messages"]] for b in server.bodies if len(b["messages"]) > 1]
    assert turns and all(t == ["user", "assistant", "user"] for t in turns)  # prompt, rationale, verdict question
    for j in read_jsonl(out / "judgments.jsonl"):
        assert j["raw_output"]["rationale"].startswith("Reasoning.") and set(j["raw_output"]["verdict_logprobs"]) == {"A", "B"}
