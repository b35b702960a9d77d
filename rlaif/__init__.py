"""rlaif: reinforcement learning from AI feedback, with a constitution-following judge."""

from pathlib import Path

__version__ = "0.1.0"

# Shipped files are package data: rlaif/constitutions, rlaif/prompts and rlaif/data. In the repository these
# are symlinks to the top-level folders of the same names; a wheel holds real copies (setuptools follows them).
PACKAGE_DIR = Path(__file__).resolve().parent
CONSTITUTIONS_DIR = PACKAGE_DIR / "constitutions"
PROMPTS_DIR = PACKAGE_DIR / "prompts"
DATA_DIR = PACKAGE_DIR / "data"
