"""The pipeline's stages, in run order: revise -> sft -> generate -> judge -> preferences -> train (reward, then
policy). Each turns its inputs into records in the run folder; rlaif.pipeline runs them in that order.
"""
