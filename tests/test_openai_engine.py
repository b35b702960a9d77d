"""OpenAIEngine against a small chat-completions server started inside the test (127.0.0.1 only)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rlaif.engines.base import label_probability
from rlaif.engines.openai import OpenAIEngine
from rlaif.errors import RlaifError
from rlaif.judging.jobs import parse_verdict

KEY = "sk-secret-test-key"


class FakeChatServer(ThreadingHTTPServer):
    """Speaks POST /v1/chat/completions. Knobs: fail_first (status, n), reject_logprobs, no_logprobs,
    status (answer every request with it), delay, reply(body) -> text, top(body) -> [(token, logprob)]."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.lock = threading.Lock()
        self.fail_first = None
        self.reject_logprobs = self.no_logprobs = False
        self.status = None
        self.delay = 0.0
        self.reply = lambda body: "Verdict: A"
        self.top = lambda body: [("A", -0.7), (" A", -1.6), ("B", -2.3), (" B", -3.2), ("C", -4.0)]
        self.bodies, self.auth = [], []
        self.count = self.in_flight = self.max_in_flight = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _send(self, status: int, payload: dict, headers: dict | None = None):
        data = json.dumps(payload).encode()
        self.send_response(status)
        for k, v in {"Content-Type": "application/json", "Content-Length": str(len(data)), **(headers or {})}.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        s: FakeChatServer = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with s.lock:
            s.count += 1
            n = s.count
            s.bodies.append(body)
            s.auth.append(self.headers.get("Authorization"))
            s.in_flight += 1
            s.max_in_flight = max(s.max_in_flight, s.in_flight)
        done = []

        def send(*args):  # out of flight before the reply leaves: the client may send its next request at once
            with s.lock:
                s.in_flight -= 1
            done.append(True)
            self._send(*args)
        try:
            time.sleep(s.delay)
            if self.path != "/v1/chat/completions":
                return send(404, {"error": {"message": "no such route"}})
            if s.status:
                return send(s.status, {"error": {"message": f"Incorrect API key provided: {KEY}"}})
            if s.fail_first and n <= s.fail_first[1]:
                status = s.fail_first[0]
                return send(status, {"error": {"message": "busy"}}, {"Retry-After": "0"} if status == 429 else {})
            if body.get("logprobs") and s.reject_logprobs:
                return send(400, {"error": {"message": "logprobs is not supported"}})
            choice = {"index": 0, "message": {"role": "assistant", "content": s.reply(body)}, "finish_reason": "stop"}
            if body.get("logprobs") and not s.no_logprobs:
                top = [{"token": t, "logprob": lp} for t, lp in s.top(body)]
                choice["logprobs"] = {"content": [{**top[0], "top_logprobs": top[:body["top_logprobs"]]}]}
            send(200, {"choices": [choice], "usage": {"prompt_tokens": 10, "completion_tokens": 2}})
        finally:
            if not done:
                with s.lock:
                    s.in_flight -= 1


@pytest.fixture
def server():
    srv = FakeChatServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


def make(server, **kw) -> OpenAIEngine:
    return OpenAIEngine("test-judge", server.url, **{"api_key": KEY, "concurrency": 4, "backoff_base": 0.01, **kw})


def convs(n: int) -> list[list[dict]]:
    return [[{"role": "user", "content": f"question {i}"}] for i in range(n)]


def test_logprob_labels_and_probability(server):
    engine = make(server)
    assert engine.supports_logprobs is True  # probed lazily: one tiny request
    out = engine.label_logprobs(convs(3), ["A", "B"])
    import math
    # "A" and " A" are the same answer: their probabilities add (the chosen token, which the response lists
    # first and again among top_logprobs, counts once); "C" is ignored
    pa, pb = math.exp(-0.7) + math.exp(-1.6), math.exp(-2.3) + math.exp(-3.2)
    assert len(out) == 3 and all(o == out[0] for o in out)
    assert out[0] == {"A": pytest.approx(math.log(pa), abs=1e-12), "B": pytest.approx(math.log(pb), abs=1e-12)}
    p = label_probability(out[0], "A", "B")
    assert abs(p - pa / (pa + pb)) < 1e-12
    body = server.bodies[-1]
    assert body["model"] == "test-judge" and body["max_tokens"] == 1 and body["temperature"] == 0
    assert body["logprobs"] is True and body["top_logprobs"] == 20
    assert engine.stats["requests"] == 4 and engine.stats["prompt_tokens"] == 40


