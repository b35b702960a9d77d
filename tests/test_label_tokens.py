"""Issue 21, point 7: verdict label tokens on the embedded model.

- The local engines count a label as the OpenAI engine does: every token whose text, stripped, is the label
  ("A" and " A"), their probabilities summed.
- Labels whose first tokens coincide would make every verdict exactly 0.5: an error before any judging.
"""

import json

import pytest

from conftest import JUDGE, JUDGE_CASES, run_cli

CASES = JUDGE_CASES
CONVS = [[{"role": "user", "content": JUDGE.format(q=q, a=a, b=b)}] for q, a, b in CASES]
LABELS = ["A", "B"]


@pytest.fixture(scope="module")
def engine():
    from rlaif.engines.hf import HFEngine
    from rlaif.models import resolve

    return HFEngine(*resolve("SmolLM2-135M-Instruct"), dtype="float32")


def raw_logprobs(engine, conv):
    """log_softmax over the whole vocabulary at the last position, straight from the model (logits_to_keep=1, as
    the engine runs it: the full logits matrix moves the last row by up to 2e-5)."""
    import torch

    ids = torch.tensor([engine.chat_ids(conv, 1, keep_head=True)])
    with torch.inference_mode():
        return torch.log_softmax(engine.model(input_ids=ids, logits_to_keep=1).logits[0, -1].float(), dim=-1)


def test_label_logprobs_sum_every_variant_like_the_openai_engine(engine, monkeypatch):
    import torch

    from rlaif.engines.openai import OpenAIEngine

    texts = [engine.tok.decode([i]) for i in range(len(engine.tok))]
    variants = {label: [i for i, t in enumerate(texts) if t.strip() == label] for label in LABELS}
    assert all(len(v) >= 2 for v in variants.values())  # "A" and " A" at least
    ours = engine.label_logprobs(CONVS, LABELS)
    endpoint = OpenAIEngine("m", "http://127.0.0.1:9", logprobs=True, concurrency=1)
    for conv, got in zip(CONVS, ours):
        logp = raw_logprobs(engine, conv)
        for label in LABELS:
            assert got[label] == pytest.approx(torch.logsumexp(logp[variants[label]], 0).item(), abs=2e-6)
        # What an OpenAI-compatible server serving this model returns: the top token, then the top n. At n = 20
        # (the usual cap) it misses variants (" A" and " B" rank in the hundreds to thousands on this model); at
        # the rank of the last variant it holds them all, and the endpoint's sum must be ours.
        order = logp.argsort(descending=True).tolist()
        every = 1 + max(order.index(i) for ids in variants.values() for i in ids)
        for n in (20, every):
            top = [{"token": texts[i], "logprob": logp[i].item()} for i in order[:n]]
            payload = {"choices": [{"message": {"content": top[0]["token"]},
                                    "logprobs": {"content": [{**top[0], "top_logprobs": top}]}}]}
            monkeypatch.setattr(endpoint, "_post", lambda body, expected=(): payload)
            theirs = endpoint.label_logprobs([conv], LABELS)[0]
            if n == every:
                assert set(theirs) == set(LABELS)
                assert all(theirs[label] == pytest.approx(got[label], abs=2e-6) for label in LABELS), (theirs, got)
            else:  # a part of the same mass
                assert all(theirs[label] <= got[label] + 2e-6 for label in theirs), (theirs, got)


def test_labels_sharing_a_first_token_are_refused_before_judging(engine):
    from rlaif.errors import RlaifError

    with pytest.raises(RlaifError) as e:
        engine.label_logprobs(CONVS[:1], ["A.", "A!"])  # both start with the token "A"
    assert engine.tok.name_or_path in e.value.line() and "'A'" in e.value.line()


def test_labels_sharing_a_first_token_exit_2_from_the_command_line(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    pair = {"pair_id": "00000-x", "prompt_id": "0", "prompt": "How do I bake bread?", "generator": "test",
            "response_a": "Mix flour, water, yeast; knead; bake.", "response_b": "No.", "sampling": {}}
    (folder / "pairs.jsonl").write_text(json.dumps(pair) + "\n")
    monkeypatch.setattr("rlaif.judging.jobs.LABELS", ("A.", "A!"))
    code = run_cli("--constitution", "safety.yaml", "--stages", "judge", "--engine", "hf", "--dtype", "float32",
                   "--output-dir", folder)
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("rlaif: error")]
    assert code == 2 and len(err) == 1 and "'A.' and 'A!'" in err[0] and "SmolLM2-135M-Instruct" in err[0], err
    assert "judge template judge_logprob.j2" in err[0] and "safety.yaml" in err[0], err  # the template and tokenizer
    assert not (folder / "judgments.jsonl").exists() or not (folder / "judgments.jsonl").read_text()
