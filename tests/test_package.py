"""The built wheel is a real package: shipped constitutions, templates and data inside it, and the `rlaif` command.

.ci/wheel_check goes further: it installs the wheel into a fresh venv and runs `rlaif` from an empty folder.
"""

import subprocess
import sys
import zipfile

import pytest

from conftest import ROOT
from rlaif import CONSTITUTIONS_DIR, DATA_DIR, PROMPTS_DIR


def test_shipped_folders_are_the_top_level_ones():
    for inside, top in ((CONSTITUTIONS_DIR, "constitutions"), (PROMPTS_DIR, "prompts"), (DATA_DIR, "data")):
        assert inside.resolve() == (ROOT / top).resolve() and any(inside.iterdir()), inside


def test_wheel_holds_every_shipped_file_and_the_console_script(tmp_path):
    pytest.importorskip("build")
    proc = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(ROOT)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("rlaif-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"rlaif/{p.relative_to(ROOT).as_posix()}" for top in ("constitutions", "prompts", "data")
               for p in (ROOT / top).rglob("*") if p.is_file()}
    assert len(shipped) >= 12 and shipped <= names, sorted(shipped - names)
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "rlaif = rlaif.cli:main" in entry_points
    assert not any(n.startswith(("tests/", "constitutions/", "prompts/", "data/")) for n in names)
