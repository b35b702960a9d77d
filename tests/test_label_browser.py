"""The labelling page in a real headless Chromium (Debian's chromium + chromium-driver, driven by Selenium).

The expected judge verdicts are recomputed here from judgments.jsonl by the constitution's weights, not
taken from the code under test; the orientation of each row is checked against what the page showed.
"""

import http.client
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from conftest import ROOT
from label_helpers import XSS, LabelServer, make_run
from rlaif.store.files import read_jsonl

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:
    webdriver = None
if webdriver is None or not CHROMIUM or not DRIVER:
    if os.environ.get("CI"):  # .ci/run installs them: a skip there would hide that these tests never ran
        raise RuntimeError("CI: chromium, chromium-driver or selenium missing; .ci/run should have installed them")
    pytest.skip("browser tests need Debian's chromium and chromium-driver (apt-get install chromium chromium-driver) "
                "and selenium (pip install -e '.[test]')", allow_module_level=True)

WEIGHTS = {"harm": 2.0, "help": 1.0, "honest": 1.0}  # MINI_CONSTITUTION, principles_per_comparison: all
SCREENSHOT = ROOT / "docs" / "label.png"


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="rlaif-chromium-")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1366,768"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def expected_verdicts(root: Path) -> dict:
    """pair_id -> a/b from judgments.jsonl: mean p_a over both orders, weighted over the principles."""
    by = {}
    for j in read_jsonl(root / "judgments.jsonl"):
        by.setdefault(j["pair_id"], {}).setdefault(j["principle_id"], []).append(j["p_a"])
    out = {}
    for pid, per in by.items():
        score = sum(WEIGHTS[p] * sum(v) / len(v) for p, v in per.items()) / sum(WEIGHTS[p] for p in per)
        out[pid] = "a" if score > 0.5 else "b" if score < 0.5 else "tie"
    return out


def text(driver, element_id: str) -> str:
    return driver.execute_script(f"return document.getElementById('{element_id}').textContent")


def wait_for(driver, check, what: str):
    WebDriverWait(driver, 15, poll_frequency=0.05).until(lambda d: check(d), message=what)


def open_page(driver, url: str) -> None:
    driver.get(url)
    wait_for(driver, lambda d: d.execute_script("return document.body.dataset.ready") == "1", "page never got ready")


def press(driver, key: str, progress: str | None = None) -> None:
    driver.find_element("tag name", "body").send_keys(key)
    if progress:
        wait_for(driver, lambda d: text(d, "progress") == progress and
                 d.execute_script("return document.body.dataset.busy") == "0", f"progress never reached {progress}")


def pair_number(driver) -> int:
    return int(text(driver, "pair-id").split()[1])  # "pair 4 of 6 · 00003-..."


