"""Preferences stage: pair scores -> trl's conversational preference format (prompt/chosen/rejected).

`build` works on lists; `iter_rows` and `write` stream a run of any size through in constant memory
(judgments arrive grouped by pair, in pair order, as the judge stage writes them).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable, Iterator

KEPT_COUNTS = ("kept", "dropped", "tied", "unjudged", "identical")

from rlaif.judging.scores import is_identical
from rlaif.store.files import atomic_file, replace_dir


def build(pairs: list[dict], scores: dict, judgments: list[dict], min_margin: float) -> tuple[list[dict], dict]:
    """Keep a pair when |score - 0.5| > min_margin. margin = |score - 0.5| (0 to 0.5).
    votes: per principle, how many single-order verdicts favoured a and b.
    A pair whose two responses are the same text is never a preference: counted as `identical` and dropped."""
    votes = {}
    for r in judgments:
        _vote(votes.setdefault(r["pair_id"], {}), r)
    rows, counts = [], Counter()
    for pair in pairs:
        row = _row(pair, scores.get(pair["pair_id"]), votes.get(pair["pair_id"], {}), min_margin, counts)
        if row is not None:
            rows.append(row)
    return rows, {k: counts.get(k, 0) for k in KEPT_COUNTS}


def _vote(votes: dict, r: dict) -> None:
    if r["verdict"] in ("a", "b"):
        votes.setdefault(r["principle_id"], Counter())[r["verdict"]] += 1


def _row(pair: dict, score: float | None, votes: dict, min_margin: float, counts: Counter) -> dict | None:
    if is_identical(pair):
        counts["identical"] += 1
        return None
    if score is None:
        counts["unjudged"] += 1
        return None
    if score == 0.5:
        counts["tied"] += 1
        return None
    margin = abs(score - 0.5)
    if margin <= min_margin:
        counts["dropped"] += 1
        return None
    a_wins = score > 0.5
    chosen, rejected = (pair["response_a"], pair["response_b"]) if a_wins else (pair["response_b"], pair["response_a"])
    counts["kept"] += 1
    return {
        "prompt": [{"role": "user", "content": pair["prompt"]}],
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
        "margin": margin,
        "score": score,
        "pair_id": pair["pair_id"],
        "votes": [{"principle_id": pid, "a": c["a"], "b": c["b"]} for pid, c in votes.items()],
    }


class Misaligned(Exception):
    """Judgments not in the pairs' order (a judge run over pairs in another order)."""


def _by_pair(pairs: Iterable[dict], judgments: Iterable[dict]) -> Iterator[tuple[dict, list[dict]]]:
    """(pair, its judgments) in pair order, merging two streams in one pass."""
    it = iter(judgments)
    head = next(it, None)
    for pair in pairs:
        group = []
        while head is not None and head["pair_id"] == pair["pair_id"]:
            group.append(head)
            head = next(it, None)
        yield pair, group
    if head is not None:
        raise Misaligned(head["pair_id"])


def _by_pair_in_memory(pairs: Iterable[dict], judgments: Iterable[dict]) -> Iterator[tuple[dict, list[dict]]]:
    groups = {}
    for r in judgments:
        groups.setdefault(r["pair_id"], []).append(r)
    for pair in pairs:
        yield pair, groups.get(pair["pair_id"], [])