def test_missing_label_is_absent_not_guessed(server):
    server.top = lambda body: [("A", -0.1), ("Sure", -2.0)]
    engine = make(server, logprobs=True)
    out = engine.label_logprobs(convs(1), ["A", "B"])
    assert out == [{"A": pytest.approx(-0.1, abs=1e-12)}] and label_probability(out[0], "A", "B") is None
    assert server.count == 1  # logprobs=True: no probe


def test_logprobs_rejected_falls_back_to_cot(server):
    from rlaif.judging.jobs import judge_mode

    server.reject_logprobs = True
    server.reply = lambda body: "Response A refuses to help.\nVerdict: B" if body["max_tokens"] > 1 else "A"
    engine = make(server)

    class Constitution:
        label_mode = "logprob"

    assert judge_mode(Constitution, engine) == "cot" and engine.supports_logprobs is False
    texts = engine.complete(convs(2), max_new_tokens=64)
    assert [parse_verdict(t) for t in texts] == ["B", "B"]
    assert server.bodies[-1]["temperature"] == 0 and "logprobs" not in server.bodies[-1]
    with pytest.raises(RlaifError, match="log-probs"):
        engine.label_logprobs(convs(1), ["A", "B"])


def test_no_logprobs_in_reply_means_unsupported(server):
    server.no_logprobs = True
    assert make(server).probe_logprobs() is False


def test_rejected_probe_is_not_a_failure(server):
    server.reject_logprobs = True
    engine = make(server)
    assert engine.probe_logprobs() is False and engine.stats["failures"] == 0 and engine.stats["requests"] == 1


@pytest.mark.parametrize("status", [429, 503])
def test_retries_are_counted(server, status):
    server.fail_first = (status, 2)
    engine = make(server)
    assert engine.complete(convs(1), max_new_tokens=8) == ["Verdict: A"]
    stats = engine.stats
    assert stats["retries"] == 2 and stats["requests"] == 3 and stats["failures"] == 0


def test_retries_exhausted(server):
    server.fail_first = (503, 100)
    engine = make(server, max_attempts=3)
    with pytest.raises(RlaifError, match="failed 3 times") as err:
        engine.complete(convs(1), max_new_tokens=8)
    assert server.url in str(err.value) and "fix:" in str(err.value)
    assert engine.stats["failures"] == 1 and engine.stats["retries"] == 2


def test_connection_refused_is_retried_then_explained():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    engine = OpenAIEngine("m", f"http://127.0.0.1:{port}/v1", api_key=KEY, max_attempts=2, backoff_base=0.01)
    with pytest.raises(RlaifError, match="failed 2 times") as err:
        engine.complete(convs(1), max_new_tokens=8)
    assert KEY not in str(err.value) and engine.stats["retries"] == 1


def test_401_fails_at_once_without_the_key(server):
    server.status = 401
    engine = make(server)
    with pytest.raises(RlaifError) as err:
        engine.complete(convs(1), max_new_tokens=8)
    assert "401" in str(err.value) and "OPENAI_API_KEY" in str(err.value)
    assert KEY not in str(err.value) and server.count == 1
    with pytest.raises(RlaifError):  # a 401 during the probe is not "no logprobs"
        engine.probe_logprobs()


def test_bounded_concurrency_and_order(server):
    server.delay = 0.05
    server.reply = lambda body: f"echo {body['messages'][-1]['content']}"
    engine = make(server, concurrency=3)
    out = engine.generate(convs(20), seed=7, max_new_tokens=8, temperature=0.8, top_p=0.9)
    assert out == [f"echo question {i}" for i in range(20)]
    assert 1 < server.max_in_flight <= 3
    seeds = {b["messages"][0]["content"]: b["seed"] for b in server.bodies}
    assert len(set(seeds.values())) == 20 and all(b["top_p"] == 0.9 for b in server.bodies)
    engine.generate(convs(2), seed=7, max_new_tokens=8, temperature=0.8, top_p=0.9)
    assert server.bodies[-1]["seed"] == seeds[server.bodies[-1]["messages"][0]["content"]]  # (seed, index)


def test_key_is_sent_but_never_shown(server):
    engine = make(server)
    engine.complete(convs(2), max_new_tokens=8)
    assert server.auth == [f"Bearer {KEY}"] * 2
    for text in (repr(engine), str(engine), engine.identity, json.dumps(engine.stats), repr(vars(engine))):
        assert KEY not in text
    assert engine.identity == f"openai:test-judge@{server.url}"
    assert set(engine.stats) == {"requests", "retries", "failures", "prompt_tokens", "completion_tokens", "seconds"}


def test_no_key_sends_no_header(server):
    make(server, api_key=None).complete(convs(1), max_new_tokens=8)
    assert server.auth == [None]
