"""`gpu_check.py --cli`: the real command line on two random models, a small policy and a larger judge.

All five stages through `pipeline.py`, the reward and policy stages again with PPO and RLOO, a kill -9 in the
middle of judging and a resume compared byte for byte with the clean run, and `agreement` on HH-RLHF rows.
Each stage's seconds and peak memory are printed; the last line is OK or FAILED.

Peak memory: `peak_gpu_mib` is torch.cuda.max_memory_allocated inside the pipeline process, reset between
stages (summary.json); `device_mib` is the GPU memory in use on the whole device (every process, vLLM workers
included) sampled from outside, above what was in use before; on CPU `rss_mib` is the RSS of the pipeline's
process tree (psutil), sampled the same way.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WHEELS = ROOT / ".whl"  # filled by scripts/gpu_wheels.sh, carried to the GPU machine
HH = "hh-rlhf-harmless-base-test.jsonl.gz"
SIZES = {  # full: the GPU check; small: the CPU test (about 1-2 minutes on 2 cores)
    "full": dict(prompts=32, new_tokens=32, steps=2, judge_batch=4, eval_prompts=8, hh=300, kill_at=20,
                 policy=(256, 688, 4, 4, 2), judge=(768, 2048, 8, 12, 4)),
    "small": dict(prompts=6, new_tokens=8, steps=1, judge_batch=2, eval_prompts=2, hh=6, kill_at=2,
                  policy=(64, 128, 2, 2, 1), judge=(128, 256, 2, 4, 2)),
}
OUTPUTS = ("pairs.jsonl", "judgments.jsonl", "preferences.jsonl")
STAGES = ("generate", "judge", "preferences", "reward", "policy")


def ensure_packages() -> None:
    """Install the carried wheels (trl, datasets, transformers 5.19) when trl or datasets is missing, then
    start again with them on PYTHONPATH, so this process and every pipeline.py it starts see them."""
    import importlib.util

    if importlib.util.find_spec("trl") and importlib.util.find_spec("datasets"):
        return
    wheels = sorted(str(w) for w in WHEELS.glob("*.whl"))
    if not wheels or os.environ.get("RLAIF_GPU_CHECK_INSTALLED"):
        sys.exit("gpu_check: trl or datasets is missing and there are no wheels in .whl/ "
                 "(run scripts/gpu_wheels.sh where pip works, and carry .whl); FAILED")
    target = Path(tempfile.gettempdir()) / "rlaif-site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--no-cache-dir", "--upgrade", "--target", str(target), *wheels], check=True)
    env = {**os.environ, "RLAIF_GPU_CHECK_INSTALLED": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(target), os.environ.get("PYTHONPATH")]))}
    print(f"gpu_check: installed {len(wheels)} wheels from .whl into {target}", flush=True)
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def find_tokenizer(given: str | None) -> str | None:
    """A tokenizer folder: the one given, the copy gpu_wheels.sh carried, or the embedded model's; None means
    tiny_tokenizer.build_tokenizer trains a small one here (no files needed)."""
    from rlaif.models import cache_dir

    for folder in (given, WHEELS / "tokenizer", cache_dir() / "SmolLM2-135M-Instruct-fp32"):
        if folder and (Path(folder) / "tokenizer.json").is_file():
            return str(folder)
    return None


def find_hh(given: str | None) -> Path | None:
    for path in (given, ROOT.parent / "shared" / "data" / HH, WHEELS / "data" / HH):
        if path and Path(path).is_file():
            return Path(path)
    return None


def build_model(tok, dims, folder: Path) -> int:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging

    logging.disable_progress_bar()  # keep the check's output to its figures
    hidden, inter, layers, heads, kv = dims
    torch.manual_seed(len(folder.name))
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=2048,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                         tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


class Sampler(threading.Thread):
    """Samples memory in use (device-wide GPU memory, or the RSS of a process tree) every 0.1 s, and the
    peak per stage, a stage ending where the pipeline prints `rlaif: STAGE: ...`."""

    def __init__(self, pid: int, gpu: bool):
        super().__init__(daemon=True)
        self.pid, self.gpu, self.stop = pid, gpu, threading.Event()
        self.current, self.peaks, self.base = 0.0, {}, used_mib(None, gpu)

    def run(self):
        while not self.stop.wait(0.1):
            value = used_mib(self.pid, self.gpu) - (self.base if self.gpu else 0)
            self.current = max(self.current, value)

    def stage_ended(self, stage: str):
        self.peaks[stage], self.current = self.current, 0.0


def used_mib(pid: int | None, gpu: bool) -> float:
    if gpu:
        import torch

        free, total = torch.cuda.mem_get_info()
        return (total - free) / 2**20
    if pid is None:
        return 0.0
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def pipeline(args: list, log: Path, gpu: bool, kill_when=None) -> tuple[int, dict, float]:
    """Run pipeline.py; returns (exit status, peak memory per stage, seconds). kill_when(): True -> kill -9."""
    t = time.time()
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, str(ROOT / "pipeline.py"), *map(str, args)], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
        sampler = Sampler(proc.pid, gpu)
        sampler.start()
        if kill_when:
            def watch():
                while proc.poll() is None:
                    if kill_when():
                        os.killpg(proc.pid, signal.SIGKILL)  # the pipeline and any engine worker
                        return
                    time.sleep(0.01)
            threading.Thread(target=watch, daemon=True).start()
        for line in proc.stderr:
            err.write(line)
            head = line.split(":")
            if len(head) > 2 and head[0] == "rlaif" and head[1].strip() in STAGES and "=" in line:
                sampler.stage_ended(head[1].strip())
        proc.wait()
        sampler.stop.set()
        sampler.join()
        if "agreement" in args:
            sampler.stage_ended("agreement")
    return proc.returncode, sampler.peaks, time.time() - t


def report(name: str, rc: int, peaks: dict, seconds: float, run_dir: Path, log: Path, gpu: bool,
           expected: int = 0) -> bool:
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").is_file() else {}
    unit = "device_mib" if gpu else "rss_mib"
    print(f"{name}: exit {rc}, {seconds:.1f} s", flush=True)
    for stage, peak in peaks.items():
        info = summary.get(stage, {}) if isinstance(summary.get(stage), dict) else {}
        extra = f", peak_gpu_mib {info['peak_gpu_mib']}" if "peak_gpu_mib" in info else ""
        secs = info.get("seconds", "-")
        print(f"  {stage:<12} {secs:>7} s{extra}, {unit} {peak:.0f}", flush=True)
    if rc != expected:
        print("".join(log.read_text().splitlines(keepends=True)[-15:]), flush=True)
    return rc == expected


def changed(base: Path, trained: Path) -> bool:
    import torch
    from safetensors.torch import load_file

    a = {k: v for f in base.glob("*.safetensors") for k, v in load_file(f).items()}
    b = {k: v for f in trained.glob("*.safetensors") for k, v in load_file(f).items()}
    return any(not torch.equal(a[k].float(), b[k].float()) for k in a if k in b)


def main(args) -> int:
    ensure_packages()
    import torch

    from tiny_tokenizer import build_tokenizer

    gpu = torch.cuda.is_available() and not args.cpu
    size = SIZES[args.size]
    work = Path(args.work or tempfile.mkdtemp(prefix="gpu_check_cli-"))
    work.mkdir(parents=True, exist_ok=True)
    device = torch.cuda.get_device_name(0) if gpu else "CPU"
    import transformers

    print(f"gpu_check --cli: {device}, torch {torch.__version__}, transformers {transformers.__version__}, "
          f"size {args.size}, work {work}", flush=True)
    tok_dir = find_tokenizer(args.tokenizer)
    tok = build_tokenizer(tok_dir)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    policy, judge = work / "policy-model", work / "judge-model"
    n_policy, n_judge = build_model(tok, size["policy"], policy), build_model(tok, size["judge"], judge)
    print(f"models: policy {n_policy / 1e6:.1f}M, judge {n_judge / 1e6:.1f}M parameters; tokenizer "
          f"{tok_dir or 'trained here'} ({len(tok)} tokens)", flush=True)
    (work / "cfg.yaml").write_text(f"judge:\n  batch_size: {size['judge_batch']}\ntrain:\n  batch_size: 2\n"
                                   f"  max_length: 128\n  eval_prompts: {size['eval_prompts']}\n")
    common = ["--constitution", "safety.yaml", "--policy-model", policy, "--judge-model", judge,
              "--config", work / "cfg.yaml", "--num-prompts", size["prompts"], "--max-new-tokens", size["new_tokens"],
              "--max-steps", size["steps"], *(["--engine", "hf"] if not gpu else [])]
    ok = True

    def step(name, run_dir, extra, kill_when=None):
        rc, peaks, seconds = pipeline([*common, "--output-dir", run_dir, *extra], work / f"{name}.log", gpu, kill_when)
        expected = -signal.SIGKILL if kill_when else 0
        return rc, report(name, rc, peaks, seconds, run_dir, work / f"{name}.log", gpu, expected)

    clean = work / "run-dpo"
    ok &= step("all five stages (dpo)", clean, [])[1]
    ok &= changed(policy, clean / "policy") if (clean / "policy").is_dir() else False
    for algo in ("ppo", "rloo"):
        folder = work / f"run-{algo}"
        if clean.is_dir():
            shutil.copytree(clean, folder, ignore=shutil.ignore_patterns("reward_model", "policy"))
        ok &= step(f"reward,policy --algo {algo}", folder, ["--stages", "reward,policy", "--algo", algo])[1]
        weights = (folder / "policy").is_dir() and changed(policy, folder / "policy")
        print(f"  {algo} policy weights changed: {weights}", flush=True)
        ok &= weights
    # d-RLAIF: GRPO with the judge as the online reward, its engine alive through training (this step's peak memory
    # is with the judge and the policy both loaded)
    folder = work / "run-grpo-judge"
    if clean.is_dir():
        shutil.copytree(clean, folder, ignore=shutil.ignore_patterns("reward_model", "policy"))
    ok &= step("policy --algo grpo --reward judge", folder,
               ["--stages", "policy", "--algo", "grpo", "--reward", "judge", "--max-steps", 2])[1]
    policy_info = (json.loads((folder / "summary.json").read_text()).get("policy", {})
                   if (folder / "summary.json").is_file() else {})
    calls = policy_info.get("reward_calls", 0)
    print(f"  judge ratings during training: reward_calls {calls}, cache hits {policy_info.get('reward_cache_hits')}, "
          f"{policy_info.get('reward_seconds')} s", flush=True)
    ok &= calls > 0

    resumed = work / "run-killed"
    cache = resumed / "cache" / "judgments.jsonl"
    lines = lambda: cache.read_bytes().count(b"\n") if cache.is_file() else 0  # noqa: E731
    stages = ["--stages", "generate,judge,preferences"]
    rc, _ = step("killed during judging", resumed, stages, kill_when=lambda: lines() >= size["kill_at"])
    total = sum(1 for _ in open(clean / "judgments.jsonl")) if (clean / "judgments.jsonl").is_file() else 0
    at_kill = lines()
    mid = rc == -signal.SIGKILL and 0 < at_kill < total and not (resumed / "stages" / "judge.done").exists()
    print(f"  killed with {at_kill} of {total} judgments in the cache: {'mid-judging' if mid else 'NOT mid-judging'}")
    rc, good = step("resumed", resumed, stages)
    same = {name: (resumed / name).is_file() and (resumed / name).read_bytes() == (clean / name).read_bytes()
            for name in OUTPUTS}
    reused = [ln for ln in (work / "resumed.log").read_text().splitlines() if "judgments from the cache" in ln]
    print(f"  identical to the clean run: {same}; {reused[0].strip() if reused else 'no reuse line'}", flush=True)
    ok &= mid and good and all(same.values())

    hh = find_hh(args.human)
    if hh is None:
        print(f"agreement: {HH} not found (pass --human, or run scripts/gpu_wheels.sh); FAILED", flush=True)
        ok = False
    else:
        out = work / "agreement"
        rc, peaks, seconds = pipeline(["agreement", "--constitution", "safety.yaml", "--judge-model", judge,
                                       "--human", hh, "--limit", size["hh"], "--skip-bad-rows", "--output-dir", out,
                                       *(["--engine", "hf"] if not gpu else [])], work / "agreement.log", gpu)
        ok &= report(f"agreement ({size['hh']} HH rows)", rc, peaks, seconds, out, work / "agreement.log", gpu)
        ok &= (out / "agreement.json").is_file()
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    print("OK" if ok else "FAILED", flush=True)
    return 0 if ok else 1
