"""Constitution schema, validation errors (file, line, key, fix) and principle sampling."""

from collections import Counter
from pathlib import Path

import pytest

from conftest import MINI_CONSTITUTION
from rlaif.judging.constitution import CONSTITUTIONS_DIR, load, resolve_path
from rlaif.errors import RlaifError


@pytest.mark.parametrize("name", ["safety.yaml", "helpfulness.yaml", "honesty"])
def test_shipped_constitutions_load(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./constitutions here: the shipped ones inside the package
    c = load(name)
    assert len(c.principles) >= 8
    assert len({p.id for p in c.principles}) == len(c.principles)
    assert c.path.parent == CONSTITUTIONS_DIR and c.description


def test_bare_name_and_path_resolution(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_path("safety.yaml") == CONSTITUTIONS_DIR / "safety.yaml"
    assert resolve_path("safety") == CONSTITUTIONS_DIR / "safety.yaml"
    assert resolve_path(str(tmp_path / "x.yaml")) == tmp_path / "x.yaml"
    with pytest.raises(RlaifError):
        resolve_path("..")


def test_bare_name_prefers_the_current_folders_constitutions(tmp_path, monkeypatch):
    """./constitutions/NAME first, then the shipped one; the shipped files live inside the package."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "constitutions").mkdir()
    (tmp_path / "constitutions" / "safety.yaml").write_text(MINI_CONSTITUTION)
    assert load("safety").name == "mini" and load("safety.yaml").path == Path("constitutions/safety.yaml")
    assert load("honesty").path == CONSTITUTIONS_DIR / "honesty.yaml"  # not in ./constitutions: shipped
    assert CONSTITUTIONS_DIR.parent.name == "rlaif" and (CONSTITUTIONS_DIR / "safety.yaml").is_file()


def _error(tmp_path, text: str) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(RlaifError) as e:
        load(str(path))
    return e.value.line()


BAD = [
    # (description, edit of the mini constitution, expected fragments of the message)
    ("yaml syntax", lambda t: t.replace("version: 1", "version: [1"), ["YAML syntax error", "c.yaml:"]),
    ("unknown top key", lambda t: t + "bogus_key: 1\n", ["bogus_key", "c.yaml:16"]),
    ("unknown principle key", lambda t: t.replace("    weight: 2.0", "    wieght: 2.0"), ["wieght", "c.yaml:11"]),
    ("missing field", lambda t: t.replace("  - id: help\n", "  - \n"), ["missing required key `id`"]),
    ("wrong type", lambda t: t.replace("weight: 2.0", "weight: heavy"), ["weight", "must be int/float", "c.yaml:11"]),
    ("duplicate id", lambda t: t.replace("id: honest", "id: harm"), ["duplicate principle id `harm`", "c.yaml:14", "first at line 9"]),
    ("empty text", lambda t: t.replace("Choose the more honest response.", "''"), ["empty text"]),
    ("weight not positive", lambda t: t.replace("weight: 2.0", "weight: 0"), ["weights must be positive"]),
    ("bad ppc", lambda t: t.replace("principles_per_comparison: all", "principles_per_comparison: some"),
     ["principles_per_comparison"]),
    ("bad label mode", lambda t: t.replace("label_mode: logprob", "label_mode: vibes"), ["label_mode"]),
    ("template not found", lambda t: t.replace("judge_logprob.j2", "nope.j2"), ["'nope.j2' not found", "judge_cot.j2"]),
    ("template traversal", lambda t: t.replace("judge_logprob.j2", "../../etc/passwd"), ["plain file name"]),
    ("bad name", lambda t: t.replace("name: mini", "name: ../../evil"), ["name"]),
    ("empty principles", lambda t: t.split("principles:")[0] + "principles: []\n", ["principles is empty"]),
    ("not a mapping", lambda t: "- just\n- a list\n", ["must be a mapping"]),
]


@pytest.mark.parametrize("desc,edit,fragments", BAD, ids=[b[0] for b in BAD])
def test_validation_errors_name_the_problem(tmp_path, desc, edit, fragments):
    message = _error(tmp_path, edit(MINI_CONSTITUTION))
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_template_errors(tmp_path):
    """A template beside the constitution file is used first; its problems name the template."""
    cases = {
        "{{ principle.text }} {{ no_such_var }}": "no_such_var",
        "{% if %}": "template syntax error",
        "{{ ''.__class__.__mro__ }}": "sandbox",
        "{{ response_a.__class__.__init__.__globals__ }}": "sandbox",
    }
    for body, fragment in cases.items():
        (tmp_path / "p.j2").write_text(body)
        path = tmp_path / "c.yaml"
        path.write_text(MINI_CONSTITUTION.replace("judge_logprob.j2", "p.j2"))
        with pytest.raises(RlaifError) as e:
            load(str(path))
        assert fragment in e.value.line() and "p.j2" in e.value.line(), (body, e.value.line())


def test_sampling_is_deterministic_and_weighted(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(MINI_CONSTITUTION.replace("principles_per_comparison: all", "principles_per_comparison: 1"))
    c = load(str(path))
    draws = [c.sample(f"pair-{i}", seed=3) for i in range(2000)]
    assert draws == [c.sample(f"pair-{i}", seed=3) for i in range(2000)]
    assert all(len(d) == 1 and d[0][1] == 1.0 for d in draws)
    counts = Counter(d[0][0].id for d in draws)
    assert 0.45 < counts["harm"] / 2000 < 0.55  # weight 2 of a total 4
    assert [d[0][0].id for d in draws[:50]] != [d[0][0].id for d in (c.sample(f"pair-{i}", 4) for i in range(50))]


def test_all_uses_every_principle_with_weights(mini_constitution):
    c = load(str(mini_constitution))
    assert [(p.id, w) for p, w in c.sample("x", 0)] == [("harm", 2.0), ("help", 1.0), ("honest", 1.0)]
