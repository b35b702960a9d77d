"""`rlaif label` without a browser: the sample and the coin, the labels file, the HTTP guards, agreement and report."""

import http.client
import json
import re
import signal
import subprocess
import sys

import pytest

from conftest import ROOT, run_cli
from label_helpers import LabelServer, make_run, pair_row
from rlaif.errors import RlaifError
from rlaif.evaluation.humans import read_human_pairs
from rlaif.evaluation.labels import LabelFile, read_label_file, sample_pairs, shown_order, to_label, to_screen
from rlaif.store.files import read_jsonl

PAIRS = [pair_row(i, f"prompt {i}", f"a{i}", f"b{i}") for i in range(40)]


def test_sample_is_seeded_and_stable():
    first = sample_pairs(PAIRS, 10, seed=0)
    assert first == sample_pairs(list(reversed(PAIRS)), 10, seed=0)  # the same pairs, in the same order
    assert len({p["pair_id"] for p in first}) == 10
    assert [p["pair_id"] for p in sample_pairs(PAIRS, 10, seed=1)] != [p["pair_id"] for p in first]
    assert len(sample_pairs(PAIRS, 500, seed=0)) == 40
    grown = PAIRS + [pair_row(i, f"prompt {i}", "x", "y") for i in range(40, 44)]
    assert len({p["pair_id"] for p in first} & {p["pair_id"] for p in sample_pairs(grown, 10, 0)}) >= 6


def test_coin_and_orientation():
    orders = [shown_order(0, p["pair_id"]) for p in PAIRS]
    assert 10 < orders.count("ba") < 30  # a fair coin over 40 pairs, not a constant
    assert orders == [shown_order(0, p["pair_id"]) for p in PAIRS]
    assert [to_label(c, "ab") for c in ("left", "right", "tie")] == ["a", "b", "tie"]
    assert [to_label(c, "ba") for c in ("left", "right", "tie")] == ["b", "a", "tie"]
    for shown in ("ab", "ba"):
        for choice in ("left", "right", "tie"):
            assert to_screen(to_label(choice, shown), shown) == choice
    assert to_screen(None, "ba") is None


def test_labels_file_appends_retracts_and_replays(tmp_path):
    path = tmp_path / "human_labels.jsonl"
    alice, bob = LabelFile(path, "alice"), LabelFile(path, "bob")
    alice.label(PAIRS[0], "a", "ab")
    alice.label(PAIRS[1], "b", "ba")
    bob.label(PAIRS[0], "tie", "ab")
    alice.label(PAIRS[0], "b", "ab")  # a relabel replaces, and becomes the most recent
    assert alice.undo()["pair_id"] == PAIRS[0]["pair_id"]
    rows = read_jsonl(path)
    assert len(rows) == 5 and rows[-1] == {"pair_id": PAIRS[0]["pair_id"], "labeller": "alice", "retract": True,
                                           "time": rows[-1]["time"]}
    again = LabelFile(path, "alice")  # a restart sees the same state: the undone relabel's earlier label is back
    assert [(pid, row["label"]) for pid, row in again.current.items()] == [(PAIRS[0]["pair_id"], "a"),
                                                                           (PAIRS[1]["pair_id"], "b")]
    assert LabelFile(path, "bob").current[PAIRS[0]["pair_id"]]["label"] == "tie"
    with open(path, "a") as f:
        f.write('{"pair_id": "torn')  # a crash mid-line loses only that line
    again = LabelFile(path, "alice")
    assert list(again.current) == [PAIRS[0]["pair_id"], PAIRS[1]["pair_id"]] and not path.read_text().endswith("torn")
    assert [again.undo()["pair_id"] for _ in range(2)] == [PAIRS[1]["pair_id"], PAIRS[0]["pair_id"]]
    assert again.undo() is None
    pairs, names, skipped = read_label_file(str(path))
    assert names == ["alice", "bob"] and skipped == 0
    assert [(p.pair_id, p.labels) for p in pairs] == [(PAIRS[0]["pair_id"], {"bob": "tie"})]


