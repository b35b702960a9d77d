"""One declaration of every setting: the flags, --config YAML and train_entry are generated from rlaif/config.py."""

import dataclasses
import subprocess

import pytest
import yaml

from conftest import pipeline_cmd
from rlaif import config as config_mod
from rlaif.cli import flags
from rlaif.cli import build_parser, make_config
from rlaif.cli.train_entry import build_parser as train_entry_parser

# The flags outside scripts rely on, exactly as they were before the flags were generated.
LEGACY = {
    "--constitution": "constitution", "--output-dir": "output_dir", "--seed": "seed", "--engine": "engine",
    "--dtype": "dtype", "--trust-remote-code": "trust_remote_code", "--tensor-parallel-size": "tensor_parallel_size",
    "--data-parallel-size": "data_parallel_size", "--stages": "stages",
    "--policy-model": "generate.model", "--policy-base-url": "generate.base_url", "--num-prompts": "generate.num_prompts",
    "--prompts": "generate.prompts", "--max-new-tokens": "generate.max_new_tokens", "--batch-size": "generate.batch_size",
    "--temperature": "generate.temperature", "--judge-model": "judge.model", "--judge-base-url": "judge.base_url",
    "--concurrency": "judge.concurrency", "--margin": "preferences.min_margin", "--algo": "train.algo",
    "--max-steps": "train.max_steps", "--learning-rate": "train.learning_rate", "--beta": "train.beta",
    "--report-to": "train.report_to", "--threads": "train.threads",
}
# Settings that had no flag before (README lists them).
NEW = {"--top-p": "generate.top_p", "--judge-max-new-tokens": "judge.max_new_tokens",
       "--judge-batch-size": "judge.batch_size", "--train-batch-size": "train.batch_size",
       "--max-length": "train.max_length", "--eval-fraction": "train.eval_fraction", "--eval-prompts": "train.eval_prompts"}
TRAIN_ENTRY_LEGACY = ["--base-model", "--preferences", "--output-dir", "--stage", "--reward-model", "--seed", "--algo",
                      "--max-steps", "--learning-rate", "--beta", "--batch-size", "--max-length", "--eval-fraction",
                      "--report-to", "--threads"]
REQUIRED = ["--base-model", "m", "--preferences", "p", "--output-dir", "o", "--stage", "reward"]


def _actions(parser) -> dict:
    return parser._option_string_actions  # option string -> argparse action


def test_every_setting_has_one_flag_with_help():
    parsers = {"run": build_parser("run"), "agreement": build_parser("agreement"),
               "robustness": build_parser("robustness"), "label": build_parser("label"),
               "train_entry": train_entry_parser()}
    cases = [("run", config_mod.RunConfig), ("agreement", config_mod.AgreementOptions),
             ("robustness", config_mod.RobustnessOptions), ("label", config_mod.LabelOptions),
             ("train_entry", config_mod.TrainEntryOptions),
             ("train_entry", config_mod.TrainConfig)]
    n = 0
    for command, cls in cases:
        for path, f, flag in flags.leaves(cls):
            assert f.metadata.get("help", "").strip(), f"{cls.__name__}.{path} has no help"
            action = _actions(parsers[command]).get(flag) if not f.metadata.get("positional") else \
                next((a for a in parsers[command]._actions if a.dest == path and not a.option_strings), None)
            assert action is not None and action.dest == path and action.help, (command, path, flag)
            n += 1
    assert n >= 50
    run_flags = {flag: path for path, _, flag in flags.leaves(config_mod.RunConfig)}
    assert len(run_flags) == len(list(flags.leaves(config_mod.RunConfig)))  # no two settings share a flag
    assert {k: run_flags.get(k) for k in LEGACY} == LEGACY and {k: run_flags.get(k) for k in NEW} == NEW
    assert set(TRAIN_ENTRY_LEGACY) <= set(_actions(parsers["train_entry"]))


def _other_value(f: dataclasses.Field):
    """A valid value that differs from the field's default."""
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    choices, kind = f.metadata.get("choices"), flags.kind(f)
    if kind == "list":
        return [choices[-1]] if choices else ["first", "second"]
    if kind == "dict":  # a pass-through mapping: its keys are checked against trl/vLLM by make_config, not here
        return {f"key_of_{f.name}": 0.5, "other_key": "text"}
    if choices:
        return next(c for c in choices if c != default)
    if kind == "bool":
        return not default
    if kind == "int":
        return (default or 0) + 3
    if kind == "float":
        return (default or 0.0) + 0.375
    return f"value-of-{f.name}"


def _flag_args(flag: str, value) -> list[str]:
    if isinstance(value, bool):
        return [flag if value else "--no-" + flag[2:]]
    if isinstance(value, dict):  # --trl KEY=VALUE, repeated
        return [a for k, v in value.items() for a in (flag, f"{k}={v}")]
    return [flag, ",".join(value) if isinstance(value, list) else str(value)]


