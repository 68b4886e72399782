"""The `evaluate --set` report: one self-contained HTML page, tables and inline SVG plots, every text escaped.

Questions, references, answers, titles and the judge's reasons all come from crawled pages or model output;
each goes through `_e`, and matplotlib's SVG is inlined after its text elements were rendered as paths (no
fonts fetched, no text to inject), under a CSP that forbids scripts and fetches.
"""

from __future__ import annotations

import io
from typing import Any

from finetune.evaluate import _e, _generated, _page

_NAMES = {"judge": "judge score (correct 1, partly correct 0.5, wrong 0, rightly declined 1)",
          "chrf": "chrF (character n-gram F-score against the reference, 0–1; refusal set: 1 when declined)"}
_WHY = {"judge": "The judge's grade is the headline: it reads meaning against the reference and its source "
                 "section, and is the only score that credits a right refusal; chrF and token F1 are shown beside it.",
        "chrf": "chrF is the headline because no judge is configured (finetune.evaluation.judge): it compares "
                "characters, so Korean particles (설정은/설정을) do not hide a match the way word-level token F1 does."}


def _svg(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    with plt.rc_context({"svg.fonttype": "path"}):
        fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _plots(card) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols, sets = list(card.columns), card.sets
    fig, ax = plt.subplots(figsize=(7, 3))
    width = 0.8 / max(1, len(cols))
    for j, col in enumerate(cols):
        means = [card.summary["sets"][s]["columns"][col]["headline"]["mean"] or 0 for s in sets]
        lows = [m - (card.summary["sets"][s]["columns"][col]["headline"]["low"] or 0) for m, s in zip(means, sets)]
        highs = [(card.summary["sets"][s]["columns"][col]["headline"]["high"] or 0) - m for m, s in zip(means, sets)]
        ax.bar([i + j * width for i in range(len(sets))], means, width, yerr=[lows, highs], label=col, capsize=3)
    ax.set_xticks([i + width * (len(cols) - 1) / 2 for i in range(len(sets))], sets)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(card.headline)
    ax.legend(fontsize=7)
    bars = _svg(fig)
    fig, ax = plt.subplots(figsize=(7, 2.6))
    for col in cols:
        ax.hist([a["chrf"] for r in card.rows for c, a in r["answers"].items() if c == col], bins=20, range=(0, 1),
                histtype="step", label=col)
    ax.set_xlabel("chrF per answer")
    ax.legend(fontsize=7)
    return f"<div>{bars}</div><div>{_svg(fig)}</div>"


def _cell(stats: dict[str, Any]) -> str:
    if stats["mean"] is None:
        return "<td>–</td>"
    interval = f"[{stats['low']:.3f}, {stats['high']:.3f}]"
    return f"<td class=\"score\">{stats['mean']:.3f} <span class=\"src\">{interval}</span></td>"


_ROWS = (("chrf", "chrF"), ("token_f1", "token F1"), ("seconds_per_answer", "seconds per answer"),
         ("tokens_per_answer", "tokens per answer"), ("cost_per_answer_usd", "USD per answer"))


def _set_rows(by_column: dict[str, dict[str, Any]], cols: list[str]) -> str:
    """The headline with its interval, the other scores, cost and latency, and the grade counts, per column."""
    rows = ["<tr><td>headline</td>" + "".join(_cell(by_column[c]["headline"]) for c in cols) + "</tr>"]
    for key, label in _ROWS:
        values = [by_column[c][key] for c in cols]
        rows.append(f"<tr><td>{_e(label)}</td>"
                    + "".join(f"<td>{_e('–' if v is None else v)}</td>" for v in values) + "</tr>")
    grades = [", ".join(f"{g} {n}" for g, n in sorted(by_column[c]["grades"].items())) or "–" for c in cols]
    rows.append("<tr><td>grades</td>" + "".join(f"<td>{_e(g)}</td>" for g in grades) + "</tr>")
    return "".join(rows)


def render(card) -> str:
    s, cols = card.summary, list(card.columns)
    head = "".join(f"<th>{_e(c)}<div class=\"src\">{_e(card.columns[c])}</div></th>" for c in cols)
    parts = [f"<h1>{_e(card.dataset.label)}: {_e(' · '.join(cols))} on {_e(', '.join(card.sets))}</h1>",
             f"<p>{_e(s['verdict'])}</p>",
             f"<p><b>Headline:</b> {_e(_NAMES[card.headline])}. {_e(_WHY[card.headline])} "
             f"Brackets: bootstrap 95 % intervals. Generated {_generated()}.</p>",
             _plots(card)]
    for set_name in card.sets:
        entry = s["sets"][set_name]
        recall = entry.get("recall_at_k")
        parts.append(f"<h2>{_e(set_name)} ({entry['questions']} questions)"
                     + (f" · retrieval recall@{recall['k']}: {recall['value']:.3f}" if recall else "") + "</h2>")
        parts.append("<table><tr><th></th>" + head + "</tr>" + _set_rows(entry["columns"], cols) + "</table>")
        parts.append("<h3>per category</h3><table><tr><th>category</th>" + head + "</tr>"
                     + "".join(f"<tr><td>{_e(cat)}</td>{''.join(_cell(by[c]) for c in cols)}</tr>"
                               for cat, by in entry["categories"].items()) + "</table>")
    parts.append("<h2>answers</h2><table><tr><th>set</th><th>question</th><th>reference</th>" + head + "</tr>")
    for row in card.rows:
        cells = []
        for c in cols:
            a = row["answers"][c]
            grade = f" · {_e(a['grade'])}: {_e(a.get('reason'))}" if a.get("grade") else ""
            cells.append(f"<td><div class=\"score\">chrF {a['chrf']:.3f}{grade}</div>"
                         f"<div class=\"text\">{_e(a['text'])}</div></td>")
        source = " · ".join(_e(x) for x in (row.get("title"), row.get("url")) if x)
        parts.append(f"<tr><td>{_e(row['set'])}</td><td><div class=\"text\">{_e(row['question'])}</div>"
                     f"<div class=\"src\">{source}</div></td><td><div class=\"text\">{_e(row['reference'])}</div></td>"
                     + "".join(cells) + "</tr>")
    parts.append("</table>")
    return _page(f"{card.dataset.label}: evaluation", "".join(parts))
