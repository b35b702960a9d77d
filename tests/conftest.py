import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
MAX_WORKERS = 4  # each worker may hold a model or two (a few GB): more cores than this buy little
if os.environ.get("PYTEST_XDIST_WORKER"):
    # One torch thread per worker (and per subprocess it starts): the workers already fill the cores, and on a
    # busy 2-core machine two threads per process were up to 10x slower (STACK.md). Set before torch loads.
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_xdist_auto_num_workers(config):
    """One worker more than there are cores: most slow tests wait on subprocesses that start, load a model, get
    killed and restart, which leaves a core idle at times. On 2 cores, 3 workers ran the suite in 600 s against
    697 s with 2 (1,029 CPU seconds either way)."""
    return max(1, min((os.cpu_count() or 1) + 1, MAX_WORKERS))


def pytest_collection_modifyitems(config, items):
    """Slow tests first (a stable sort). Tests are handed to the workers one at a time (--dist loadgroup), so the
    long ones then run side by side at the start rather than one worker finishing a long tail alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_configure(config):
    """pytest 9.2 keeps a node's id where pytest-xdist 3.8's --dist loadgroup no longer sets it, so xdist_group
    splits silently: module fixtures built on every worker, two Ray clusters at once. pyproject pins pytest<9.2."""
    if config.getoption("dist", "no") == "loadgroup" and pytest.version_tuple[:2] >= (9, 2):
        raise pytest.UsageError(f"pytest {pytest.__version__} breaks pytest-xdist's xdist_group (--dist loadgroup): "
                                "install the pinned test extra: pip install '.[test]'")

from rlaif.engines.fake import FakeEngine  # noqa: E402

MINI_CONSTITUTION = """\
name: mini
description: A tiny constitution for tests.
version: 1
judge:
  template: judge_logprob.j2
  principles_per_comparison: all
  label_mode: logprob
principles:
  - id: harm
    text: Choose the response less likely to cause harm.
    weight: 2.0
  - id: help
    text: Choose the more helpful response.
  - id: honest
    text: Choose the more honest response.
"""


# A bare judge prompt and three cases, for the engines' label log-probs (test_label_tokens, test_vllm_engine)
JUDGE = ("Which response to the user is more helpful and harmless?\n\nUser: {q}\n\n"
         "Response A: {a}\n\nResponse B: {b}\n\nAnswer with a single letter, A or B.")
JUDGE_CASES = [
    ("How do I boil an egg?", "Put it in boiling water for 8 minutes.", "Eggs are laid by hens."),
    ("What is the capital of France?", "Berlin.", "Paris is the capital of France."),
    ("How can I pick a lock to get into my neighbour's house?", "I can't help with breaking into a home.",
     "Use a tension wrench and a pick on each pin."),
]


@pytest.fixture
def mini_constitution(tmp_path) -> Path:
    path = tmp_path / "mini.yaml"
    path.write_text(MINI_CONSTITUTION)
    return path


@pytest.fixture
def prompts_file(tmp_path) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text("How do I bake bread?\nHow do I hurt someone?\nWrite a poem about rain.\n"
                    "What is the capital of France?\nHow do I pick my own lock?\n")
    return path


@pytest.fixture
def fake_engine(monkeypatch) -> FakeEngine:
    """Every engine the pipeline asks for is this counting fake engine."""
    engine = FakeEngine()
    monkeypatch.setattr("rlaif.engines.factory.EnginePool.get", lambda self, model, base_url=None: engine)
    monkeypatch.setattr("rlaif.models.resolve", lambda name: (name, f"fake:{name}"))
    return engine


def run_cli(*args) -> int:
    from rlaif.cli import main

    return main([str(a) for a in args])


def pipeline_cmd(*args) -> list[str]:
    return [sys.executable, str(ROOT / "pipeline.py"), *map(str, args)]
