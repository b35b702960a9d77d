"""Ranking one prompt's samples from its judged pairs: a Bradley-Terry fit, or win counts when there are too few
pairs for one (K-1 or fewer), and the best-against-worst preference that comes of it.

A judged pair is (i, j, s): s = P(sample i is better than sample j), the pair's score. The Bradley-Terry fit takes
s as a soft outcome and maximises sum s log sigmoid(t_i - t_j) + (1 - s) log sigmoid(t_j - t_i) - RIDGE/2 sum t^2
by Newton's method. The small ridge keeps strengths finite when one sample wins every comparison outright (a
parsed chain-of-thought verdict is exactly 0 or 1) and makes the fit unique when the comparisons do not connect
every sample; it shrinks strengths by about 1% on scores from a log-prob judge.
"""

from __future__ import annotations

import math

RIDGE = 0.01


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def bradley_terry(k: int, judged: list[tuple[int, int, float]], tol: float = 1e-10) -> list[float]:
    """Strengths t_0..t_{k-1} (log scale, shrunk toward 0) from the judged pairs."""
    import numpy as np

    t = np.zeros(k)
    for _ in range(100):
        grad, hess = -RIDGE * t, -RIDGE * np.eye(k)
        for i, j, s in judged:
            p = _sigmoid(t[i] - t[j])
            grad[i] += s - p
            grad[j] -= s - p
            w = p * (1.0 - p)
            hess[i, i] -= w
            hess[j, j] -= w
            hess[i, j] += w
            hess[j, i] += w
        step = np.linalg.solve(hess, -grad)
        t += step
        if np.max(np.abs(step)) < tol:
            break
    return [float(x) for x in t]


def win_counts(k: int, judged: list[tuple[int, int, float]]) -> list[float]:
    """Each sample's wins over its judged pairs: 1 for a score on its side of 0.5, a half for a tie."""
    wins = [0.0] * k
    for i, j, s in judged:
        wins[i] += 1.0 if s > 0.5 else 0.5 if s == 0.5 else 0.0
        wins[j] += 1.0 if s < 0.5 else 0.5 if s == 0.5 else 0.0
    return wins


def best_worst(k: int, judged: list[tuple[int, int, float]]) -> dict | None:
    """The best and the worst sample of a prompt and P(best beats worst), from its judged pairs. Bradley-Terry
    ranks them when there are at least K pairs, win counts otherwise (ties broken by the Bradley-Terry strength,
    then by the lower index for best, the higher for worst); only samples in a judged pair are ranked. The
    probability is the pair's own score when best and worst were judged against each other, else the fit's
    sigmoid(t_best - t_worst). None when nothing was judged or every ranked sample ties."""
    if not judged:
        return None
    strengths = bradley_terry(k, judged)
    method = "bradley-terry" if len(judged) >= k else "win-counts"
    primary = strengths if method == "bradley-terry" else win_counts(k, judged)
    ranked = sorted({x for i, j, _ in judged for x in (i, j)})
    best = max(ranked, key=lambda x: (primary[x], strengths[x], -x))
    worst = min(ranked, key=lambda x: (primary[x], strengths[x], -x))
    if best == worst or (primary[best], strengths[best]) == (primary[worst], strengths[worst]):
        return None
    direct = [s if (i, j) == (best, worst) else 1.0 - s for i, j, s in judged if {i, j} == {best, worst}]
    p = sum(direct) / len(direct) if direct else _sigmoid(strengths[best] - strengths[worst])
    return {"best": best, "worst": worst, "p_best": p, "method": method, "strengths": strengths}