def iter_rows(pairs: Iterable[dict], judgments: Callable[[], Iterable[dict]], constitution, min_margin: float,
              counts: Counter, in_memory: bool = False, keep: str = "best-worst") -> Iterator[dict]:
    """build() as a stream. `judgments` opens the judgments afresh (they are read twice only when out of order).
    Scores come from the judgments alone (judge.pair_scores); `counts` also gathers the judge's signal
    (see signal()), the judge calls the scores used (judge_calls) and the judgments left out because their
    principle's text has changed (stale_judgments). Pairs of K > 2 samples per prompt (they name their samples,
    in sample_a and sample_b) give, with keep="best-worst", one row per prompt (_best_worst); with "all-pairs",
    and always for K = 2, one row per kept pair."""
    from rlaif.judging.scores import current_hashes, is_current, pair_scores, verdict_of

    group = _by_pair_in_memory if in_memory else _by_pair
    current = current_hashes(constitution)
    counts["stale_judgments"] = 0
    prompt = []  # (pair, score, votes) for each pair of the prompt being read (K > 2, best-worst)
    for pair, judged in group(pairs, judgments()):
        rows = [r for r in judged if is_current(r, current)]  # the same rows pair_scores counts
        counts["stale_judgments"] += len(judged) - len(rows)
        counts["judge_calls"] += len(rows)
        votes = {}
        for r in rows:
            _vote(votes, r)
        pid = pair["pair_id"]
        score = pair_scores([pair], rows, constitution)[pid]
        if score is not None and not is_identical(pair):
            ab, ba = (verdict_of(pair_scores([pair], rows, constitution, orders=(o,))[pid]) for o in ("ab", "ba"))
            counts["judged_pairs"] += 1
            counts["consistent_pairs"] += ab is not None and ab == ba
            firsts = [r["p_a"] if r["order"] == "ab" else 1.0 - r["p_a"] for r in rows if r["p_a"] is not None]
            counts["first_sum"], counts["first_n"] = counts["first_sum"] + sum(firsts), counts["first_n"] + len(firsts)
        if "sample_a" in pair and keep == "best-worst":
            if prompt and _prompt_key(prompt[0][0]) != _prompt_key(pair):
                yield from _best_worst(prompt, min_margin, counts)
                prompt = []
            prompt.append((pair, score, votes))
            continue
        yield from _kept(_row(pair, score, votes, min_margin, counts), counts)
    if prompt:
        yield from _best_worst(prompt, min_margin, counts)


def _kept(row: dict | None, counts: Counter) -> Iterator[dict]:
    if row is not None:
        counts["kept_margin_sum"] += row["margin"]
        yield row


def _prompt_key(pair: dict) -> str:
    """The prompt a pair of K > 2 samples belongs to: its pair id is f"{prompt key}-{sample_a}-{sample_b}"."""
    return pair["pair_id"].rsplit("-", 2)[0]


def _best_worst(prompt: list[tuple], min_margin: float, counts: Counter) -> Iterator[dict]:
    """One prompt's preference: its best sample against its worst (ranking.best_worst), as the row of the pair
    (i, j), i < j, of those two samples: score = P(sample i is better), the margin kept or dropped as any pair's.
    Votes are those of that pair when it was judged. A prompt with nothing judged is `unjudged` (`identical` when
    every pair was two identical responses), one whose samples all tie is `tied`."""
    from rlaif.judging.ranking import best_worst
    from rlaif.judging.scores import is_identical

    first = prompt[0][0]
    texts, judged, votes = {}, [], {}
    for pair, score, pair_votes in prompt:
        i, j = pair["sample_a"], pair["sample_b"]
        texts[i], texts[j] = pair["response_a"], pair["response_b"]
        votes[i, j] = pair_votes
        if score is not None and not is_identical(pair):
            judged.append((i, j, score))
    ranked = best_worst(first["sampling"]["samples_per_prompt"], judged)
    if ranked is None:
        counts["tied" if judged else "identical" if all(is_identical(p) for p, *_ in prompt) else "unjudged"] += 1
        return
    i, j = sorted((ranked["best"], ranked["worst"]))
    pair = {"pair_id": f"{_prompt_key(first)}-{i}-{j}", "prompt": first["prompt"], "response_a": texts[i],
            "response_b": texts[j]}
    score = ranked["p_best"] if i == ranked["best"] else 1.0 - ranked["p_best"]
    yield from _kept(_row(pair, score, votes.get((i, j), {}), min_margin, counts), counts)


def signal(counts: Counter) -> dict:
    """How far the judge's verdicts are signal rather than position bias, over the judged pairs:
    position_consistency, the share whose two orders agree on the winner (agreement.position_consistency);
    first_position_rate, the mean P(the response shown first is better) over their judgments;
    mean_kept_margin, the mean |score - 0.5| of the pairs kept as preferences; and judge_calls_per_preference,
    the judgments the scores used (both orders, every principle; cached ones included) per kept preference.
    None where nothing counts."""
    def ratio(num, den):
        return round(counts[num] / counts[den], 4) if counts[den] else None
    return {"position_consistency": ratio("consistent_pairs", "judged_pairs"),
            "first_position_rate": ratio("first_sum", "first_n"), "mean_kept_margin": ratio("kept_margin_sum", "kept"),
            "judge_calls_per_preference": ratio("judge_calls", "kept")}


WEAK_SIGNAL = 0.6  # below this position consistency, the judge's position bias outweighs what it sees


