"""Run configuration: one dataclass per stage plus RunConfig. YAML first, then CLI overrides.

Every field has a help string. Defaults are chosen for a 2-core CPU and the embedded model; where a
default differs from the upstream library's, the help says so. Unknown keys raise.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from rlaif.errors import RlaifError

EMBEDDED_MODEL = "SmolLM2-135M-Instruct"
STAGES = ("generate", "judge", "preferences", "reward", "policy")


def _f(default, help: str, **kw):
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class GenerateConfig:
    model: str = _f(EMBEDDED_MODEL, "Policy model: the embedded default's name, a local folder, a hub id, or openai:NAME.")
    base_url: str | None = _f(None, "Base URL of an OpenAI-compatible endpoint when model is openai:NAME.")
    num_prompts: int = _f(32, "How many prompts to take from the prompt file (0 = all).")
    prompts: str | None = _f(None, "Prompt file (.jsonl with a `prompt` field, or .txt, one per line). Default: data/prompts/safety.jsonl.")
    max_new_tokens: int = _f(64, "Tokens sampled per response.")
    temperature: float = _f(0.8, "Sampling temperature.")
    top_p: float = _f(0.95, "Nucleus sampling threshold (no top-k cut on any engine).")
    batch_size: int | None = _f(None, "Prompts generated together; pairs.jsonl is appended batch by batch. "
                                "Default: the engine's (64 for vllm, 32 otherwise).")


@dataclass
class JudgeConfig:
    model: str = _f(EMBEDDED_MODEL, "Judge model: the embedded default's name, a local folder, a hub id, or openai:NAME.")
    base_url: str | None = _f(None, "Base URL of an OpenAI-compatible endpoint when model is openai:NAME.")
    max_new_tokens: int = _f(96, "Tokens the chain-of-thought judge may write as its rationale, before the verdict turn.")
    batch_size: int | None = _f(None, "Judgments scored and appended to the cache together (HF runs them in "
                                "length-bucketed forward passes). Default: the engine's (64 for vllm, 32 otherwise).")
    concurrency: int = _f(8, "Requests in flight at once against an OpenAI-compatible endpoint.")


@dataclass
class PreferencesConfig:
    min_margin: float = _f(0.0, "Keep a pair when |score - 0.5| > min_margin. 0 keeps every pair the judge did not tie.")


@dataclass
class TrainConfig:
    algo: str = _f("dpo", "Policy algorithm: dpo (trl DPOTrainer), ppo (trl PPO), rloo (trl RLOOTrainer).")
    max_steps: int = _f(8, "Optimizer steps per trainer (reward and policy).")
    learning_rate: float = _f(5e-6, "Learning rate (trl's DPO default is 1e-6; a short CPU run needs more).")
    beta: float = _f(0.1, "KL coefficient for DPO/RLOO (and PPO's kl_coef).")
    batch_size: int = _f(2, "Per-device train batch size.")
    max_length: int = _f(384, "Truncate prompt+response to this many tokens.")
    eval_fraction: float = _f(0.25, "Share of preference pairs held out to evaluate the reward model.")
    eval_prompts: int = _f(8, "Held-out prompts for the policy win rate and reward means.")
    report_to: str = _f("none", "Logging backend passed to trl: none, tensorboard or wandb.")
    threads: int = _f(0, "torch threads; 0 = one per physical core up to 2 (one is often faster on a busy 2-core machine).")


@dataclass
class RunConfig:
    constitution: str = _f("safety.yaml", "Constitution file: a bare name resolves to constitutions/NAME.")
    output_dir: str | None = _f(None, "Run folder. Default: runs/<constitution name>-<UTC timestamp>.")
    seed: int = _f(0, "Seed for sampling, principle draws and splits.")
    engine: str = _f("auto", "auto | hf | vllm. auto picks vllm when CUDA and vllm are both available.")
    stages: list = _f(list(STAGES), "Stages to run, in order.")
    dtype: str = _f("auto", "auto | float32 | bfloat16 | float16. auto: bf16 on CUDA; on CPUs with native bf16 (AVX512-BF16/AMX) "
                    "the faster of fp32 and bf16, measured at engine start and cached (HF engine; vLLM takes bf16); else fp32.")
    trust_remote_code: bool = _f(False, "Allow model repositories to run their own code. Off unless asked.")
    tensor_parallel_size: int = _f(1, "vLLM tensor parallelism.")
    data_parallel_size: int = _f(1, "vLLM data parallelism.")
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    preferences: PreferencesConfig = field(default_factory=PreferencesConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def _check_type(value, annotation: str, where: str, key: str):
    expected = {"int": int, "float": (int, float), "bool": bool, "str": str, "list": list}
    base = annotation.replace(" | None", "")
    if value is None and "None" in annotation:
        return value
    want = expected.get(base)
    if want is None:
        return value
    if base in ("int", "float") and isinstance(value, bool) or not isinstance(value, want):
        raise RlaifError(f"`{key}` must be {base}, got {type(value).__name__} {value!r}", where,
                         f"set `{key}` to a {base}")
    return float(value) if base == "float" else value


def from_dict(cls, data: dict, where: str, prefix: str = ""):
    """Build `cls` from a dict, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise RlaifError(f"`{prefix or 'config'}` must be a mapping", where, "use `key: value` lines")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if key not in fields:
            raise RlaifError(f"unknown key `{name}`", where, f"valid keys: {', '.join(fields)}")
        f = fields[key]
        if dataclasses.is_dataclass(f.default_factory if f.default_factory is not dataclasses.MISSING else None):
            kwargs[key] = from_dict(f.default_factory, value, where, f"{name}.")
        else:
            kwargs[key] = _check_type(value, str(f.type), where, name)
    return cls(**kwargs)


def load(path: str | None) -> RunConfig:
    if path is None:
        return RunConfig()
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise RlaifError("config file not found", str(p), "pass an existing --config file") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark else str(p)
        raise RlaifError(f"YAML syntax error: {getattr(e, 'problem', e)}", where, "fix the YAML syntax") from None
    return from_dict(RunConfig, data, str(p))


def to_dict(cfg: RunConfig) -> dict:
    return dataclasses.asdict(cfg)
