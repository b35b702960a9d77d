"""Self-contained HTML reports: generic helpers (page, table, embedded PNG plots) plus the agreement report.

The helpers (`html_page`, `table`, `png_base64`, `save_png`, `img`, `pre`) know nothing about agreement and
can build any report. matplotlib is imported lazily with the Agg backend (no display needed).
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from rlaif.store.files import atomic_write_text

# Tables fit the page for any column count: a header wraps at its spaces and after each underscore (table() puts
# a <wbr> there), a text cell also after each / and _, and a number never wraps; tables of many columns (.many) use a
# smaller font. A table still too wide for the page scrolls inside its own box (.table), never the page.
CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
       ".table{max-width:100%;overflow-x:auto;margin:1em 0}"
       "table{border-collapse:collapse;font-size:14px;font-variant-numeric:tabular-nums}"
       "th,td{border:1px solid #bbb;padding:3px 7px;text-align:right}th{background:#eee;vertical-align:bottom}"
       "tbody th{text-align:left;vertical-align:top}"
       ".many table{font-size:12px}.many th,.many td{padding:3px 5px}"
       "td:first-child,th:first-child{text-align:left}img{max-width:100%}"
       "pre{white-space:pre-wrap;background:#f6f6f6;padding:6px;border:1px solid #ddd}.case{margin-bottom:2em}"
       ".warning{background:#fff3cd;border:1px solid #e0b000;padding:8px}")


# ---------------------------------------------------------------- generic helpers

def esc(value) -> str:
    return html.escape(str(value))


def fmt(value, digits: int = 3) -> str:
    """A table cell: floats rounded, [lo, hi] lists as an interval, None as a dash."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) for v in value):
        return "[" + ", ".join(fmt(v, digits) for v in value) + "]"
    return str(value)


MANY_COLUMNS = 10  # above this, a table's font is smaller


def breakable(text: str, after: str = "_") -> str:
    """Escaped text that may wrap after each character of `after` (a <wbr> there): snake_case, paths, hub ids."""
    out = esc(text)
    for ch in after:
        out = out.replace(ch, ch + "<wbr>")
    return out


def table(rows: list[dict], columns: list[str | tuple[str, str]], drop_empty: bool = False,
          transpose: bool = False) -> str:
    """An HTML table; columns are keys or (key, header) pairs. Every cell is escaped. drop_empty leaves out the
    columns that have no value (missing or None) in any row. transpose turns it on its side, for a few rows of
    many fields: the first column's values head the columns and every other column becomes a row."""
    cols = [(c, c) if isinstance(c, str) else c for c in columns]
    if drop_empty:
        cols = [(key, title) for key, title in cols if any(row.get(key) is not None for row in rows)]
    if transpose:
        (first, corner), cols = cols[0], cols[1:]
        head = f"<th>{breakable(corner)}</th>" + "".join(f"<th>{_cell(row.get(first))}</th>" for row in rows)
        body = "".join(f"<tr><th>{breakable(title)}</th>" + "".join(f"<td>{_cell(row.get(key))}</td>" for row in rows)
                       + "</tr>" for key, title in cols)
        width = len(rows) + 1
    else:
        head = "".join(f"<th>{breakable(title)}</th>" for _, title in cols)
        body = "".join("<tr>" + "".join(f"<td>{_cell(row.get(key))}</td>" for key, _ in cols) + "</tr>"
                       for row in rows)
        width = len(cols)
    wrap = "table many" if width > MANY_COLUMNS else "table"
    return f'<div class="{wrap}"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _cell(value) -> str:
    return breakable(value, "/_") if isinstance(value, str) else esc(fmt(value))


