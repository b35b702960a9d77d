"""The executor-independent half of --executor ray, without Ray: an engine that scores elsewhere (`remote`) gets
exactly the batches the local walk scores, in the same order, and the files come out byte for byte the same,
from an empty cache and from a partly filled one. (tests/test_ray_executor.py runs the real thing on a cluster.)"""

from __future__ import annotations

import shutil

from rlaif.engines.fake import FakeEngine
from rlaif.judging.constitution import load
from rlaif.stages.generate import run_generate
from rlaif.stages.judge import run_judge
from rlaif.stages.revise import run_revise


class Recording(FakeEngine):
    """The local engine: records the judge prompts of each label_logprobs call (one call per scored batch)."""

    def __init__(self):
        super().__init__("fake")
        self.batches = []

    def label_logprobs(self, conversations, labels):
        self.batches.append([c[-1]["content"] for c in conversations])
        return super().label_logprobs(conversations, labels)


class Remote(Recording):
    """Scores elsewhere, as RayEngine does: every block is planned before the first one is run."""

    remote = True

    def map_blocks(self, work, blocks, params):
        blocks = list(blocks)
        self.blocks = blocks
        for block in blocks:
            yield work(self, block, params)


def _pairs(n: int) -> list[dict]:
    pairs = [{"pair_id": f"p{i}", "prompt": f"question {i % 5}", "response_a": f"yes {i % 7}", "response_b": f"no {i % 3}"}
             for i in range(n)]
    pairs.append({"pair_id": "same", "prompt": "q", "response_a": "x", "response_b": "x"})  # never judged
    return pairs  # i % 5, 7, 3 repeat: pairs with the same texts share their jobs' keys


def _judge(engine, pairs, cache, mini_constitution, batch_size):
    return run_judge(engine, pairs, load(str(mini_constitution)), seed=0, mode="logprob", settings={"labels": ["A", "B"]},
                     cache_path=cache, batch_size=batch_size, progress=False)


def test_a_remote_engine_scores_the_local_batches_and_writes_the_same_cache(tmp_path, mini_constitution):
    pairs = _pairs(160)
    for batch_size in (1, 7, 64):
        here, there = Recording(), Remote()
        local, lc = _judge(here, pairs, tmp_path / f"local{batch_size}.jsonl", mini_constitution, batch_size)
        remote, rc = _judge(there, pairs, tmp_path / f"remote{batch_size}.jsonl", mini_constitution, batch_size)
        assert remote == local and len(local) > 0
        assert [[b["text"] for b in block] for block in there.blocks] == here.batches
        assert there.batches == here.batches  # scored as the same batches, in the same order
        assert (tmp_path / f"remote{batch_size}.jsonl").read_bytes() == (tmp_path / f"local{batch_size}.jsonl").read_bytes()
        assert rc == lc and rc["judged"] == sum(map(len, here.batches)) < rc["judgments"]  # shared keys scored once


def test_a_remote_engine_resumes_a_partly_filled_cache_as_the_local_walk_does(tmp_path, mini_constitution):
    pairs = _pairs(90)
    _judge(Recording(), pairs[:40], tmp_path / "part.jsonl", mini_constitution, 8)
    for name in ("local", "remote"):
        shutil.copy(tmp_path / "part.jsonl", tmp_path / f"{name}.jsonl")
    here, there = Recording(), Remote()
    local, lc = _judge(here, pairs, tmp_path / "local.jsonl", mini_constitution, 8)
    remote, rc = _judge(there, pairs, tmp_path / "remote.jsonl", mini_constitution, 8)
    assert remote == local and there.batches == here.batches and rc == lc and rc["judged"] > 0 and rc["reused"] > 0
    assert (tmp_path / "remote.jsonl").read_bytes() == (tmp_path / "local.jsonl").read_bytes()


def test_generate_and_revise_blocks_give_the_local_files(tmp_path, mini_constitution):
    text = mini_constitution.read_text().replace(
        "    text: Choose the response less likely to cause harm.\n",
        "    text: Choose the response less likely to cause harm.\n    critique: What is harmful?\n"
        "    revision: Rewrite it to be harmless.\n")
    mini_constitution.write_text(text)
    constitution = load(str(mini_constitution))
    prompts = [f"prompt {i}" for i in range(7)]
    kw = dict(seed=1, batch_size=3, max_new_tokens=8, temperature=0.8, top_p=0.95, progress=False)
    for name, engine in (("local", Recording()), ("remote", Remote())):
        run_generate(engine, prompts, tmp_path / f"{name}-pairs.jsonl", **kw)
        run_revise(engine, prompts, tmp_path / f"{name}-revisions.jsonl", constitution, rounds=2, **kw)
        if name == "remote":
            assert [len(b) for b in engine.blocks] == [3, 3, 1]  # the revise stage's blocks: its local batches
    for f in ("pairs", "revisions"):
        assert (tmp_path / f"remote-{f}.jsonl").read_bytes() == (tmp_path / f"local-{f}.jsonl").read_bytes()
