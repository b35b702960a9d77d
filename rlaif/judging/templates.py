"""Judge prompt templates: jinja2's SandboxedEnvironment over prompts/, with StrictUndefined.

Response text is data, not instructions. The `fence` filter neutralises what could pass for the
judge frame inside it: our section markers, chat-template special tokens, and header look-alikes.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from pathlib import Path

import jinja2
from jinja2.sandbox import SandboxedEnvironment, SecurityError

from rlaif import PROMPTS_DIR
from rlaif.errors import RlaifError

_SPECIAL = re.compile(r"<\|([a-zA-Z_]+)\|>")  # ChatML-style special tokens such as <|im_start|>
_MARKER = re.compile(r"(<<<|>>>)")
_HEADER = re.compile(r"^(\s*)((?:\[\s*)?(?:final\s+verdict|response\s*[ab]?|principle|user(?:\s+message)?|verdict"
                     r"|system|judge|assistant)\s*(?:\]|:))", re.IGNORECASE | re.MULTILINE)


def fence(text: str) -> str:
    """Neutralise text that imitates the judge frame. Visible to the judge, inert as structure."""
    text = str(text)  # each pattern is tried only when the text holds a substring every match needs
    if "<|" in text:
        text = _SPECIAL.sub(r"<\1>", text)
    if "<<<" in text or ">>>" in text:
        text = _MARKER.sub(lambda m: "< < <" if m.group(1) == "<<<" else "> > >", text)
    if ":" in text or "]" in text:
        text = _HEADER.sub(lambda m: f"{m.group(1)}(quoted) {m.group(2)}", text)
    return text


@lru_cache(maxsize=4096)
def _fence_text(text: str) -> str:
    return fence(text)


def _fence_cached(text) -> str:
    """fence, remembered: both orders of a pair, and a principle's examples, fence the same texts."""
    return _fence_text(text) if type(text) is str else fence(text)


@lru_cache(maxsize=8)
def environment(dirs: tuple = (str(PROMPTS_DIR),), mitigate: bool = True) -> SandboxedEnvironment:
    """Templates are looked up in `dirs` in order (the constitution's own folder, then prompts/)."""
    env = SandboxedEnvironment(loader=jinja2.FileSystemLoader(list(dirs)), undefined=jinja2.StrictUndefined,
                               autoescape=False, trim_blocks=True, lstrip_blocks=True)
    env.filters["fence"] = _fence_cached if mitigate else (lambda text: str(text))
    return env


def check_name(name: str, where: str) -> None:
    if not name or "/" in name or "\\" in name or name.startswith(".") or ".." in name:
        raise RlaifError(f"template name {name!r} must be a plain file name inside prompts/", where,
                         "use a name such as judge_logprob.j2")


def render(name: str, where: str = "", mitigate: bool = True, dirs: tuple = (str(PROMPTS_DIR),), **variables) -> str:
    """Render a template; every template problem becomes an RlaifError naming the template."""
    return renderer(name, where, mitigate, dirs)(**variables)


def renderer(name: str, where: str = "", mitigate: bool = True, dirs: tuple = (str(PROMPTS_DIR),)):
    """render() with the template looked up once: a function of the variables (for many prompts in a row)."""
    check_name(name, where)
    try:
        template = environment(tuple(map(str, dirs)), mitigate).get_template(name)
    except jinja2.TemplateError as e:
        _reraise(e, name, where, dirs)

    def run(**variables) -> str:
        try:
            return template.render(**variables).strip() + "\n"
        except (jinja2.TemplateError, SecurityError) as e:
            _reraise(e, name, where, dirs)
    return run


_SLOT = re.compile("\x00(?:<\\|slot([a-z])\\|>|<slot([a-z])>)\x00")  # a slot marker as written, or as fenced


