"""Model engines behind one small interface. Heavy imports live inside the engine modules."""

from rlaif.engines.base import Engine, label_probability

__all__ = ["Engine", "label_probability"]
