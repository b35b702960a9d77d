"""Command-line flags generated from the setting dataclasses of rlaif/config.py: one declaration per setting.

A field's flag is the `flag=` of its metadata, else `--` + its section's `flag_prefix` (default: the section's
name and a dash) + the field's name with dashes. Every flag defaults to None, meaning "not given", so only the
flags actually given override the defaults and the --config YAML, and they pass the same checks
(config.check_value) as YAML values. Booleans get `--x`/`--no-x`; lists take comma-separated values and may
be repeated; mappings (pass-through settings such as --trl) take KEY=VALUE, repeated, each VALUE read as YAML,
and add to (or replace keys of) the mapping from the YAML.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from functools import reduce

import yaml

from rlaif.config import check_value
from rlaif.errors import RlaifError

TYPES = {"int": int, "float": float, "str": str}


class Parser(argparse.ArgumentParser):
    """argparse with the project's error contract: one line on stderr, exit status 2."""

    def error(self, message):
        print(f"rlaif: error: {message} -- fix: see `{self.prog} --help`".replace("\n", " "), file=sys.stderr)
        sys.exit(2)


def is_section(f: dataclasses.Field) -> bool:
    return f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(f.default_factory)


def leaves(cls, path: tuple = ()):
    """(dotted path, field, flag) for every setting of `cls`, the settings of its sections included."""
    for f in dataclasses.fields(cls):
        if is_section(f):
            yield from leaves(f.default_factory, path + (f.name,))
            continue
        prefix = getattr(cls, "flag_prefix", f"{path[-1]}-" if path else "")
        yield ".".join(path + (f.name,)), f, f.metadata.get("flag") or f"--{prefix}{f.name.replace('_', '-')}"


def kind(f: dataclasses.Field) -> str:
    name = str(f.type).replace(" | None", "")
    if name not in (*TYPES, "bool", "list", "dict"):
        raise TypeError(f"setting {f.name}: no flag form for type {f.type}; use int, float, str, bool, list or dict")
    return name


def _default_text(f: dataclasses.Field) -> str:
    if f.metadata.get("required"):
        return ""
    value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    if value is None or value == {}:
        return ""
    if isinstance(value, bool):
        return f" (default: {'on' if value else 'off'})"
    shown = ",".join(map(str, value)) if isinstance(value, list) else value
    return f" (default: {shown})"


def add_settings(parser: argparse.ArgumentParser, cls, sections=None, bare: bool = False,
                 title: str = "settings (top level of the --config YAML)") -> None:
    """A flag per setting of `cls`, one help group per section. `sections`: the sections to include ("" is the
    top level; None: all), leaving out run_only settings. `bare`: flags are the plain field names, with the
    declared flag as an alias (train_entry, whose only section is train)."""
    groups = {}
    for path, f, flag in leaves(cls):
        section, _, name = path.rpartition(".")
        if sections is not None and (section not in sections or f.metadata.get("run_only")):
            continue
        if section not in groups:
            groups[section] = parser.add_argument_group(f"{section} settings (YAML section `{section}:`)"
                                                        if section else title)
        names = list(dict.fromkeys([f"--{name.replace('_', '-')}", flag])) if bare else [flag]
        add_one(groups[section], f, path, names)


def add_one(group, f: dataclasses.Field, dest: str, names: list[str]) -> None:
    meta, k = f.metadata, kind(f)
    kw = {"help": (meta["help"] + _default_text(f)).replace("%", "%%")}
    if meta.get("positional"):
        group.add_argument(dest, type=TYPES.get(k, str), metavar=f.name.upper(), **kw)
        return
    kw.update(dest=dest, default=None, required=bool(meta.get("required")))
    if k == "bool":
        kw["action"] = argparse.BooleanOptionalAction
    elif k == "list":
        kw.update(action="append", metavar=",".join(meta["choices"]) if meta.get("choices") else "A,B")
    elif k == "dict":
        kw.update(action="append", metavar="KEY=VALUE")
    else:
        kw.update(type=TYPES[k], choices=meta.get("choices"))
        if not meta.get("choices"):
            kw["metavar"] = {"int": "N", "float": "X"}.get(k, f.name.upper())
    group.add_argument(*names, **kw)


def given(args: argparse.Namespace, cls):
    """(path, field, flag, value) for each setting of `cls` given on the command line."""
    for path, f, flag in leaves(cls):
        value = getattr(args, path, None)
        if value is None:
            continue
        if kind(f) == "list":
            value = [v.strip() for item in value for v in item.split(",") if v.strip()]
        elif kind(f) == "dict":
            value = dict(key_value(item, flag) for item in value)
        yield path, f, flag, value


def key_value(item: str, flag: str) -> tuple:
    """KEY=VALUE from the command line; VALUE is read as YAML (0.01 a float, true a bool, cosine a string)."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise RlaifError(f"{flag} takes KEY=VALUE, got {item!r}", flag, f"write e.g. {flag} KEY=VALUE")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise RlaifError(f"cannot read the value of {key.strip()} as YAML ({getattr(e, 'problem', e)})", flag,
                         "quote it, e.g. KEY='some text'") from None
    return key.strip(), value


def origin(args: argparse.Namespace, cls, path: str, config_file: str | None):
    """where(key) for the keys of the mapping setting `path` (train.trl, vllm): its flag for the keys given on the
    command line, else the --config file."""
    from_flags = {key: flag for p, _, flag, value in given(args, cls) if p == path for key in value}
    return lambda key: from_flags.get(key) or str(config_file or path)


def apply(target, args: argparse.Namespace, cls=None):
    """Set the settings given on the command line on `target` (an instance of `cls`), checked like YAML values."""
    for path, f, flag, value in given(args, cls or type(target)):
        *sections, name = path.split(".")
        section = reduce(getattr, sections, target)
        if kind(f) == "dict":  # KEY=VALUE pairs add to the YAML's mapping
            value = {**(getattr(section, name) or {}), **value}
        setattr(section, name, check_value(f, value, flag, flag))
    return target


def settings_table(cls=None) -> str:
    """The README's settings table (Markdown), from the same fields: `python -m rlaif.cli.flags`."""
    from rlaif.config import RunConfig

    rows = ["| flag | YAML key (`--config`) | default | meaning |", "|---|---|---|---|"]
    for path, f, flag in leaves(cls or RunConfig):
        default = _default_text(f).removeprefix(" (default: ").removesuffix(")") or "-"
        cells = (f"`{flag}`", f"`{path}`", str(default), f.metadata["help"])
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(settings_table())