def _nested(items) -> dict:
    data = {}
    for path, value in items:
        *sections, name = path.split(".")
        target = data
        for s in sections:
            target = target.setdefault(s, {})
        target[name] = value
    return data


def test_yaml_and_flags_give_the_same_config(tmp_path):
    leaves = list(flags.leaves(config_mod.RunConfig))
    values = {path: _other_value(f) for path, f, _ in leaves}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(_nested(values.items())))
    # Resolved as make_config resolves (defaults, YAML, flags), without the cross-setting rules it applies next,
    # which see both sources alike and could refuse these arbitrary values.
    parse = build_parser("run").parse_args
    from_yaml = flags.apply(config_mod.load(str(tmp_path / "run.yaml")), parse([]))
    argv = [a for path, _, flag in leaves for a in _flag_args(flag, values[path])]
    from_flags = flags.apply(config_mod.load(None), parse(argv))
    assert config_mod.to_dict(from_yaml) == config_mod.to_dict(from_flags)
    default = config_mod.to_dict(config_mod.RunConfig())
    changed = {p for p, _, _ in leaves if _get(config_mod.to_dict(from_flags), p) != _get(default, p)}
    assert changed == set(values)  # every setting really went through, none left at its default
    # A flag overrides the YAML value of the same setting, and only that one.
    (tmp_path / "small.yaml").write_text("generate:\n  batch_size: 5\njudge:\n  batch_size: 3\n")
    both = make_config(parse(["--config", str(tmp_path / "small.yaml"), "--judge-batch-size", "7"]))
    assert (both.judge.batch_size, both.generate.batch_size) == (7, 5)


def _get(d: dict, path: str):
    for part in path.split("."):
        d = d[part]
    return d


def test_train_entry_takes_the_train_settings_from_yaml_or_flags(tmp_path):
    leaves = list(flags.leaves(config_mod.TrainConfig))
    values = {path: _other_value(f) for path, f, _ in leaves}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({"train": values}))
    parse = train_entry_parser().parse_args
    from_yaml = flags.apply(config_mod.load(str(tmp_path / "run.yaml")).train, parse(REQUIRED), config_mod.TrainConfig)
    argv = REQUIRED + [a for path, _, _ in leaves for a in _flag_args("--" + path.replace("_", "-"), values[path])]
    from_flags = flags.apply(config_mod.TrainConfig(), parse(argv))
    assert dataclasses.asdict(from_flags) == dataclasses.asdict(from_yaml) == values
    assert parse(REQUIRED + ["--train-batch-size", "5"]).batch_size == 5  # the pipeline's name is an alias


def test_help_lists_subcommands_and_their_flags():
    text = build_parser("run").format_help()
    assert "rlaif agreement" in text and "rlaif robustness" in text and "--judge-batch-size" in text
    agreement = build_parser("agreement").format_help()
    for flag in ("--human", "--judge ", "--label-columns", "--limit", "--skip-bad-rows", "--judge-model"):
        assert flag in agreement, flag
    assert "--policy-model" not in agreement and "--stages" not in agreement
    robustness = build_parser("robustness").format_help()
    assert "--pairs" in robustness and "--limit" in robustness
    label = build_parser("label").format_help()
    assert "RUN_DIR" in label and "--allow-remote" in label and "--config" not in label


@pytest.mark.parametrize("args,fragment", [
    (["--engine", "fast"], "invalid choice: 'fast'"),
    (["--seed", "abc"], "invalid int value: 'abc'"),
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["--judge-batch-size", "0"], "--judge-batch-size must be positive"),
    (["--train-batch-size", "-1"], "--train-batch-size must be positive"),
    (["--config", "CONFIG:engine: fast\n"], "`engine` must be one of auto, hf, vllm"),
    (["--config", "CONFIG:train:\n  threads: -2\n"], "train.threads must not be negative"),
    (["--config", "CONFIG:stages: [generate, bake]\n"], "unknown stage(s) bake"),
    (["agreement", "--judge", "model,oracle", "--human", "h.jsonl"], "unknown judge(s) oracle"),
    (["agreement"], "required: --human"),
])
def test_bad_settings_are_one_line_and_exit_2(tmp_path, args, fragment):
    args = list(args)
    for i, arg in enumerate(args):
        if arg.startswith("CONFIG:"):
            (tmp_path / "cfg.yaml").write_text(arg.removeprefix("CONFIG:"))
            args[i] = str(tmp_path / "cfg.yaml")
    proc = subprocess.run(pipeline_cmd(*args, "--dry-run") if args[0] != "agreement" else pipeline_cmd(*args),
                          capture_output=True, text=True, cwd=tmp_path, timeout=60)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("rlaif: error: "), proc.stderr
    assert fragment in lines[0], lines[0]
    assert list(tmp_path.iterdir()) in ([], [tmp_path / "cfg.yaml"])  # nothing written


def test_readme_settings_table_is_generated_from_the_fields():
    from conftest import ROOT

    assert flags.settings_table() in (ROOT / "README.md").read_text(), \
        "README's settings table is out of date: paste the output of `python -m rlaif.cli.flags` into it"
