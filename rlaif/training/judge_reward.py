"""--reward judge: the judge as the online reward of GRPO and RLOO (direct RLAIF, "d-RLAIF", Lee et al. 2023).

Each completion the trainer samples is rated by the judge in rating mode (rlaif.judging.rating.Rater: 1 to 9,
read from the label log-probs, normalised to [0, 1]) against the principles drawn for its prompt; the reward
is the weighted mean over those principles. Principles are drawn per prompt, so every completion of a group is
rated against the same ones and the group's advantages compare like with like. Ratings go through the judgment
cache, and the counts reach summary.json: reward_calls (ratings the judge computed), reward_cache_hits and
reward_seconds (time spent in the judge).
"""

from __future__ import annotations

import time

from rlaif.store.splits import prompt_id


class JudgeReward:
    """A trl reward function (reward_funcs=[JudgeReward(...)]): called with the batch's prompts and completions
    (conversational: lists of messages), returns one float per completion."""

    __name__ = "judge"  # the name trl logs the reward under (rewards/judge/mean)

    def __init__(self, rater, identity: str):
        self.rater = rater
        self.identity = f"judge:{identity}"  # part of a training checkpoint's resume key
        self.seconds = 0.0
        self.trace = []  # the mean reward of each call (one per generation batch)

    def __call__(self, prompts, completions, **_) -> list[float]:
        t = time.perf_counter()
        items = [(_text(p, "user"), _text(c, "assistant"), f"reward-{prompt_id(_text(p, 'user'))}")
                 for p, c in zip(prompts, completions)]
        rewards = self.rater.rate(items)
        self.seconds += time.perf_counter() - t
        self.trace.append(round(sum(rewards) / len(rewards), 4) if rewards else None)
        return rewards

    def counts(self) -> dict:
        return {"reward_calls": self.rater.calls, "reward_cache_hits": self.rater.cache_hits,
                "reward_seconds": round(self.seconds, 2)}


def _text(message, role: str) -> str:
    """The last `role` turn of a conversation (a list of messages), or the text itself."""
    if isinstance(message, str):
        return message
    turns = [m["content"] for m in message if m.get("role") == role] or [message[-1]["content"]]
    return turns[-1]
