"""The sft stage and the revise stage on the embedded model, for real: loss mask, training, reload, kill -9 resume."""

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from rlaif.models import resolve
from rlaif.store.files import read_jsonl

from conftest import pipeline_cmd

BASE = resolve("SmolLM2-135M-Instruct")[0]
SMALL = ["--constitution", "safety.yaml", "--max-new-tokens", "8", "--seed", "5", "--engine", "hf"]


def _config(tmp_path, eval_prompts=1):
    path = tmp_path / "small.yaml"
    path.write_text(f"train:\n  eval_prompts: {eval_prompts}\n")
    return ["--config", path]


def _run(args, cwd, timeout=900):
    proc = subprocess.run(pipeline_cmd(*args), capture_output=True, text=True, cwd=cwd, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_training_template_renders_like_the_model_and_masks_only_assistant_tokens(tmp_path):
    from trl import SFTConfig

    from rlaif.stages.sft import build_trainer, training_template
    from rlaif.training.tokenizer import load_tokenizer

    tok = load_tokenizer(BASE)
    assert "{% generation %}" not in tok.chat_template  # SmolLM2's ChatML has no markers: we supply them
    conv = [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue, like the sky."},
            {"role": "user", "content": "Another?"}, {"role": "assistant", "content": "Green."}]
    template = training_template(tok)
    for c in (conv, conv[:2], [{"role": "system", "content": "Be brief."}] + conv):
        assert tok.apply_chat_template(c, tokenize=False) == tok.apply_chat_template(c, tokenize=False,
                                                                                      chat_template=template)
    args = SFTConfig(output_dir=str(tmp_path / "o"), use_cpu=True, bf16=False, report_to="none", max_steps=1,
                     gradient_checkpointing=False, assistant_only_loss=True, max_length=256)
    trainer = build_trainer(BASE, [conv], args)
    row = trainer.train_dataset[0]
    ids, labels = row["input_ids"], row["labels"]
    assert ids == tok.apply_chat_template(conv, tokenize=True, return_dict=True)["input_ids"]
    spans, cur = [], []
    for i, label in zip(ids, labels):
        if label != -100:
            assert label == i
            cur.append(i)
        elif cur:
            spans.append(cur)
            cur = []
    spans += [cur] if cur else []
    # exactly the two assistant replies and their end-of-turn token; no system, user or role-header token
    assert [tok.decode(s) for s in spans] == ["Blue, like the sky.<|im_end|>", "Green.<|im_end|>"]


def _weights_differ(folder: Path) -> bool:
    trained = AutoModelForCausalLM.from_pretrained(folder)
    base = AutoModelForCausalLM.from_pretrained(BASE)
    key = "model.layers.0.self_attn.q_proj.weight"
    return not torch.equal(trained.state_dict()[key], base.state_dict()[key])


@pytest.mark.slow
def test_sft_alone_on_demonstrations_trains_reloads_and_generates(tmp_path):
    data = tmp_path / "demos.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "Say hi."},
                                             {"role": "assistant", "content": "Hi there!"}]}) + "\n" +
                    json.dumps({"prompt": "Count to three.", "completion": "One, two, three."}) + "\n")
    out = tmp_path / "run"
    _run([*SMALL, *_config(tmp_path), "--stages", "sft", "--sft-data", data, "--max-steps", 2, "--output-dir", out],
         tmp_path)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sft"]["steps"] == 2 and summary["sft"]["from_sft_data"] == 2
    assert summary["sft"]["from_revisions"] == 0 and summary["sft"]["base_model"] == "SmolLM2-135M-Instruct"
    assert summary["sft"]["evaluation"]["n"] == 1 and 0.0 <= summary["sft_win_rate"] <= 1.0
    assert summary["models"]["sft"] == "SmolLM2-135M-Instruct"
    assert (out / "stages" / "sft.done").exists() and not list(out.glob(".sft_model*"))
    assert _weights_differ(out / "sft_model")
    from rlaif.engines.hf import HFEngine

    engine = HFEngine(str(out / "sft_model"), "sft", dtype="float32")
    text = engine.generate([[{"role": "user", "content": "Say hi."}]], seed=0, max_new_tokens=6, temperature=0.0,
                           top_p=1.0)[0]
    assert isinstance(text, str) and text.strip()


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


@pytest.mark.slow
def test_kill_during_revise_then_resume_is_identical(tmp_path):
    args = [*SMALL, "--stages", "revise", "--num-prompts", 6, "--batch-size", 2]
    clean, crashed = tmp_path / "clean", tmp_path / "crashed"
    _run([*args, "--output-dir", clean], tmp_path)
    proc = subprocess.Popen(pipeline_cmd(*args, "--output-dir", crashed), cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    path, deadline = crashed / "revisions.jsonl", time.time() + 600
    while _lines(path) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert 2 <= _lines(path) < 6 and not (crashed / "stages" / "revise.done").exists()
    _run([*args, "--output-dir", crashed], tmp_path)
    assert (crashed / "revisions.jsonl").read_bytes() == (clean / "revisions.jsonl").read_bytes()
    assert (crashed / "revision_judgments.jsonl").read_bytes() == (clean / "revision_judgments.jsonl").read_bytes()
    a, b = (json.loads((d / "summary.json").read_text()) for d in (clean, crashed))
    assert a["revision_win_rate"] == b["revision_win_rate"]
    assert b["revise"]["reused"] >= 2 and b["revise"]["revised"] + b["revise"]["unrevised"] == 6
    rows = read_jsonl(clean / "revisions.jsonl")
    assert all(len(r["rounds"]) == 1 and r["rounds"][0]["critique"] for r in rows)


@pytest.mark.slow
def test_cai_recipe_end_to_end_uses_the_sft_model_downstream(tmp_path):
    out = tmp_path / "cai"
    _run([*SMALL, *_config(tmp_path), "--recipe", "cai", "--num-prompts", 3, "--max-steps", 1, "--pairs-from",
          "revisions", "--trust-revisions", "--output-dir", out], tmp_path, timeout=1500)
    summary = json.loads((out / "summary.json").read_text())
    sft = str((out / "sft_model").resolve())
    assert summary["models"]["generate"] == summary["models"]["reward"] == summary["models"]["policy"] == sft
    assert summary["models"]["revise"] == summary["models"]["sft"] == "SmolLM2-135M-Instruct"
    assert summary["generate"]["model"] == sft
    assert read_jsonl(out / "pairs.jsonl")[0]["generator"].startswith(f"hf:local:{sft}@")
    assert summary["preferences"]["pairs_from"] == "revisions"
    assert summary["preferences"]["kept"] == summary["revise"]["revised"]
    for stage in ("revise", "sft", "generate", "judge", "preferences", "reward", "policy"):
        assert (out / "stages" / f"{stage}.done").exists(), stage
    page = (out / "report.html").read_text()
    assert "revision_win_rate" in page and "sft_win_rate" in page
