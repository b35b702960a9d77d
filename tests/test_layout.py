"""The module layout: no import cycles among rlaif's modules and scripts/, counting the imports made inside
functions (a cycle hidden in a function works only while its import stays there, and says the two modules
are one). Package __init__ edges are not counted: importing a module always runs its package first."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted((ROOT / "rlaif").rglob("*.py")) + sorted((ROOT / "scripts").glob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The known modules that `name` imports anywhere in its file. scripts/ import each other by bare name
    (they put their own folder on sys.path)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        if name.startswith("scripts."):
            targets += [f"scripts.{t}" for t in targets]
        out |= {t for t in targets if t in known and t != name and not name.startswith(t + ".")}
    return out


def cycles() -> list[list[str]]:
    mods = modules()
    graph = {m: imported(m, p, set(mods)) for m, p in mods.items()}
    found, done = set(), set()

    def walk(node: str, stack: list[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt in stack:
                cycle = stack[stack.index(nxt):]
                first = cycle.index(min(cycle))
                found.add(tuple(cycle[first:] + cycle[:first]))
            elif nxt not in done:
                walk(nxt, stack + [nxt])
        done.add(node)

    for m in sorted(graph):
        if m not in done:
            walk(m, [m])
    return [list(c) + [c[0]] for c in sorted(found)]


def test_no_import_cycles_among_modules_and_scripts():
    assert len(modules()) > 40  # the walk found the package
    assert cycles() == [], "\n".join(" -> ".join(c) for c in cycles())
