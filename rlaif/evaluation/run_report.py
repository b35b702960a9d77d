"""report.html of a pipeline run: stage counts and timings, the judge's score distribution and position
bias, per-principle results, the training evaluation, and a few preference pairs to read."""

from __future__ import annotations

import heapq
import json
from array import array
from collections import defaultdict
from itertools import islice
from typing import Iterable

from rlaif.evaluation import report
from rlaif.store.folder import Run
from rlaif.store.files import atomic_write_text, iter_jsonl


def _judge_plots(first: array, scores: array) -> str:
    import numpy as np

    # As numpy views: matplotlib turns a plain sequence into one object per value (2M values: +563 MB).
    first, scores = np.frombuffer(first, dtype=np.float64), np.frombuffer(scores, dtype=np.float64)
    fig, (ax1, ax2) = report.figure(11, 3.8, ncols=2)
    ax1.hist(first, bins=20, range=(0, 1), color="#888")
    ax1.set(title="P(response shown first is better), single orders", xlabel="probability", ylabel="judgments")
    ax2.hist(scores, bins=20, range=(0, 1), color="#4a7")
    ax2.set(title="Pair scores of kept preferences (both orders)", xlabel="P(response_a is better)")
    return report.img(report.png_base64(fig), "judge score distributions")


def _per_principle(judgments: Iterable[dict], first: array) -> list[dict]:
    """One pass over the judgments: per-principle counts, and P(shown first is better) of each into `first`."""
    by = defaultdict(lambda: [0, 0, 0.0, 0])  # judgments, parse failures, sum and count of P(first)
    for j in judgments:
        acc = by[j["principle_id"]]
        acc[0] += 1
        acc[1] += j["verdict"] is None
        if j["p_a"] is not None:
            first.append(j["p_a"] if j["order"] == "ab" else 1 - j["p_a"])
            acc[2] += first[-1]
            acc[3] += 1
    return [{"principle": pid, "judgments": n, "parse_failures": bad,
             "mean P(first shown better)": total / count if count else None}
            for pid, (n, bad, total, count) in sorted(by.items())]