def test_bad_label_row_names_the_line(tmp_path):
    path = tmp_path / "human_labels.jsonl"
    LabelFile(path, "alice").label(PAIRS[0], "a", "ab")
    with open(path, "a") as f:
        f.write(json.dumps({**read_jsonl(path)[0], "label": "left"}) + "\n")
    with pytest.raises(RlaifError, match=r"human_labels.jsonl:2: field 'label'"):
        LabelFile(path, "alice")
    pairs, skipped = read_human_pairs(str(path), skip_bad_rows=True)
    assert skipped == 1 and [p.labels for p in pairs] == [["a"]]


@pytest.fixture
def run_dir(tmp_path, fake_engine):
    return make_run(tmp_path, fake_engine)


def post(port, path, body, token=None, host=None, raw=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Content-Type": "application/json", "Host": host or f"127.0.0.1:{port}"}
    if token:
        headers["X-RLAIF-Token"] = token
    conn.request("POST", path, body=raw if raw is not None else json.dumps(body).encode(), headers=headers)
    response = conn.getresponse()
    status, data = response.status, response.read()
    conn.close()
    return status, (json.loads(data) if data.startswith(b"{") else data)


def test_server_guards_and_two_labellers(run_dir):
    with LabelServer(run_dir, "--labeller", "alice") as server:
        status, headers, page = server.get("/")
        assert status == 200
        csp = headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
        scripts = re.findall(rb"<script[^>]*>", page)
        assert scripts == [b'<script src="/label.js" defer>']  # one script, from the server's own file
        assert not re.search(rb"\son\w+=|javascript:", page)  # no inline handlers either
        token = re.search(rb'name="rlaif-token" content="([^"]+)"', page).group(1).decode()
        assert len(token) >= 40
        body = {"index": 0, "choice": "left"}
        assert post(server.port, "/api/label", body)[0] == 403
        assert post(server.port, "/api/label", body, token="x" * len(token))[0] == 403
        assert post(server.port, "/api/label", body, token=token, host="evil.example")[0] in (403, 421)
        assert post(server.port, "/api/label", None, token=token, raw=b"{" + b" " * 5000 + b"}")[0] == 413
        assert post(server.port, "/api/label", None, token=token, raw=b"[1]")[0] == 400
        assert post(server.port, "/api/label", {"index": 99, "choice": "left"}, token=token)[0] == 400
        for path in ("/../pairs.jsonl", "/pairs.jsonl", "/static/label.js", "/api/pair?index=../../etc/passwd"):
            assert server.get(path)[0] in (400, 404), path
        assert not (run_dir / "human_labels.jsonl").exists()  # nothing refused was written
        hidden = json.loads(server.get("/api/pair?index=0")[2])
        assert hidden["judge"] is None and hidden["you"] is None  # the verdict stays hidden until labelled
        status, result = post(server.port, "/api/label", body, token=token)
        assert status == 200 and result["state"]["done"] == 1 and result["judge"] in ("left", "right")
        shown = json.loads(server.get("/api/pair?index=0")[2])
        assert shown["you"] == "left" and shown["judge"] == result["judge"]
    with LabelServer(run_dir, "--labeller", "bob") as server:  # a second labeller starts from the beginning
        state = json.loads(server.get("/api/state")[2])
        assert state["labeller"] == "bob" and state["done"] == 0
        token = re.search(rb'content="([^"]+)"', server.get("/")[2].split(b"rlaif-token")[1]).group(1).decode()
        assert post(server.port, "/api/label", {"index": 0, "choice": "right"}, token=token)[0] == 200
    rows = read_jsonl(run_dir / "human_labels.jsonl")
    assert [r["labeller"] for r in rows] == ["alice", "bob"] and rows[0]["pair_id"] == rows[1]["pair_id"]
    assert rows[0]["label"] != rows[1]["label"] and rows[0]["shown"] == rows[1]["shown"]


def test_stopping_updates_the_report(run_dir):
    server = LabelServer(run_dir, "--labeller", "alice", "--sample", "4")
    token = re.search(rb'name="rlaif-token" content="([^"]+)"', server.get("/")[2]).group(1).decode()
    for index in range(4):
        assert post(server.port, "/api/label", {"index": index, "choice": "left"}, token=token)[0] == 200
    server.proc.send_signal(signal.SIGINT)  # Ctrl-C
    _, err = server.proc.communicate(timeout=60)
    assert server.proc.returncode == 0 and "report updated" in err
    html = (run_dir / "report.html").read_text()
    assert "Judge vs your labels" in html and "<td>alice</td><td>4</td>" in html


def test_agreement_reads_the_labels_file(run_dir, tmp_path):
    path = run_dir / "human_labels.jsonl"
    pairs = read_jsonl(run_dir / "pairs.jsonl")
    alice, bob = LabelFile(path, "alice"), LabelFile(path, "bob")
    for i, pair in enumerate(pairs[:5]):
        alice.label(pair, "a" if len(pair["response_a"]) > len(pair["response_b"]) else "b", "ab")
        bob.label(pair, "a" if i % 2 else "b", "ba")
    alice.label(pairs[5], "a", "ab")
    alice.undo()  # pairs[5] is retracted: five pairs remain
    out = tmp_path / "agreement"
    assert run_cli("agreement", "--constitution", ROOT / "constitutions" / "safety.yaml", "--human", path,
                   "--judge", "length", "--output-dir", out) == 0
    result = json.loads((out / "agreement.json").read_text())["length"]
    assert result["n_pairs"] == 5
    humans = [([a, b]) for a, b in zip(["a" if len(p["response_a"]) > len(p["response_b"]) else "b" for p in pairs[:5]],
                                       ["a" if i % 2 else "b" for i in range(5)])]
    assert result["human_agreement"] == pytest.approx(sum(a == b for a, b in humans) / 5)
    assert run_cli("agreement", "--constitution", ROOT / "constitutions" / "safety.yaml", "--human", path,
                   "--judge", "length", "--label-columns", "alice", "--output-dir", out) == 0
    result = json.loads((out / "agreement.json").read_text())["length"]
    assert result["agreement"] == 1.0 and "human_agreement" not in result  # alice labelled the longer one


@pytest.mark.parametrize("args, message", [
    (["--host", "10.1.2.3"], "--allow-remote"),
    (["--host", "0.0.0.0", "--allow-remote"], "listen everywhere"),
    (["--sample", "0"], "--sample"),
    (["--labeller", " "], "--labeller"),
])
def test_bad_flags_fail_in_one_line(run_dir, args, message):
    done = subprocess.run([sys.executable, str(ROOT / "pipeline.py"), "label", str(run_dir), *args],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == "" and message in done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("rlaif: error:")


def test_folder_without_pairs(tmp_path):
    assert run_cli("label", tmp_path) == 2
    assert not (tmp_path / "human_labels.jsonl").exists()


def test_run_without_judgments_still_labels(run_dir):
    (run_dir / "judgments.jsonl").unlink()
    with LabelServer(run_dir, "--labeller", "alice", "--sample", "2") as server:
        state = json.loads(server.get("/api/state")[2])
        assert state["judged"] is False and state["total"] == 2
        token = re.search(rb'name="rlaif-token" content="([^"]+)"', server.get("/")[2]).group(1).decode()
        status, result = post(server.port, "/api/label", {"index": 1, "choice": "tie"}, token=token)
        assert status == 200 and result["judge"] == "unjudged" and result["state"]["decided"] == 0
    assert read_jsonl(run_dir / "human_labels.jsonl")[0]["label"] == "tie"