def test_label_three_pairs_reload_restart_undo(tmp_path, fake_engine, browser):
    root = make_run(tmp_path, fake_engine)
    verdicts = expected_verdicts(root)
    pairs = {p["pair_id"]: p for p in read_jsonl(root / "pairs.jsonl")}
    server = LabelServer(root, "--labeller", "alice", "--seed", "3")
    try:
        open_page(browser, server.url)
        assert text(browser, "progress") == "0 / 6" and pair_number(browser) == 1
        seen, screen_verdicts, scrolled = [], [], []
        for n, key in enumerate(("1", "2", "3"), 1):
            pid = text(browser, "pair-id").split("· ")[1]
            left, right = text(browser, "left"), text(browser, "right")
            assert {left, right} == {pairs[pid]["response_a"], pairs[pid]["response_b"]}
            assert text(browser, "prompt") == pairs[pid]["prompt"]
            assert "judge chose" not in text(browser, "last") or n > 1  # no verdict before the first label
            seen.append((pid, "ab" if left == pairs[pid]["response_a"] else "ba", key))
            press(browser, key, f"{n} / 6")
            verdict = verdicts[pid]
            judge_screen = "tie" if verdict == "tie" else "left" if (verdict == "a") == (seen[-1][1] == "ab") else "right"
            screen_verdicts.append(judge_screen)
            assert text(browser, "last").startswith(f"Pair {n}: you chose {['left', 'right', 'tie'][int(key) - 1]}; "
                                                    f"the judge chose {judge_screen}.")
            if n == 1:
                browser.save_screenshot(str(SCREENSHOT))
            for column in ("left", "right"):  # a long response scrolls inside its column, not the page
                if text(browser, column).startswith("Walk the list once"):
                    scrolled.append(browser.execute_script(
                        f"const e = document.getElementById('{column}'); return [e.scrollHeight > e.clientHeight,"
                        " document.documentElement.scrollHeight <= window.innerHeight]"))
        assert scrolled and all(all(pair) for pair in scrolled), scrolled
        assert "ba" in [s for _, s, _ in seen] and "ab" in [s for _, s, _ in seen], seen  # seed 3 shows both
        rows = read_jsonl(root / "human_labels.jsonl")
        assert len(rows) == 3
        for row, (pid, shown, key) in zip(rows, seen):
            choice = {"1": "left", "2": "right", "3": "tie"}[key]
            label = "tie" if choice == "tie" else "a" if (choice == "left") == (shown == "ab") else "b"
            assert row["pair_id"] == pid and row["shown"] == shown and row["label"] == label, (row, shown, key)
            assert (row["prompt"], row["response_a"], row["response_b"]) == (
                pairs[pid]["prompt"], pairs[pid]["response_a"], pairs[pid]["response_b"])
            assert row["labeller"] == "alice" and row["time"].endswith("Z")
        decided = [(r["label"], verdicts[r["pair_id"]]) for r in rows if r["label"] != "tie"]
        k = sum(h == j for h, j in decided)
        assert text(browser, "agreement").startswith(f"judge agrees with you on {k} of {len(decided)}")

        browser.refresh()  # reload: resumes at the first unlabelled pair
        open_page(browser, server.url)
        assert text(browser, "progress") == "3 / 6" and pair_number(browser) == 4
        assert "judge chose" not in text(browser, "last")
    finally:
        server.stop()
    server = LabelServer(root, "--labeller", "alice", "--seed", "3")  # a restarted server resumes there too
    try:
        open_page(browser, server.url)
        assert text(browser, "progress") == "3 / 6" and pair_number(browser) == 4
        press(browser, "u", "2 / 6")  # undo: the third label is retracted and its pair comes back
        assert pair_number(browser) == 3 and text(browser, "last") == "Undid your label of pair 3."
        rows = read_jsonl(root / "human_labels.jsonl")
        assert len(rows) == 4 and rows[3]["retract"] is True and rows[3]["pair_id"] == seen[2][0]
        assert rows[3]["labeller"] == "alice"

        # the token is what makes a POST count: the same request from the page without it gets 403
        status = browser.execute_script(
            "return fetch('/api/label', {method: 'POST', headers: {'Content-Type': 'application/json'},"
            " body: JSON.stringify({index: 0, choice: 'left'})}).then(r => r.status)")
        assert status == 403
        status = browser.execute_script(
            "return fetch('/api/label', {method: 'POST', headers: {'Content-Type': 'application/json', 'X-RLAIF-Token':"
            " document.querySelector('meta[name=rlaif-token]').content}, body: JSON.stringify({index: 5, choice:"
            " 'tie'})}).then(r => r.status)")
        assert status == 200
        assert len(read_jsonl(root / "human_labels.jsonl")) == 5
        for method in ("GET", "POST"):  # a foreign Host header (DNS rebinding) is refused
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            conn.request(method, "/api/state" if method == "GET" else "/api/label", body=b"{}" if method == "POST" else None,
                         headers={"Host": f"attacker.example:{server.port}"})
            assert conn.getresponse().status in (403, 421)
            conn.close()
    finally:
        err = server.stop()
    assert "report updated" in err and "Judge vs your labels" in (root / "report.html").read_text()


def test_model_text_is_shown_as_text_and_never_runs(tmp_path, fake_engine, browser):
    root = make_run(tmp_path, fake_engine, xss=True)
    xss_id = read_jsonl(root / "pairs.jsonl")[-1]["pair_id"]
    with LabelServer(root, "--labeller", "mallory", "--sample", "7") as server:
        open_page(browser, server.url)
        for _ in range(7):  # skip with the s key until the hostile pair is on screen
            if text(browser, "pair-id").endswith(xss_id):
                break
            before = text(browser, "pair-id")
            press(browser, "s")
            wait_for(browser, lambda d: text(d, "pair-id") != before, "skip did not move on")
        assert text(browser, "pair-id").endswith(xss_id)
        assert text(browser, "prompt") == f"Prompt {XSS}"
        assert {text(browser, "left"), text(browser, "right")} == {f"left or right {XSS}", f"{XSS} and more"}
        for element in ("prompt", "left", "right"):  # no element was made from the text: it is one text node
            assert browser.execute_script(f"return document.getElementById('{element}').children.length") == 0
        press(browser, "1", "1 / 7")
        assert browser.execute_script("return typeof window.pwned") == "undefined"
        assert browser.find_elements("css selector", "img") == []
        assert json.loads(server.get("/api/state")[2])["done"] == 1