def slotted(name: str, slots: tuple, where: str = "", mitigate: bool = True, dirs: tuple = (str(PROMPTS_DIR),)):
    """A faster renderer(name) for many prompts that differ only in `slots` (the pair's texts): the template
    is rendered once per value of the other variables with a marker in each slot, and each call puts the
    values (fenced where the template fences them) in place of the markers. Exact, not approximate: it is
    offered only when the template and those it extends use each slot solely as `{{ slot }}` or
    `{{ slot | fence }}` (nothing else can then depend on a slot's value), and each frame is checked against
    a full render of its first call. Returns None when the template does more with a slot: render in full."""
    full = renderer(name, where, mitigate, dirs)
    if not _slots_only_printed(environment(tuple(map(str, dirs)), mitigate), name, set(slots)):
        return None
    markers = {s: f"\x00<|slot{chr(97 + i)}|>\x00" for i, s in enumerate(slots)}  # fence: <|slota|> -> <slota>
    frames = {}  # frame key -> [literal parts], [(slot, fenced?)] between them; None where the check failed

    def run(frame_key, **variables) -> str:
        values = [variables[s] for s in slots]
        if any(type(v) is not str for v in values):
            return full(**variables)
        frame = frames.get(frame_key, False)
        if frame is False:
            frame = frames[frame_key] = _frame(full, variables, slots, markers)
            probe = {**variables, **{s: f" <|x|>\n[Principle]: {s} <<<" for s in slots}}  # what fence changes
            if frame is not None and any(_fill(frame, v) != full(**v) for v in (variables, probe)):
                frame = frames[frame_key] = None
        return full(**variables) if frame is None else _fill(frame, variables)
    return run


def _frame(full, variables: dict, slots: tuple, markers: dict):
    raw = full(**{**variables, **markers})
    parts, holes, start = [], [], 0
    for m in _SLOT.finditer(raw):
        parts.append(raw[start:m.start()])
        holes.append((slots[ord(m.group(1) or m.group(2)) - 97], m.group(2) is not None))
        start = m.end()
    parts.append(raw[start:])
    if any("\x00" in part for part in parts):  # a marker mangled by something: no shortcut
        return None
    return parts, holes


def _fill(frame, variables: dict) -> str:
    parts, holes = frame
    out = [parts[0]]
    for (slot, is_fenced), part in zip(holes, parts[1:]):
        out.append(_fence_cached(variables[slot]) if is_fenced else variables[slot])  # fenced only if mitigating
        out.append(part)
    return "".join(out).strip() + "\n"


def _slots_only_printed(env, name: str, slots: set) -> bool:
    """Whether the template `name` (and every template it extends) uses the slot variables only as whole
    printed expressions, `{{ slot }}` or `{{ slot | fence }}`, and includes or imports nothing."""
    from jinja2 import nodes

    seen = set()
    while name and name not in seen:
        seen.add(name)
        try:
            source = env.loader.get_source(env, name)[0]
            tree = env.parse(source)
        except jinja2.TemplateError:
            return False
        if any(True for _ in tree.find_all((nodes.Include, nodes.Import, nodes.FromImport))):
            return False
        parents = list(tree.find_all(nodes.Extends))
        if len(parents) > 1 or (parents and not isinstance(parents[0].template, nodes.Const)):
            return False
        stack = [(tree, None, None)]
        while stack:
            node, parent, grand = stack.pop()
            if isinstance(node, nodes.Name) and node.name in slots:
                printed = isinstance(parent, nodes.Output) or (
                    isinstance(parent, nodes.Filter) and parent.name == "fence" and parent.node is node
                    and not (parent.args or parent.kwargs or parent.dyn_args or parent.dyn_kwargs)
                    and isinstance(grand, nodes.Output))
                if node.ctx != "load" or not printed:
                    return False
            stack.extend((child, node, parent) for child in node.iter_child_nodes())
        name = parents[0].template.value if parents else None
    return True


def _reraise(e: Exception, name: str, where: str, dirs: tuple):
    if isinstance(e, jinja2.TemplateNotFound):
        found = ", ".join(sorted(p.name for p in PROMPTS_DIR.glob("*.j2") if not p.name.startswith("_")))
        raise RlaifError(f"template {e.name!r} not found", where, f"use one of: {found}") from None
    if isinstance(e, jinja2.TemplateSyntaxError):
        raise RlaifError(f"template syntax error: {e.message}", f"{e.filename or name}:{e.lineno}",
                         "fix the jinja2 syntax") from None
    if isinstance(e, jinja2.UndefinedError):
        raise RlaifError(f"template uses an undefined variable: {e.message}", _origin(name, dirs),
                         "use only the variables listed in prompts/README.md") from None
    if isinstance(e, SecurityError):
        raise RlaifError(f"template blocked by the sandbox: {e}", _origin(name, dirs),
                         "templates may only format the documented variables") from None
    raise e