def weak_signal_warning(figures: dict) -> str | None:
    """The warning a run prints (and the report shows at its top) when the judge's two orders mostly disagree."""
    consistency = figures.get("position_consistency")
    if consistency is None or consistency >= WEAK_SIGNAL:
        return None
    return (f"the judge's signal is weaker than its position bias: position_consistency={consistency} (its two "
            f"orders agree on the winner for only that share of pairs), first_position_rate="
            f"{figures.get('first_position_rate')}, mean_kept_margin={figures.get('mean_kept_margin')}; "
            f"most preferences may be noise: raise --margin to keep only pairs the judge is surer of, or use a "
            f"stronger --judge-model")


def features():
    from datasets import Features, List, Value

    turn = List({"role": Value("string"), "content": Value("string")})
    return Features({"prompt": turn, "chosen": turn, "rejected": turn, "margin": Value("float64"),
                     "score": Value("float64"), "pair_id": Value("string"),
                     "votes": List({"principle_id": Value("string"), "a": Value("int64"), "b": Value("int64")})})


MAX_SHARD_BYTES = 500 << 20  # datasets' save_to_disk default max_shard_size


def write(rows: Callable[[bool], Iterable[dict]], dataset_dir: Path, jsonl_path: Path) -> int:
    """Write rows(in_memory) to `dataset_dir` (the save_to_disk layout: the same files and bytes as
    Dataset.from_list(rows).save_to_disk up to 1,000 rows and 500 MB) and to `jsonl_path`, streaming: arrow
    shards of about 500 MB are written as the rows come, never read back. Nothing is replaced unless there is at
    least one row. Returns the row count. The fingerprint in state.json is a hash of the rows (datasets' own
    hashes the whole table in memory)."""
    from datasets.arrow_writer import ArrowWriter

    dataset_dir, jsonl_path = Path(dataset_dir), Path(jsonl_path)
    tmp = Path(tempfile.mkdtemp(dir=dataset_dir.parent, prefix=".preferences-stream."))
    try:
        with atomic_file(jsonl_path, skip_empty=True) as f:  # in place once the dataset is
            for in_memory in (False, True):
                shutil.rmtree(tmp / "ds", ignore_errors=True)
                (tmp / "ds").mkdir()
                f.seek(0)
                f.truncate()
                digest, n, shards, size, writer = hashlib.sha256(), 0, 0, 0, None
                try:
                    for row in rows(in_memory):
                        if writer is None or size >= MAX_SHARD_BYTES:
                            if writer is not None:
                                writer.finalize()
                                writer.close()
                            writer = ArrowWriter(features=features(), path=str(tmp / "ds" / f"part-{shards}"),
                                                 writer_batch_size=1000)
                            shards, size = shards + 1, 0
                        writer.write(row)
                        line = _json_line(row)
                        f.write(line)
                        digest.update(line.encode("utf-8"))
                        n, size = n + 1, size + len(line)
                    if writer is not None:
                        writer.finalize()
                    break
                except Misaligned:
                    continue
                finally:
                    if writer is not None:
                        writer.close()
            if n:
                names = [f"data-{i:05d}-of-{shards:05d}.arrow" for i in range(shards)]
                for i, name in enumerate(names):
                    os.replace(tmp / "ds" / f"part-{i}", tmp / "ds" / name)
                _write_metadata(tmp / "ds", names, digest.hexdigest()[:16])
                replace_dir(tmp / "ds", dataset_dir)
        return n
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_metadata(folder: Path, names: list[str], fingerprint: str) -> None:
    """state.json and dataset_info.json exactly as Dataset.save_to_disk writes them."""
    from datasets import DatasetInfo
    from datasets.utils.py_utils import asdict

    state = {"_fingerprint": fingerprint, "_format_columns": None, "_format_kwargs": {}, "_format_type": None,
             "_output_all_columns": False, "_split": None, "_data_files": [{"filename": name} for name in names]}
    with open(folder / "state.json", "w", encoding="utf-8") as f:
        json.dump(state, f, indent=2, sort_keys=True)
    info = asdict(DatasetInfo(features=features()))
    with open(folder / "dataset_info.json", "w", encoding="utf-8") as f:
        json.dump({key: info[key] for key in sorted(info)}, f, indent=2)


def _json_line(row: dict) -> str:
    return json.dumps(row, ensure_ascii=False) + "\n"
