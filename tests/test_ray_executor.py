"""--executor ray: the same files as one process, on the embedded model over a local Ray cluster of 2 replicas
(1 torch thread each), and after faults: the driver killed with -9 then rerun, one replica's worker killed."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import pipeline_cmd

pytestmark = pytest.mark.slow  # each test runs the pipeline in subprocesses, most on a Ray cluster
ON_CLUSTER = pytest.mark.xdist_group("ray")  # one cluster for the module: its tests on one worker

FILES = ("pairs.jsonl", "judgments.jsonl", "cache/judgments.jsonl",
         "preferences.jsonl")
# fp32 (the byte-for-byte promise is made there); small batches so that every stage has several blocks
RUN = ("--constitution", "safety.yaml", "--num-prompts", 8, "--max-new-tokens", 8, "--dtype", "float32", "--seed", 3,
       "--batch-size", 2, "--judge-batch-size", 1, "--eval-prompts", 0)
# the test cluster's own token (Ray 2.60 turns token authentication on for a new cluster): nothing read from or
# written to ~/.ray
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": uuid.uuid4().hex}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass(frozen=True)
class Cluster:
    address: str
    head: int  # the pid of `ray start --block`, an ancestor of every process of the cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A local Ray cluster with 2 CPUs: what --ray-address joins. `ray start --block` stays the parent of the
    cluster's processes; stopping it, then killing what is left of its children, stops this cluster only (`ray stop`
    would stop every Ray cluster on the machine, a user's own or another test worker's)."""
    pytest.importorskip("ray", reason="the ray extra is not installed")
    temp = Path("/tmp") / f"rlaif-ray-{os.getpid()}"  # Ray's socket paths must stay short
    port = _free_port()
    ray_bin = Path(sys.executable).with_name("ray")
    log = tmp_path_factory.mktemp("ray-head") / "head.log"
    with log.open("w") as out:
        head = subprocess.Popen([str(ray_bin), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
                                 "--num-gpus=0", "--include-dashboard=false", f"--temp-dir={temp}",
                                 "--disable-usage-stats"], stdout=out, stderr=subprocess.STDOUT, env=ENV,
                                start_new_session=True)
    try:
        deadline = time.time() + 180
        while "Ray runtime started" not in log.read_text():
            assert head.poll() is None and time.time() < deadline, log.read_text()[-2000:]
            time.sleep(0.1)
        yield Cluster(f"127.0.0.1:{port}", head.pid)
    finally:
        import psutil

        ours = psutil.Process(head.pid).children(recursive=True) if head.poll() is None else []
        head.terminate()  # the head stops its own processes; what is left after a while is killed
        _, alive = psutil.wait_procs(ours, timeout=3)
        for proc in [*alive, head]:
            with contextlib.suppress(psutil.Error, ProcessLookupError):
                proc.kill()
        head.wait()
        shutil.rmtree(temp, ignore_errors=True)


