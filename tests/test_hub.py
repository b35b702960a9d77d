"""Hub ids download when the network does (issue 22, point 6): the command no longer forces HF_HUB_OFFLINE=1, the
embedded default never touches the hub, and a hub id that cannot be had is one line and exit 2, quickly."""

import os
import socket
import subprocess
import threading
import time

import pytest

from conftest import pipeline_cmd
from rlaif.errors import RlaifError


@pytest.fixture
def listener():
    """A local port that notes the first line of every request and hangs up: an HF_ENDPOINT that shows whether
    anything called the hub."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.settimeout(0.1)
    seen, stop = [], threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            try:
                conn.settimeout(1)
                seen.append(conn.recv(4096).decode(errors="replace").split("\r\n")[0])
            except OSError:
                seen.append("(no request line)")
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", seen
    stop.set()
    thread.join(2)
    sock.close()


def _env(tmp_path, endpoint: str, **extra) -> dict:
    """The test's environment without HF_HUB_OFFLINE (the command's own default applies), the hub at `endpoint`
    and an empty Hugging Face cache."""
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(tmp_path / "hf-home"), HF_HUB_ETAG_TIMEOUT="3",
               HF_HUB_DOWNLOAD_TIMEOUT="3", OMP_NUM_THREADS="1", **extra)
    return env


def _one_line(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("rlaif: error: "), proc.stderr
    return lines[0]


def _hub_run(tmp_path, prompts_file, env):
    t = time.monotonic()
    proc = subprocess.run(pipeline_cmd("--policy-model", "org/model", "--judge-model", "org/model", "--prompts",
                                       prompts_file, "--output-dir", tmp_path / "run", "--stages", "generate,judge"),
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    return proc, time.monotonic() - t


def test_a_hub_id_that_cannot_download_is_one_line_quickly(tmp_path, prompts_file):
    """Nothing listens on port 9: one line that names the model, HF_HUB_OFFLINE and local folders; no retries."""
    proc, seconds = _hub_run(tmp_path, prompts_file, _env(tmp_path, "http://127.0.0.1:9", HF_HUB_OFFLINE="0"))
    line = _one_line(proc)
    assert "cannot download hub model 'org/model'" in line and "HF_HUB_OFFLINE" in line and "local model folder" in line
    assert seconds < 20, seconds  # huggingface_hub's own retries alone take about 25 s
    assert not (tmp_path / "run").exists()


def test_the_command_tries_the_hub_unless_told_not_to(tmp_path, prompts_file, listener):
    """With HF_HUB_OFFLINE unset the hub id is asked for (the command used to set HF_HUB_OFFLINE=1 itself)."""
    endpoint, seen = listener
    proc, _ = _hub_run(tmp_path, prompts_file, _env(tmp_path, endpoint))
    assert "HF_HUB_OFFLINE" in _one_line(proc)
    assert any("/org/model/resolve/main/config.json" in r for r in seen), seen


def test_offline_and_not_cached_names_hf_hub_offline(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from rlaif import models

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(RlaifError, match="not in the local Hugging Face cache, and HF_HUB_OFFLINE=1") as e:
        models.require("org/model")
    assert "local model folder" in e.value.line()


def test_the_embedded_model_never_touches_the_hub(tmp_path, mini_constitution, listener):
    """Online (HF_HUB_OFFLINE unset), a run on the embedded default generates and judges without one request to
    HF_ENDPOINT."""
    endpoint, seen = listener
    (tmp_path / "one.txt").write_text("How do I bake bread?\n")
    proc = subprocess.run(pipeline_cmd("--constitution", mini_constitution, "--prompts", tmp_path / "one.txt",
                                       "--num-prompts", 1, "--max-new-tokens", 4, "--eval-prompts", 0, "--engine", "hf",
                                       "--dtype", "float32", "--stages", "generate,judge", "--output-dir", tmp_path / "run"),
                          cwd=tmp_path, env=_env(tmp_path, endpoint), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "run" / "judgments.jsonl").stat().st_size > 0
    assert seen == []
