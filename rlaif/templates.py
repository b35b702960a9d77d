"""Judge prompt templates: jinja2's SandboxedEnvironment over prompts/, with StrictUndefined.

Response text is data, not instructions. The `fence` filter neutralises what could pass for the
judge frame inside it: our section markers, chat-template special tokens, and header look-alikes.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import jinja2
from jinja2.sandbox import SandboxedEnvironment, SecurityError

from rlaif import ROOT
from rlaif.errors import RlaifError

PROMPTS_DIR = ROOT / "prompts"

_SPECIAL = re.compile(r"<\|([a-zA-Z_]+)\|>")  # ChatML-style special tokens such as <|im_start|>
_MARKER = re.compile(r"(<<<|>>>)")
_HEADER = re.compile(r"^(\s*)((?:\[\s*)?(?:final\s+verdict|response\s*[ab]?|principle|user(?:\s+message)?|verdict"
                     r"|system|judge|assistant)\s*(?:\]|:))", re.IGNORECASE | re.MULTILINE)


def fence(text: str) -> str:
    """Neutralise text that imitates the judge frame. Visible to the judge, inert as structure."""
    text = _SPECIAL.sub(r"<\1>", str(text))
    text = _MARKER.sub(lambda m: "< < <" if m.group(1) == "<<<" else "> > >", text)
    return _HEADER.sub(lambda m: f"{m.group(1)}(quoted) {m.group(2)}", text)


@lru_cache(maxsize=4)
def environment(directory: str = str(PROMPTS_DIR), mitigate: bool = True) -> SandboxedEnvironment:
    env = SandboxedEnvironment(loader=jinja2.FileSystemLoader(directory), undefined=jinja2.StrictUndefined,
                               autoescape=False, trim_blocks=True, lstrip_blocks=True)
    env.filters["fence"] = fence if mitigate else (lambda text: str(text))
    return env


def check_name(name: str, where: str) -> None:
    if not name or "/" in name or "\\" in name or name.startswith(".") or ".." in name:
        raise RlaifError(f"template name {name!r} must be a plain file name inside prompts/", where,
                         "use a name such as judge_logprob.j2")


def render(name: str, where: str = "", mitigate: bool = True, directory: Path = PROMPTS_DIR, **variables) -> str:
    """Render a template; every template problem becomes an RlaifError naming the template."""
    check_name(name, where)
    label = f"{directory.name}/{name}"
    try:
        return environment(str(directory), mitigate).get_template(name).render(**variables).strip() + "\n"
    except jinja2.TemplateNotFound as e:
        found = ", ".join(sorted(p.name for p in directory.glob("*.j2") if not p.name.startswith("_")))
        raise RlaifError(f"template {e.name!r} not found", where or label, f"use one of: {found}") from None
    except jinja2.TemplateSyntaxError as e:
        raise RlaifError(f"template syntax error: {e.message}", f"{e.filename or label}:{e.lineno}",
                         "fix the jinja2 syntax") from None
    except jinja2.UndefinedError as e:
        raise RlaifError(f"template uses an undefined variable: {e.message}", label,
                         "use only the variables listed in prompts/README.md") from None
    except SecurityError as e:
        raise RlaifError(f"template blocked by the sandbox: {e}", label,
                         "templates may only format the documented variables") from None