def figure(width: float = 6.0, height: float = 4.0, ncols: int = 1):
    """A new Agg figure and its axes (a list when ncols > 1)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(width, height), squeeze=False)
    return fig, list(axes[0]) if ncols > 1 else axes[0][0]


def png_bytes(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def png_base64(fig) -> str:
    """Render a figure to PNG and return it base64-encoded (the figure is closed)."""
    return base64.b64encode(png_bytes(fig)).decode("ascii")


def save_png(fig, path: Path) -> str:
    """Write the figure as a PNG file (atomically, via a temp name) and return its base64 text for embedding."""
    data = png_bytes(fig)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return base64.b64encode(data).decode("ascii")


def img(b64: str, alt: str) -> str:
    return f'<img src="data:image/png;base64,{b64}" alt="{esc(alt)}">'


def pre(text: str, limit: int | None = None) -> str:
    text = str(text)
    if limit is not None and len(text) > limit:
        text = text[:limit] + f" … [{len(text) - limit} more characters]"
    return f"<pre>{esc(text)}</pre>"


def html_page(title: str, sections: list[tuple[str, str]]) -> str:
    """A complete page; each section is (heading, already-escaped HTML body)."""
    parts = [f"<section><h2>{esc(h)}</h2>{body}</section>" for h, body in sections]
    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{esc(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{esc(title)}</h1>{''.join(parts)}</body></html>\n")


# ---------------------------------------------------------------- agreement plots

def plot_agreement(results: dict):
    fig, ax = figure(1.6 + 1.4 * len(results), 3.6)
    names = list(results)
    values = [results[n]["agreement"] or 0.0 for n in names]
    lo = [v - (results[n]["agreement_ci95"] or [v, v])[0] for n, v in zip(names, values)]
    hi = [(results[n]["agreement_ci95"] or [v, v])[1] - v for n, v in zip(names, values)]
    ax.bar(names, values, yerr=[lo, hi], capsize=6, color="#4c78a8")
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("agreement with humans (95% CI)")
    return fig


def plot_per_principle(results: dict):
    judged = {n: r["per_principle"] for n, r in results.items() if r.get("per_principle")}
    ids = sorted({pid for per in judged.values() for pid in per})
    fig, ax = figure(max(4.0, 1.0 + 0.9 * len(ids)), 4.0)
    width = 0.8 / len(judged)
    for k, (name, per) in enumerate(judged.items()):
        xs = [i + k * width for i in range(len(ids))]
        ax.bar(xs, [(per.get(pid) or {}).get("agreement") or 0.0 for pid in ids], width, label=name)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(ids))])
    ax.set_xticklabels([f"{pid}\n(n={sum((p.get(pid) or {}).get('n', 0) for p in judged.values())})" for pid in ids],
                       rotation=30, ha="right", fontsize=8)
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("agreement with humans")
    ax.legend()
    return fig


def confusion(human: list[str], verdicts: list) -> list[list[int]]:
    """Counts: rows judge verdict a/b/tie/none, columns human a/b/tie."""
    rows, cols = ["a", "b", "tie", None], ["a", "b", "tie"]
    return [[sum(h == c and v == r for h, v in zip(human, verdicts)) for c in cols] for r in rows]


def plot_confusion(details: dict, human: list[str]):
    fig, axes = figure(3.2 * len(details), 3.4, ncols=len(details))
    for ax, (name, d) in zip(axes if isinstance(axes, list) else [axes], details.items()):
        m = confusion(human, d["verdicts"])
        ax.imshow(m, cmap="Blues")
        for i, row in enumerate(m):
            for j, count in enumerate(row):
                ax.text(j, i, str(count), ha="center", va="center")
        ax.set_xticks(range(3), ["a", "b", "tie"])
        ax.set_yticks(range(4), ["a", "b", "tie", "none"])
        ax.set_xlabel("human label")
        ax.set_ylabel("judge verdict")
        ax.set_title(name)
    return fig


def plot_reliability(results: dict):
    fig, ax = figure(4.6, 4.2)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    for name, r in results.items():
        cal = r.get("calibration")
        if not cal:
            continue
        used = [b for b in cal["bins"] if b["count"]]
        ax.plot([b["mean_p"] for b in used], [b["frac_positive"] for b in used], marker="o",
                label=f"{name} (Brier {fmt(cal['brier'])}, ECE {fmt(cal['ece'])})")
        for b in used:
            ax.annotate(str(b["count"]), (b["mean_p"], b["frac_positive"]), fontsize=7,
                        textcoords="offset points", xytext=(3, 3))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("judge P(response a better), bin mean")
    ax.set_ylabel("fraction of pairs humans labelled a")
    ax.legend(fontsize=8)
    return fig


# ---------------------------------------------------------------- agreement report

COLUMNS = [("judge", "judge"), ("judge_model", "model"), ("n_pairs", "n"), ("n_decided", "decided"),
           ("agreement", "agreement"), ("agreement_ci95", "95% CI"), ("agreement_with_ties", "with ties"),
           ("cohen_kappa", "kappa"), ("position_consistency", "position consistency"),
           ("prefer_first", "prefer first"), ("prefer_longer_judge", "prefer longer (judge)"),
           ("prefer_longer_human", "prefer longer (human)"), ("parse_failures", "parse failures"),
           ("brier", "Brier"), ("ece", "ECE"), ("human_agreement", "human-human (leave one out)"),
           ("agreement_loo", "judge-human (leave one out)"), ("seconds", "seconds")]


def disagreements(pairs, human: list[str], verdicts: list, p_a: list, k: int = 10) -> list[tuple]:
    """The k pairs where the judge is most confident (|p_a - 0.5|) and its verdict differs from the human label."""
    cases = [(abs(p - 0.5), pair, h, p) for pair, h, v, p in zip(pairs, human, verdicts, p_a)
             if p is not None and v is not None and v != h]
    cases.sort(key=lambda c: -c[0])
    return [(pair, h, p) for _, pair, h, p in cases[:k]]


def agreement_report(root: Path, results: dict, details: dict, pairs, *, constitution: str, source: str) -> Path:
    """Write root/report.html plus agreement.png, per_principle.png, confusion.png, reliability.png."""
    from rlaif.evaluation.metrics import majority_label

    root = Path(root)
    human = [majority_label(p.labels) for p in pairs]
    rows = [{**r, **{k: (r.get("calibration") or {}).get(k) for k in ("brier", "ece")}} for r in results.values()]
    sections = [("Summary", f"<p>{len(pairs)} human-labelled pairs from {esc(source)}; constitution "
                 f"{esc(constitution)}. Agreement counts pairs where both human and judge chose a or b. "
                 "<code>length</code> prefers the longer response, <code>random</code> is a seeded coin: "
                 "baselines a useful judge should beat. With several annotators, only the two leave-one-out columns "
                 "compare: each held-out annotator, and the judge, against the majority of the other annotators. "
                 "The 95% CI is Wilson's score interval on the decided pairs.</p>"
                 + "".join(f"<p>Judge <code>{esc(n)}</code> is a reward model ({esc(r.get('judge_model') or '')}), mode "
                           "<code>reward</code>: it scores each response alone and P(a better) = sigmoid(r_a - r_b), "
                           "the same in both orders, so its position bias is zero by construction (position "
                           "consistency 1, prefer-first 0.5).</p>" for n, r in results.items() if r.get("mode") == "reward")
                 + "".join(f"<p>Judge <code>{esc(n)}</code> ({esc(r.get('judge_model') or '')}) judged in mode "
                           "<code>rating</code>: it rates each response alone against the principle, 1 to 9, read "
                           "from the label log-probs, and P(a better) = P(R_a > R_b) + P(R_a = R_b) / 2, the same in "
                           "both orders, so its position bias is zero by construction (position consistency 1, "
                           "prefer-first 0.5).</p>" for n, r in results.items() if r.get("mode") == "rating")
                 + table(rows, COLUMNS)),
                ("Agreement", img(save_png(plot_agreement(results), root / "agreement.png"), "agreement"))]
    if any(r.get("per_principle") for r in results.values()):
        per_rows = [{"judge": n, "principle": pid, **v} for n, r in results.items()
                    for pid, v in (r.get("per_principle") or {}).items()]
        sections.append(("Agreement per principle",
                         img(save_png(plot_per_principle(results), root / "per_principle.png"), "per principle")
                         + table(per_rows, ["judge", "principle", "n", "n_decided", "agreement"])))
    sections.append(("Confusion matrices", img(save_png(plot_confusion(details, human), root / "confusion.png"),
                                               "confusion matrices")))
    if any(r.get("calibration") for r in results.values()):
        sections.append(("Reliability diagram", "<p>Binned judge P(a better) against how often humans chose a; "
                         "numbers are pairs per bin.</p>"
                         + img(save_png(plot_reliability(results), root / "reliability.png"), "reliability")))
    else:
        sections.append(("Reliability diagram", "<p>No model judge in this run: the baselines give no probabilities, "
                         "so there is no calibration or reliability plot.</p>"))
    for name, d in details.items():
        if d.get("p_a") is None:
            continue
        cases = disagreements(pairs, human, d["verdicts"], d["p_a"])
        body = "".join(
            f"<div class=\"case\"><h3>{esc(pair.pair_id)}: human {esc(h)}, judge P(a better) = {p:.3f}</h3>"
            f"<b>prompt</b>{pre(pair.prompt, 500)}<b>response a</b>{pre(pair.response_a, 2000)}"
            f"<b>response b</b>{pre(pair.response_b, 2000)}</div>" for pair, h, p in cases)
        sections.append((f"Most confident disagreements: {name}", body or "<p>None.</p>"))
    path = root / "report.html"
    atomic_write_text(path, html_page(f"Judge-human agreement: {constitution}", sections))
    return path
