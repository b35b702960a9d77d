"""`rlaif label`: undo of a relabel restores the earlier label, and the Host check accepts what a browser
sends (no :80 for port 80, IPv6 in lower case) for any spelling of --host. In-process servers, real HTTP."""

import http.client
import json
import urllib.request

import pytest

from label_helpers import pair_row
from rlaif.errors import RlaifError
from rlaif.cli.label import LabelApp, check_host, serve
from rlaif.evaluation.labels import LabelFile

PAIRS = [pair_row(i, f"prompt {i}", f"a{i}", f"b{i}") for i in range(3)]


@pytest.fixture
def app(tmp_path):
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PAIRS))  # no judgments: no verdicts
    return LabelApp(tmp_path, sample=3, seed=0, labeller="alice")


@pytest.fixture
def served(app):
    servers = []

    def start(host="127.0.0.1", port=0):
        server, url = serve(app, host, port)
        servers.append(server)
        return server.server_address[1], url
    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def request(port, host_header, method="GET", path="/api/state", body=None, token=None):
    """(status, JSON body) of one request to 127.0.0.1:port with this Host header."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Host": host_header, "Content-Type": "application/json", **({"X-RLAIF-Token": token} if token else {})}
    conn.request(method, path, body=None if body is None else json.dumps(body).encode(), headers=headers)
    response = conn.getresponse()
    status, data = response.status, json.loads(response.read() or b"{}")
    conn.close()
    return status, data


def test_labels_file_undo_of_a_relabel_restores_the_earlier_label(tmp_path):
    path = tmp_path / "human_labels.jsonl"
    alice, bob = LabelFile(path, "alice"), LabelFile(path, "bob")
    x, y = PAIRS[0]["pair_id"], PAIRS[1]["pair_id"]
    alice.label(PAIRS[0], "a", "ab")
    alice.label(PAIRS[1], "tie", "ab")
    bob.label(PAIRS[0], "tie", "ab")
    alice.label(PAIRS[0], "b", "ab")  # relabel x
    steps = [({x: "a", y: "tie"}, "b"), ({x: "a"}, "tie"), ({}, "a")]  # after each undo: labels, label undone
    for labels, undone in steps:
        assert alice.undo()["label"] == undone
        for file in (alice, LabelFile(path, "alice")):  # a restart replays the file to the same state
            assert {pid: row["label"] for pid, row in file.current.items()} == labels
    assert alice.undo() is None and LabelFile(path, "alice").undo() is None
    assert {pid: row["label"] for pid, row in LabelFile(path, "bob").current.items()} == {x: "tie"}


def test_page_undo_of_a_relabel_shows_the_earlier_choice(app, served, tmp_path):
    port, _ = served()
    host = f"127.0.0.1:{port}"
    for choice in ("left", "right"):  # label pair 1, then relabel it
        assert request(port, host, "POST", "/api/label", {"index": 0, "choice": choice}, app.token)[0] == 200
    status, result = request(port, host, "POST", "/api/undo", {}, app.token)
    assert status == 200 and result["index"] == 0 and result["you"] == "left" and result["state"]["done"] == 1
    assert request(port, host, path="/api/pair?index=0")[1]["you"] == "left"
    restarted = LabelApp(tmp_path, sample=3, seed=0, labeller="alice")
    assert restarted.pair(0)["you"] == "left"
    result = restarted.undo()  # a further undo removes it
    assert result["index"] == 0 and result["you"] is None and result["state"]["done"] == 0
    assert LabelApp(tmp_path, sample=3, seed=0, labeller="alice").pair(0)["you"] is None


def test_port_80_accepts_the_host_header_without_a_port(served):
    try:
        port, url = served("127.0.0.1", 80)
    except RlaifError as e:  # not root, or port 80 taken: test_host_ok covers port 80 without a server
        pytest.skip(f"cannot listen on port 80: {e}")
    assert url == "http://127.0.0.1:80/"
    with urllib.request.urlopen(url + "api/state", timeout=10) as r:  # urllib, like a browser, sends no :80
        assert r.status == 200
    for host in ("127.0.0.1", "127.0.0.1:80", "localhost", "LocalHost:80", "[::1]"):
        assert request(80, host)[0] == 200, host
    for host in ("127.0.0.1:8080", "evil.example", "evil.example:80", ""):
        assert request(80, host)[0] == 421, host


def test_ipv6_host_in_any_spelling(served):
    port, url = served("::FFFF:7F00:1")  # IPv4-mapped: reachable on 127.0.0.1
    for host in (f"[::ffff:7f00:1]:{port}", f"[::FFFF:7F00:1]:{port}", f"[::ffff:127.0.0.1]:{port}"):
        assert request(port, host)[0] == 200, host  # the first is what a browser sends
    for host in (f"127.0.0.1:{port}", f"[::ffff:7f00:2]:{port}", f"[::ffff:7f00:1]:{port + 1}", "[::ffff:7f00:1"):
        assert request(port, host)[0] == 421, host
    assert url in (f"http://[::ffff:7f00:1]:{port}/", f"http://[::ffff:127.0.0.1]:{port}/")  # the latter: Python 3.13+
    port, url = served("[::1]")  # a bracketed --host, as in a URL
    assert url == f"http://[::1]:{port}/"
    with urllib.request.urlopen(url + "api/state", timeout=10) as r:
        assert r.status == 200


def test_check_host_normalises_names():
    for host in ("LOCALHOST", "[::1]", "::FFFF:7F00:1", "[0:0::1]"):
        check_host(host, allow_remote=False)  # all loopback: no error
    with pytest.raises(RlaifError, match="not a loopback address"):
        check_host("[FE80::1]", allow_remote=False)


def test_host_ok():
    from rlaif.cli.label import host_ok

    names = {"127.0.0.1", "localhost", "::1"}
    assert all(host_ok(h, names, 80) for h in ("127.0.0.1", "127.0.0.1:80", "LOCALHOST", "[::1]", "[0::1]:80"))
    assert not any(host_ok(h, names, 80) for h in ("127.0.0.1:8080", "evil.example", "", "::1", "[::1]x", "[::2]"))
    assert host_ok("[::ffff:7f00:1]:8000", {"::FFFF:7F00:1"}, 8000)
    assert not host_ok("[::ffff:7f00:1]", {"::FFFF:7F00:1"}, 8000)  # no port is 80
