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


def fingerprint(dirs: tuple, mitigate: bool) -> str:
    """A hash of everything rendering depends on besides its variables: the template files in `dirs`, this
    module's code, jinja2's version and the fence switch. Equal fingerprints and variables: equal text."""
    h = hashlib.sha256(f"{jinja2.__version__}:{mitigate}".encode())
    h.update(Path(__file__).read_bytes())
    for d in dirs:
        for f in sorted(Path(d).glob("*.j2")):
            h.update(f"{f}:{len(f.read_bytes())}:".encode() + f.read_bytes())
    return h.hexdigest()


def _origin(name: str, dirs: tuple) -> str:
    return next((str(Path(d) / name) for d in dirs if (Path(d) / name).is_file()), name)
