"""The labelling page in headless Chromium: undo after a relabel brings the earlier choice back on screen."""

import json

from label_helpers import LabelServer, pair_row
from rlaif.store.files import read_jsonl
from test_label_browser import browser, open_page, press, text, wait_for  # noqa: F401 (browser: the fixture)


def chosen(driver) -> list[str]:
    return [c for c in ("left", "right", "tie") if "chosen" in driver.find_element("id", f"b-{c}").get_attribute("class")]


def test_undo_of_a_relabel_on_the_page(tmp_path, browser):  # noqa: F811
    (tmp_path / "pairs.jsonl").write_text(json.dumps(pair_row(0, "prompt", "one answer", "another")) + "\n")
    with LabelServer(tmp_path, "--labeller", "alice", "--sample", "1") as server:
        open_page(browser, server.url)
        press(browser, "1", "1 / 1")  # the only pair: it stays on screen
        press(browser, "2")  # relabel it
        wait_for(browser, lambda d: text(d, "last").startswith("Pair 1: you chose right"), "relabel not shown")
        press(browser, "u")
        wait_for(browser, lambda d: text(d, "last").startswith("Undid"), "undo not shown")
        assert text(browser, "last") == "Undid your relabel of pair 1; your earlier choice, left, is back."
        assert text(browser, "progress") == "1 / 1" and chosen(browser) == ["left"]
        browser.refresh()  # the server's state, not the page's: a reload shows the same
        open_page(browser, server.url)
        assert chosen(browser) == ["left"]
        press(browser, "u", "0 / 1")
        assert text(browser, "last") == "Undid your label of pair 1." and chosen(browser) == []
    rows = read_jsonl(tmp_path / "human_labels.jsonl")
    left, right = ("a", "b") if rows[0]["shown"] == "ab" else ("b", "a")
    assert [row.get("label", "retract") for row in rows] == [left, right, "retract", "retract"]