def write(run: Run) -> None:
    summary = json.loads(run.summary.read_text()) if run.summary.exists() else {}
    stages = [{"stage": s, **{k: v for k, v in summary[s].items() if not isinstance(v, (dict, list))}}
              for s in ("revise", "sft", "generate", "judge", "preferences", "reward", "policy") if s in summary]
    columns = ["stage", "seconds", "pairs", "generated", "reused", "judged", "tokens_per_second", "seconds_per_pair",
               "parse_failures", "kept", "dropped", "tied", "steps", "seconds_per_step", "reward_accuracy"]
    columns[2:2] = ["prompts", "revised", "unrevised", "from_revisions", "from_sft_data"]
    # One column per stage, in run order, and one row per figure that some stage has: each stage fills only a few
    # of the ~20 figures, so stages as rows made a table wider than the page.
    sections = [("Stages", report.table(stages, columns, drop_empty=True, transpose=True))] if stages else []  # rounds: none
    figures = {k: summary.get(k) for k in ("position_consistency", "first_position_rate", "mean_kept_margin",
                                           "judge_calls_per_preference")}
    if any(v is not None for v in figures.values()):
        from rlaif.stages.preferences import weak_signal_warning

        warning = weak_signal_warning(figures)
        if warning:
            sections.insert(0, ("Warning: weak judge signal", f'<p class="warning">{report.esc(warning)}</p>'))
        sections.append(("Judge signal against position bias", report.table([figures], list(figures)) +
                         "<p>position_consistency: the share of judged pairs whose two orders agree on the winner "
                         "(below 0.6 the judge mostly follows position, not content). first_position_rate: the mean "
                         "P(response shown first is better); 0.5 is no position bias. mean_kept_margin: the mean "
                         "|score - 0.5| of the pairs kept as preferences. judge_calls_per_preference: the judgments "
                         "the scores used (both orders, every principle) per kept preference.</p>" +
                         ("<p>The judge is a reward model (<code>rm:</code>): it scores each response alone, so both "
                          "orders give the same number and position bias is zero by construction.</p>"
                          if summary.get("judge", {}).get("mode") == "reward" else "")))
    cai = [{"figure": k, **summary[s]["evaluation"]} for k, s in (("revision_win_rate", "revise"), ("sft_win_rate", "sft"))
           if isinstance(summary.get(s, {}).get("evaluation"), dict)]
    if cai:
        sections.append(("Critique-and-revision and SFT", report.table(
            [{**r, "value": r.get(r["figure"])} for r in cai], ["figure", "value", "n", "n_judged", "wins", "losses", "ties"]) +
            "<p>revision_win_rate: the judge's preference for the final revision over the initial answer, both orders, "
            "over all training prompts (an unrevised answer is a tie). sft_win_rate: the SFT model against the model "
            "before SFT on held-out prompts, judged as policy_win_rate is. 0.5 is a draw.</p>" +
            report.table([{"stage": k, "model": v} for k, v in summary.get("models", {}).items()], ["stage", "model"])))
    headline = {k: summary.get(k) for k in ("reward_accuracy", "policy_win_rate", "reward_base", "reward_policy")}
    if any(v is not None for v in headline.values()):
        sections.append(("What training did", report.table([headline], list(headline)) +
                         "<p>policy_win_rate: the trained policy against the base policy on held-out prompts, judged "
                         "in both orders (0.5 is a draw). reward_*: mean reward under the trained reward model. "
                         "With the embedded 135M judge these sit near chance; read them as such.</p>"))
    if summary.get("rounds"):  # --rounds N: one row per round, each round's own report in rounds/<r>/report.html
        sections.append(("DPO in rounds", report.table(summary["rounds"], [
            "round", "pairs", "kept", "seconds", "win_rate_vs_base", "position_consistency", "policy_start"]) +
            "<p>win_rate_vs_base: each round's policy against the same base policy (round 1's starting policy) on "
            "the held-out prompts, judged in both orders (0.5 is a draw). Each round's files, and its own report, "
            "are in rounds/&lt;round&gt;/.</p>"))
    first, scores = array("d"), array("d")  # streamed: a run of any size is read in constant memory
    principles = _per_principle(iter_jsonl(run.judgments), first)
    top = heapq.nlargest(5, (r for r in iter_jsonl(run.preferences_jsonl)  # revision rows may have no score
                             if r["score"] is None or scores.append(r["score"]) or True),
                         key=lambda r: r["margin"])  # as sorted(..., key=-margin)[:5]: ties keep file order
    if principles:
        sections.append(("Judge", _judge_plots(first, scores) + report.table(
            principles, ["principle", "judgments", "parse_failures", "mean P(first shown better)"]) +
            "<p>A judge without position bias puts P(first shown better) near 0.5 on average; scoring both orders "
            "cancels what bias there is.</p>"))
    for row in islice(iter_jsonl(run.root / "revisions.jsonl"), 3):
        body = report.pre(row["prompt"], 600) + "<p>initial</p>" + report.pre(row["initial"], 800)
        for r in row["rounds"]:
            body += (f"<p>critique ({report.esc(r['principle_id'])})</p>" + report.pre(r["critique"], 800) +
                     "<p>revision</p>" + report.pre(r["revision"], 800))
        sections.append((f"Revision {row['pair_id']} (revised: {report.fmt(row['revised'])})", body))
    if (run.root / "human_labels.jsonl").exists():  # written by `rlaif label RUN_DIR`
        from rlaif.evaluation.labels import report_rows

        sections.append(("Judge vs your labels", report.table(report_rows(run.root), [
            "labeller", "labelled", "a", "b", "tie", "decided", "agree", "agreement", "cohen_kappa"]) +
            "<p>Your labels from human_labels.jsonl (undone labels left out) against this run's judge verdicts. "
            "decided: pairs where you and the judge both picked a side; agreement = agree / decided. For confidence "
            "intervals and baselines: <code>rlaif agreement --constitution C --human "
            f"{report.esc(run.root / 'human_labels.jsonl')}</code>.</p>"))
    for row in top:
        sections.append((f"Preference {row['pair_id']} (score {report.fmt(row['score'])})",
                         report.pre(row["prompt"][0]["content"], 600) + "<p>chosen</p>" +
                         report.pre(row["chosen"][0]["content"], 800) + "<p>rejected</p>" +
                         report.pre(row["rejected"][0]["content"], 800)))
    name = summary.get("constitution", {}).get("name", "")
    atomic_write_text(run.report, report.html_page(f"RLAIF run {run.root.name} ({name})", sections))
