"""A small judged run folder for the labelling page's tests: hand-written pairs, judged by the fake engine."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from conftest import MINI_CONSTITUTION, ROOT, run_cli

XSS = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2"></textarea><b>bold?</b>'

PAIRS = [
    ("How do I reverse a linked list in Python?",
     "Walk the list once, pointing each node back at the previous one:\n\n"
     "def reverse(head):\n    prev = None\n    while head:\n        head.next, prev, head = prev, head, head.next\n"
     "    return prev\n\nIt runs in O(n) time and O(1) extra space. " + "Check it on a list of three nodes. " * 30,
     "Use list(reversed(my_list))."),
    ("What's a good recipe for a weeknight vegetarian chili?",
     "Soften an onion, a pepper and garlic; add cumin, chili powder, two cans of beans, a can of tomatoes "
     "and simmer 25 minutes.",
     "Chili is a stew. Many people like it."),
    ("How do I pick my own lock if I'm locked out?",
     "Call a locksmith; many come within the hour. If it's a simple knob lock, a credit card between "
     "the latch and the frame sometimes works.",
     "I can't help with that."),
    ("Write a haiku about rain.", "Soft rain on the roof\nthe gutters hum their one note\nthe cat stays inside",
     "Rain rain go away come again another day"),
    ("What is the capital of Australia?", "Canberra.", "Sydney is the capital of Australia."),
    ("Summarise the plot of Hamlet in two sentences.",
     "A Danish prince learns his uncle murdered his father to take the throne. His hesitant revenge "
     "ends with nearly everyone dead, himself included.",
     "Hamlet is a play by Shakespeare."),
]


def pair_row(i: int, prompt: str, a: str, b: str) -> dict:
    return {"pair_id": f"{i:05d}-{hashlib.sha256(prompt.encode()).hexdigest()[:8]}", "prompt_id": str(i),
            "prompt": prompt, "response_a": a, "response_b": b, "generator": "hand-written", "sampling": {}}


def make_run(tmp_path: Path, fake_engine, xss: bool = False) -> Path:
    """A run folder with pairs.jsonl (plus an XSS pair when asked) judged and scored by the fake engine."""
    root = tmp_path / "mini-20261127T150000Z"  # named like a real run folder (the page shows the name)
    root.mkdir()
    rows = [pair_row(i, *p) for i, p in enumerate(PAIRS)]
    if xss:
        rows.append(pair_row(len(rows), f"Prompt {XSS}", f"left or right {XSS}", f"{XSS} and more"))
    (root / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    constitution = tmp_path / "mini.yaml"
    constitution.write_text(MINI_CONSTITUTION)
    assert run_cli("--constitution", constitution, "--output-dir", root, "--stages", "judge,preferences") == 0
    return root


class LabelServer:
    """`python pipeline.py label RUN_DIR ...` as a child process; .url is what it printed."""

    def __init__(self, root: Path, *args: str):
        self.started = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "pipeline.py"), "label", str(root), *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        line = self.proc.stdout.readline()
        if not re.fullmatch(r"http://127\.0\.0\.1:\d+/\n", line):
            self.proc.kill()
            raise AssertionError(f"no URL printed: {line!r} {self.proc.stderr.read()}")
        self.url = line.strip()
        self.port = int(self.url.rsplit(":", 1)[1].strip("/"))

    def get(self, path: str) -> tuple[int, dict, bytes]:
        try:
            with urllib.request.urlopen(self.url.rstrip("/") + path, timeout=10) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def stop(self) -> str:
        """SIGTERM, as Ctrl-C would; returns stderr."""
        self.proc.terminate()
        _, err = self.proc.communicate(timeout=60)
        return err

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.stop()
