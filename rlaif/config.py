"""Every setting, declared once: one dataclass per stage plus RunConfig, and the options of the subcommands.

Each field is one setting with its help string. The command line (rlaif/cli/flags.py), `--config` YAML and
`python -m rlaif.cli.train_entry` are all built from these fields. A field's flag is `flag=` when given, else
`--` + its section's `flag_prefix` (default: the section's name and a dash; "" for generate, preferences and
train) + the field name with dashes. `choices=` and `minimum=` are checked for YAML and flags alike.
Defaults are chosen for a 2-core CPU and the embedded model; where a default differs from the upstream
library's, the help says so. Unknown keys raise.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import yaml

from rlaif.errors import RlaifError

EMBEDDED_MODEL = "SmolLM2-135M-Instruct"
STAGES = ("revise", "sft", "generate", "judge", "preferences", "reward", "policy")  # every stage, in run order
DEFAULT_STAGES = ("generate", "judge", "preferences", "reward", "policy")
DEFAULT_MAX_STEPS = 8  # train.max_steps when neither it nor train.num_train_epochs is given
RECIPES = {"cai": STAGES}  # Constitutional AI: critique-and-revision, SFT on the revisions, then the RL phase


def _f(default, help: str, flag: str | None = None, choices=None, minimum=None, **meta):
    """One setting: default, help, and optionally its flag name, allowed values and smallest value.
    Other keywords go into the metadata too: run_only (no flag on the subcommands), required, positional."""
    metadata = {"help": help, **{k: v for k, v in (("flag", flag), ("choices", choices), ("minimum", minimum))
                                  if v is not None}, **meta}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class GenerateConfig:
    flag_prefix: ClassVar[str] = ""
    model: str = _f(EMBEDDED_MODEL, "Policy model: the embedded default's name, a local folder, a hub id, or openai:NAME.",
                    flag="--policy-model")
    base_url: str | None = _f(None, "Base URL of an OpenAI-compatible endpoint when model is openai:NAME.",
                              flag="--policy-base-url")
    num_prompts: int = _f(32, "How many prompts to take from the prompt file (0 = all).", minimum=0)
    prompts: str | None = _f(None, "Prompt file (.jsonl with a `prompt` field, or .txt, one per line). Default: data/prompts/safety.jsonl.")
    max_new_tokens: int = _f(64, "Tokens sampled per response.", minimum=1)
    temperature: float = _f(0.8, "Sampling temperature.")
    top_p: float = _f(0.95, "Nucleus sampling threshold (no top-k cut on any engine).")
    batch_size: int | None = _f(None, "Prompts generated together; pairs.jsonl is appended batch by batch. "
                                "Default: the engine's (64 for vllm, 32 otherwise).", minimum=1)
    samples_per_prompt: int = _f(2, "Responses sampled per prompt (K). 2: one pair per prompt, in pairs.jsonl. More: "
                                 "every sample goes to samples.jsonl, --pairing picks the pairs that are judged, and "
                                 "the preferences stage ranks each prompt's samples (see --keep).", minimum=2)
    pairing: str = _f("all", "With samples_per_prompt K > 2, which pairs of a prompt's samples are judged: all "
                      "(K(K-1)/2 pairs), adjacent (K-1: sample 0 with 1, 1 with 2, ...) or random-M (M pairs drawn "
                      "with --seed).")


@dataclass
class ReviseConfig:
    rounds: int = _f(1, "Critique-and-revision rounds per prompt; each round draws a principle that has critique and "
                     "revision requests (seeded, weighted, as the judge draws).", flag="--revision-rounds", minimum=1,
                     run_only=True)


@dataclass
class SftConfig:
    data: str | None = _f(None, "Your own demonstrations for the sft stage: .jsonl, .json, .parquet or a save_to_disk "
                          "folder, in trl's `messages` or `prompt`/`completion` format; mixed with the revisions.")
    max_steps: int | None = _f(None, "SFT optimizer steps. Default: train.max_steps.", minimum=1)
    learning_rate: float = _f(2e-5, "SFT learning rate (trl's SFTConfig default).")


@dataclass
class JudgeConfig:
    model: str = _f(EMBEDDED_MODEL, "Judge model: the embedded default's name, a local folder, a hub id, openai:NAME, or "
                    "rm:PATH (a reward model: a one-output sequence classifier folder or hub id).")
    base_url: str | None = _f(None, "Base URL of an OpenAI-compatible endpoint when model is openai:NAME.")
    max_new_tokens: int = _f(96, "Tokens the chain-of-thought judge may write as its rationale, before the verdict turn.",
                             minimum=1)
    batch_size: int | None = _f(None, "Judgments scored and appended to the cache together (HF runs them in "
                                "length-bucketed forward passes). Default: the engine's (64 for vllm, 32 otherwise).", minimum=1)
    concurrency: int = _f(8, "Requests in flight at once against an OpenAI-compatible endpoint.", flag="--concurrency",
                          minimum=1)
    device: str | None = _f(None, "Device of the judge's transformers engine (cpu, cuda, cuda:1). With --reward judge it "
                            "stays alive through training, beside the policy. Default: the GPU when there is one.")


@dataclass
class PreferencesConfig:
    flag_prefix: ClassVar[str] = ""
    min_margin: float = _f(0.0, "Keep a pair when |score - 0.5| > min_margin. 0 keeps every pair the judge did not tie.",
                           flag="--margin")
    pairs_from: str = _f("samples", "samples: judged pairs of sampled responses; revisions: revisions.jsonl, chosen = "
                         "final revision, rejected = initial answer (Constitutional AI as in Hugging Face's recipe).",
                         choices=("samples", "revisions"))
    keep: str = _f("best-worst", "With samples_per_prompt > 2: best-worst keeps one preference per prompt, its best "
                   "sample against its worst, ranked by a Bradley-Terry fit of the judged pairs (win counts when a "
                   "prompt has K-1 judged pairs or fewer); all-pairs keeps every judged pair, as with K = 2.",
                   choices=("best-worst", "all-pairs"))
    trust_revisions: bool = _f(False, "With pairs_from revisions: keep every revised pair, not only those the judge, "
                               "scoring both orders, prefers to the initial answer.")


@dataclass
class TrainConfig:
    flag_prefix: ClassVar[str] = ""
    algo: str = _f("dpo", "Policy algorithm: dpo (trl DPOTrainer), ppo (trl PPO), rloo (trl RLOOTrainer), grpo (trl "
                   "GRPOTrainer).", choices=("dpo", "ppo", "rloo", "grpo"))
    reward: str = _f("reward_model", "Reward of the online algorithms: reward_model (the reward stage's model) or, for "
                     "grpo and rloo, judge: every sampled completion rated by the judge (rating mode, 1-9) against the "
                     "principles drawn for its prompt, as direct RLAIF (Lee et al. 2023) does.",
                     choices=("reward_model", "judge"))
    num_generations: int = _f(2, "Completions sampled per prompt by grpo and rloo (the group size; trl's GRPO default is "
                              "8, 2 keeps a CPU step short).", minimum=2)
    rounds: int = _f(1, "Iterative DPO: rounds of generate, judge, preferences and DPO, each round's pairs sampled from "
                     "the policy the round before trained, each round in RUN/rounds/<r>/ (see README, DPO in rounds). "
                     "1: one round, in RUN itself.", minimum=1, run_only=True)
    max_steps: int | None = _f(None, f"Optimizer steps per trainer (reward and policy). Default: {DEFAULT_MAX_STEPS}, "
                               "unless num_train_epochs is given (then the epochs decide; giving both is refused, as "
                               "trl would silently ignore the epochs).", minimum=1)
    num_train_epochs: float | None = _f(None, "Passes over the preference data per trainer (trl's num_train_epochs), "
                                        "used when max_steps is not given.")
    learning_rate: float = _f(5e-6, "Learning rate (trl's DPO default is 1e-6; a short CPU run needs more).")
    beta: float = _f(0.1, "KL coefficient for DPO/RLOO (and PPO's kl_coef).")
    batch_size: int = _f(2, "Per-device train batch size.", flag="--train-batch-size", minimum=1)
    max_length: int = _f(384, "Truncate prompt+response to this many tokens.", minimum=1)
    eval_fraction: float = _f(0.25, "Share of preference pairs held out to evaluate the reward model.")
    eval_prompts: int = _f(8, "Held-out prompts for the policy win rate and reward means.", minimum=0)
    report_to: str = _f("none", "Logging backend passed to trl: none, tensorboard or wandb.",
                        choices=("none", "tensorboard", "wandb"))
    threads: int = _f(0, "torch threads; 0 = one per physical core up to 2 (one is often faster on a busy 2-core machine).",
                      minimum=0)
    save_steps: int = _f(0, "Save a trl checkpoint every N optimizer steps into the run folder's checkpoints/ (the last 2 "
                         "are kept), so that rerunning the same command after a crash resumes. 0 = auto: max_steps // 2, "
                         "at most 500 (HF's default is 500), so the default 8-step stage saves at steps 4 and 8 (500 when "
                         "num_train_epochs decides); -1 = none.",
                         minimum=-1)
    lora_r: int = _f(0, "LoRA rank (peft LoraConfig) for the reward model and the DPO/RLOO/PPO policy; 0 = full training.",
                     minimum=0)
    lora_alpha: int = _f(16, "LoRA alpha (scaling = alpha / r); used when lora_r > 0.", minimum=1)
    lora_target_modules: str = _f("all-linear", "Modules LoRA adapts: comma-separated names such as q_proj,v_proj, or "
                                  "all-linear (every linear layer but the output head); used when lora_r > 0.")
    gradient_accumulation_steps: int = _f(1, "Batches accumulated per optimizer step (trl's gradient_accumulation_steps).",
                                          minimum=1)
    warmup_steps: float = _f(0.0, "Linear learning-rate warmup: a number of steps (>= 1) or a share of the training steps (0-1).",
                             minimum=0)
    loss_type: str = _f("sigmoid", "DPO loss (trl DPOConfig.loss_type): sigmoid (DPO's own), hinge, ipo, exo_pair, "
                        "nca_pair, robust, bco_pair, sppo_hard, aot, apo_zero, apo_down, discopop, sft or sigmoid_norm.",
                        choices=("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard",
                                 "aot", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm"))
    trl: dict = _f({}, "Any field of the trl config a stage builds (RewardConfig, DPOConfig, RLOOConfig, PPOConfig, "
                   "SFTConfig), passed as is: --trl KEY=VALUE (repeatable; VALUE read as YAML) or train.trl: {KEY: "
                   "VALUE}. A key goes to each of the run's configs that has that field, and wins over the value the "
                   "project sets, from its own settings or defaults. Unknown keys are refused.", flag="--trl")


@dataclass
class RayConfig:
    replicas: int = _f(2, "With --executor ray: engine replicas (Ray actors) that generate, judge and revise side by side; "
                       "each holds one engine.", minimum=1)
    gpus_per_replica: float = _f(0.0, "With --executor ray: GPUs each replica asks Ray for (its actor's num_gpus); "
                                 "set tensor_parallel_size to match for a vLLM engine over several GPUs.", minimum=0)
    cpus_per_replica: float = _f(1.0, "With --executor ray: CPUs each replica asks Ray for; also its torch threads "
                                 "(rounded down, at least 1).", minimum=0)
    address: str | None = _f(None, "With --executor ray: the cluster to join (auto, or HOST:PORT). Default: a local Ray "
                             "instance, sized to this machine.")


@dataclass
class RunConfig:
    constitution: str = _f("safety.yaml", "Constitution: a bare name is ./constitutions/NAME if that exists, else a "
                           "shipped one (safety, helpfulness, honesty); a path is used as is.")
    output_dir: str | None = _f(None, "Run folder; rerun on it to resume. Default: runs/<constitution name>-<UTC timestamp>.")
    seed: int = _f(0, "Seed for sampling, principle draws and splits.")
    engine: str = _f("auto", "auto | hf | vllm. auto picks vllm when CUDA and vllm are both available.",
                     choices=("auto", "hf", "vllm"))
    policy_engine: str | None = _f(None, "Engine of the policy (generation, revision, the evaluation of trained "
                                   "policies): auto | hf | vllm. Default: engine.", choices=("auto", "hf", "vllm"),
                                   run_only=True)
    judge_engine: str | None = _f(None, "Engine of the judge: auto | hf | vllm. Default: engine. With another engine "
                                  "than the policy's, the same model gets one engine per role.",
                                  choices=("auto", "hf", "vllm"))
    stages: list = _f(list(DEFAULT_STAGES), "Stages to run (comma-separated on the command line); they run in pipeline "
                      "order. revise and sft are off unless asked (or --recipe cai).", choices=STAGES, run_only=True)
    recipe: str | None = _f(None, "A named list of stages: cai = revise,sft,generate,judge,preferences,reward,policy "
                            "(Constitutional AI: critique-and-revision and SFT before the RL phase). Replaces stages.",
                            choices=tuple(RECIPES), run_only=True)
    dtype: str = _f("auto", "auto | float32 | bfloat16 | float16. auto: bf16 on CUDA; on CPUs with native bf16 (AVX512-BF16/AMX) the "
                    "faster of fp32 and bf16, measured at engine start and cached (HF engine; vLLM takes bf16); else fp32.",
                    choices=("auto", "float32", "bfloat16", "float16"))
    trust_remote_code: bool = _f(False, "Allow model repositories to run their own code. Off unless asked; weights load from safetensors only.")
    tensor_parallel_size: int = _f(1, "vLLM tensor parallelism.", minimum=1)
    data_parallel_size: int = _f(1, "vLLM data parallelism.", minimum=1)
    gpu_memory_utilization: float = _f(0.85, "Share of GPU memory, in (0, 1], that vLLM may claim for weights and KV "
                                       "cache (vLLM's own default is 0.92). One engine lives at a time, and none "
                                       "during training.")
    max_model_len: int | None = _f(None, "Context length given to local engines (vLLM sizes its KV cache by it). "
                                   "Default: the model's own, capped at 4096 tokens (what this pipeline's prompts "
                                   "need); longer prompts are cut and counted as truncated.")
    executor: str = _f("local", "Where generate, judge and revise run: local (this process) or ray (Ray Data over "
                       "--ray-replicas engine replicas, on this machine or the cluster at --ray-address; needs the "
                       "ray extra). The files are the same either way.", choices=("local", "ray"),
                       run_only=True)
    vllm: dict = _f({}, "Any vLLM engine argument (a field of vLLM's EngineArgs, e.g. quantization, enforce_eager, "
                    "max_num_seqs, kv_cache_dtype), passed to vllm.LLM: --vllm KEY=VALUE (repeatable; VALUE read as "
                    "YAML) or vllm: {KEY: VALUE}. Wins over the project's own values; part of a vLLM engine's "
                    "identity (changing one re-judges). Unknown keys are refused.", flag="--vllm")
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    revise: ReviseConfig = field(default_factory=ReviseConfig)
    sft: SftConfig = field(default_factory=SftConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    preferences: PreferencesConfig = field(default_factory=PreferencesConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    ray: RayConfig = field(default_factory=RayConfig)


# Options of the subcommands and of train_entry: command line only (not part of a run's --config YAML).

@dataclass
class AgreementOptions:
    human: str | None = _f(None, "Human-labelled pairs: HH-RLHF .jsonl(.gz), a .jsonl/.json/.csv/.parquet table, or a "
                           "save_to_disk folder.", required=True)
    judge: list = _f(["model"], "Judges to score (comma-separated or repeated); with model or reward, the free length and "
                     "random baselines are computed too.", choices=("model", "reward", "length", "random"))
    reward_model: str | None = _f(None, "The reward model that --judge reward scores with (rm:PATH or PATH: a one-output "
                                  "sequence classifier), beside the model judge in the same report.")
    label_columns: str | None = _f(None, "Comma-separated annotator columns (several human labels per pair); for a "
                                   "human_labels.jsonl, labeller names.")
    limit: int | None = _f(None, "Evaluate the first N pairs.")
    skip_bad_rows: bool = _f(False, "Skip and count malformed rows instead of failing.")


@dataclass
class RobustnessOptions:
    pairs: str | None = _f(None, "Injection set (.jsonl). Default: the shipped data/injection/pairs.jsonl.")
    limit: int | None = _f(None, "Use the first N pairs.")


@dataclass
class LabelOptions:
    run_dir: str | None = _f(None, "A run folder with pairs.jsonl (judgments.jsonl for the judge's verdicts).",
                             positional=True)
    port: int = _f(0, "Port to listen on (0: a free one).")
    host: str = _f("127.0.0.1", "Address to listen on.")
    allow_remote: bool = _f(False, "Allow a --host that is not loopback (no login: anyone who reaches it can label).")
    sample: int = _f(50, "Pairs to offer, drawn with --seed; the same pairs every time.")
    seed: int = _f(0, "Seed of the sample and of the left/right coin.")
    labeller: str | None = _f(None, "Your name in human_labels.jsonl. Default: the OS user name.")


@dataclass
class TrainEntryOptions:
    base_model: str | None = _f(None, "Model name or folder to train from (as --policy-model).", required=True)
    preferences: str | None = _f(None, "Preference dataset folder (datasets save_to_disk: prompt, chosen, rejected).",
                                 required=True)
    output_dir: str | None = _f(None, "Folder to write the trained model into.", required=True)
    stage: str | None = _f(None, "Which trainer: reward or policy.", choices=("reward", "policy"), required=True)
    reward_model: str | None = _f(None, "Trained reward model folder (policy stage with ppo or rloo).")
    seed: int = _f(0, "Seed for the split and the trainer.")


def _check_type(value, annotation: str, where: str, key: str):
    expected = {"int": int, "float": (int, float), "bool": bool, "str": str, "list": list, "dict": dict}
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


_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def as_number(value):
    """1e-5 as a float: YAML 1.1 (PyYAML) reads a number with an exponent but no dot as a string."""
    return float(value) if isinstance(value, str) and _EXPONENT.fullmatch(value.strip()) else value


def check_value(f: dataclasses.Field, value, key: str, where: str):
    """A setting's value from YAML or a flag: its type, its `choices` and its `minimum` (from the field's metadata).
    The values of a mapping (pass-through settings) are taken as written, 1e-5 read as a number."""
    value = _check_type(value, str(f.type), where, key)
    if isinstance(value, dict):
        return {str(k): as_number(v) for k, v in value.items()}
    choices, minimum = f.metadata.get("choices"), f.metadata.get("minimum")
    if choices is not None and isinstance(value, list):
        bad = [str(v) for v in value if v not in choices]
        if bad or not value:
            raise RlaifError(f"unknown {f.name.removesuffix('s')}(s) {', '.join(bad) or '(none)'}", where,
                             f"choose from {','.join(choices)}")
    elif choices is not None and value is not None and value not in choices:
        raise RlaifError(f"`{key}` must be one of {', '.join(map(str, choices))}, got {value!r}", where,
                         f"set `{key}` to one of {', '.join(map(str, choices))}")
    if minimum is not None and value is not None and value < minimum:  # None: left unset, the engine's own
        rule = {0: "must not be negative", 1: "must be positive"}.get(minimum, f"must be at least {minimum}")
        raise RlaifError(f"{key} {rule}", where, f"pass a number of at least {minimum}")
    return value


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
            kwargs[key] = check_value(f, value, name, where)
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
