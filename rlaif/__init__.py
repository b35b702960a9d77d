"""rlaif: reinforcement learning from AI feedback, with a constitution-following judge."""

from pathlib import Path

__version__ = "0.1.0"

ROOT = Path(__file__).resolve().parent.parent  # repository root: constitutions/, prompts/, data/