def fingerprint(dirs: tuple, mitigate: bool, names: tuple) -> str | None:
    """A hash of everything rendering the templates `names` depends on besides their variables: every file they
    load (themselves and what they include, import or extend, whatever the file names end in, followed to the
    end), this module's code, jinja2's version and the fence switch. Equal fingerprints and variables: equal
    text. None when a template loads a file whose name is computed at render time: no hash can cover that."""
    env = environment(tuple(map(str, dirs)), mitigate)
    h = hashlib.sha256(f"{jinja2.__version__}:{mitigate}".encode())
    h.update(Path(__file__).read_bytes())
    todo, seen = list(names), set()
    while todo:
        name = todo.pop(0)
        if name in seen:
            continue
        seen.add(name)
        try:
            source, filename, _ = env.loader.get_source(env, name)
        except jinja2.TemplateNotFound:  # `ignore missing`: a file that appears later changes the output
            h.update(f"{name}:missing:".encode())
            continue
        data = source.encode("utf-8", "surrogatepass")
        h.update(f"{name}:{filename}:{len(data)}:".encode() + data)
        loaded = _loaded_names(env, source)
        if loaded is None:
            return None
        todo.extend(loaded)
    return h.hexdigest()


def _loaded_names(env, source: str) -> list[str] | None:
    """The names of the templates a template's source includes, imports or extends; None if one is computed."""
    from jinja2 import nodes

    try:
        tree = env.parse(source)
    except jinja2.TemplateSyntaxError:
        return []  # rendering reports it
    names = []
    for node in tree.find_all((nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)):
        target = node.template
        consts = target.items if isinstance(target, (nodes.List, nodes.Tuple)) else [target]
        if not all(isinstance(c, nodes.Const) and isinstance(c.value, str) for c in consts):
            return None
        names.extend(c.value for c in consts)
    return names


def _origin(name: str, dirs: tuple) -> str:
    return next((str(Path(d) / name) for d in dirs if (Path(d) / name).is_file()), name)


# The labels a rating judge reads (rlaif.judging.rating): one token each, worst first.
DEFAULT_LABELS = tuple(str(k) for k in range(1, 10))


def template_labels(template: str, dirs: tuple, where: str = "") -> tuple[str, ...]:
    """The labels a rating template declares with a top-level `{% set labels = ["1", ...] %}` (in it, or in a
    template it extends; the nearest wins); DEFAULT_LABELS when none does."""
    from jinja2 import TemplateError, nodes

    env = environment(tuple(map(str, dirs)), True)
    name, seen = template, set()
    while name and name not in seen:
        seen.add(name)
        try:
            source, filename, _ = env.loader.get_source(env, name)
            tree = env.parse(source)
        except TemplateError:
            return DEFAULT_LABELS  # rendering reports it
        parent = None
        for node in tree.body:
            if isinstance(node, nodes.Extends):
                parent = node.template.value if isinstance(node.template, nodes.Const) else None
            if isinstance(node, nodes.Assign) and isinstance(node.target, nodes.Name) and node.target.name == "labels":
                return _labels(node.node, f"{filename}:{node.lineno}")
        name = parent
    return DEFAULT_LABELS


def _labels(node, where: str) -> tuple[str, ...]:
    from jinja2 import nodes

    fix = 'write them as a list of distinct strings, worst first, e.g. {% set labels = ["1", "2", "3", "4", "5"] %}'
    if not isinstance(node, (nodes.List, nodes.Tuple)) or not all(
            isinstance(i, nodes.Const) and isinstance(i.value, str) for i in node.items):
        raise RlaifError("the rating labels must be a literal list of strings", where, fix)
    labels = tuple(i.value for i in node.items)
    if len(labels) < 2 or len(set(labels)) != len(labels) or any(not s or s != s.strip() for s in labels):
        raise RlaifError(f"the rating labels {list(labels)} must be at least two distinct non-empty strings without "
                         "surrounding spaces", where, fix)
    return labels