def _run(out: Path, *extra, stages="generate,judge,preferences", cwd=None):
    proc = subprocess.run(pipeline_cmd(*RUN, "--stages", stages, "--output-dir", out, *extra), capture_output=True,
                          text=True, env=ENV, cwd=cwd or out.parent, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _ray(cluster: Cluster, replicas=2, cpus=1):
    return ("--executor", "ray", "--ray-address", cluster.address, "--ray-replicas", replicas,
            "--ray-cpus-per-replica", cpus)


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """The reference: the local executor, same seed and settings."""
    out = tmp_path_factory.mktemp("local") / "run"
    _run(out)
    return out


def _same_files(a: Path, b: Path, names=FILES):
    for name in names:
        assert (b / name).read_bytes() == (a / name).read_bytes(), f"{name} differs from the local executor's"


@ON_CLUSTER
@pytest.mark.parametrize("replicas, cpus", [(2, 1), (3, 0.5)])
def test_replicas_write_the_local_files_byte_for_byte(cluster, local, tmp_path, replicas, cpus):
    out = tmp_path / "run"
    proc = _run(out, *_ray(cluster, replicas, cpus))
    _same_files(local, out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["judge"]["judged"] == summary["judge"]["judgments"] > 0  # all of it judged on the replicas
    assert summary["judge"]["engine"]["replicas"] == replicas and summary["judge"]["engine"]["executor"] == "ray"
    here = json.loads((local / "summary.json").read_text())
    assert summary["generate"]["completion_tokens"] == here["generate"]["completion_tokens"] > 0  # replicas' counts
    assert f"judge ({replicas} replicas)" in proc.stderr  # its own progress bar


def _lines(path: Path) -> list[bytes]:
    try:
        return path.read_bytes().splitlines(keepends=True)
    except FileNotFoundError:
        return []


def _wait(proc, path: Path, n: int) -> list[bytes]:
    """Wait until `path` has at least n lines (proc still running); return them."""
    deadline = time.time() + 600
    while len(lines := _lines(path)) < n:
        assert proc.poll() is None, proc.stderr.read()[-3000:].decode()
        assert time.time() < deadline
        time.sleep(0.02)
    return lines


def _replica_pids(cluster: Cluster, want: int) -> list[int]:
    """This cluster's Ray Data actors holding a replica's engine (their process title names the map_batches
    callable)."""
    import psutil

    def ours(proc) -> bool:
        cmdline = " ".join(proc.info["cmdline"] or [])
        try:
            return (cmdline.startswith("ray::") and "Replica" in cmdline
                    and any(parent.pid == cluster.head for parent in proc.parents()))
        except psutil.Error:  # gone meanwhile
            return False

    deadline = time.time() + 60
    while True:
        pids = [p.info["pid"] for p in psutil.process_iter(["pid", "cmdline"]) if ours(p)]
        if len(pids) >= want or time.time() > deadline:
            return pids
        time.sleep(0.05)


def _no_replicas_left(cluster: Cluster) -> None:
    """Wait until a killed driver's actors are gone (Ray stops an owner's actors when the owner dies)."""
    deadline = time.time() + 60
    while _replica_pids(cluster, 0) and time.time() < deadline:
        time.sleep(0.1)
    assert not _replica_pids(cluster, 0), "the killed driver's replicas are still alive"


@ON_CLUSTER
def test_a_killed_driver_then_a_killed_replica_lose_and_duplicate_nothing(cluster, local, tmp_path):
    """The judge stage, all of it to do (the local run's pairs, an empty cache). The driver is killed with -9 as
    soon as its first block is stored: the cache is a prefix of the local run's. The rerun does only the missing
    work, and mid-rerun one replica's worker is killed: Ray restarts it and retries its block, and the driver goes
    on appending blocks in order, so the rerun ends with the local run's files (nothing lost, nothing twice).
    (Killing the driver first: after a replica's death the other replica's blocks wait for the retried one and are
    then stored at once, so a driver killed after it can find the stage already done.)"""
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(local / "pairs.jsonl", out / "pairs.jsonl")
    expected = _lines(local / "judgments.jsonl")
    reference = _lines(local / "cache" / "judgments.jsonl")
    assert len(reference) == len(expected) >= 12  # every judgment its own text: one cache record each
    cache = out / "cache" / "judgments.jsonl"
    cmd = pipeline_cmd(*RUN, "--stages", "judge,preferences", "--output-dir", out, *_ray(cluster))
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV, cwd=tmp_path)
    try:
        _wait(proc, cache, 1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
    lines = _lines(cache)
    assert 0 < len(lines) < len(reference), "the driver was killed after the stage had finished"
    assert lines == reference[:len(lines)]  # in order, no gap, no duplicate
    assert not (out / "judgments.jsonl").exists()
    _no_replicas_left(cluster)

    rerun = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV, cwd=tmp_path)
    try:
        _wait(rerun, cache, len(lines) + 1)  # the replicas are at work
        pids = _replica_pids(cluster, 2)
        assert pids, "no replica process found"
        os.kill(pids[0], signal.SIGKILL)
        assert len(_lines(cache)) < len(reference), "the replica was killed after the stage had finished"
        _, err = rerun.communicate(timeout=900)
    finally:
        rerun.kill()
    assert rerun.returncode == 0, err[-4000:].decode()
    judge = json.loads((out / "summary.json").read_text())["judge"]
    assert judge["judged"] == len(reference) - len(lines) and judge["reused"] == len(lines)  # only the missing work
    assert _lines(cache) == reference
    _same_files(local, out, ("judgments.jsonl", "preferences.jsonl"))
    print(f"ray faults: {len(lines)} of {len(reference)} cache rows stored when the driver was killed; the rerun judged "
          f"{judge['judged']} and reused {judge['reused']}; {len(_lines(cache))} rows after it, the local run's")  # -s


def test_without_ray_installed_one_line_and_exit_2(tmp_path):
    shadow = tmp_path / "shadow" / "ray"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named ray', name='ray')\n")
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(shadow.parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(pipeline_cmd("--constitution", "safety.yaml", "--executor", "ray", "--output-dir",
                                       tmp_path / "run"), capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "rlaif[ray]" in lines[0] and "--executor ray" in lines[0], proc.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("address, says", [("127.0.0.1:{port}", "cannot reach a Ray cluster"),
                                           ("no-port", "not a Ray cluster address")])
def test_an_address_with_no_cluster_is_one_line_and_exit_2(tmp_path, address, says):
    pytest.importorskip("ray", reason="the ray extra is not installed")
    address = address.format(port=_free_port())  # nothing listens there
    proc = subprocess.run(pipeline_cmd("--constitution", "safety.yaml", "--executor", "ray", "--ray-address", address,
                                       "--output-dir", tmp_path / "run"), capture_output=True, text=True, env=ENV,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and "--ray-address" in lines[0], proc.stderr
    assert not (tmp_path / "run").exists()


@ON_CLUSTER
@pytest.mark.parametrize("extra, says", [(("--ray-gpus-per-replica", 1), "2 replicas of 1 GPUs each do not fit"),
                                         (("--ray-replicas", 3), "3 replicas of 1 CPUs each do not fit")])
def test_replicas_the_cluster_cannot_hold_are_one_line_and_exit_2(cluster, tmp_path, extra, says):
    """The test cluster has 2 CPUs and no GPU: Ray would wait for such replicas for ever; we stop first, with one line
    naming the flags, and nothing written."""
    proc = subprocess.run(pipeline_cmd(*RUN, "--stages", "generate,judge", "--output-dir", tmp_path / "run",
                                       *_ray(cluster), *extra), capture_output=True, text=True, env=ENV, cwd=tmp_path,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert says in lines[0] and "--ray-replicas/--ray-" in lines[0] and "fix:" in lines[0], proc.stderr
    assert not (tmp_path / "run").exists()
