"""report.html: one self-contained page per dataset version for the person who approves it, readable offline.

Counts, token-length histograms (matplotlib, embedded as images), the data-quality checks with the examples
they found, counts per category and source, what was dropped and why with examples, sample examples, epochs
and cost, warnings, and what changed since the previous version (examples added, removed or changed, by
example_id).

Crawled text is untrusted: every value goes through `html.escape`, the plots are <img> data (an SVG shown as
an image runs nothing), and a Content-Security-Policy forbids scripts, so a page that contains `<script>` or
`onerror=` shows as text. What the report needs is gathered while the build streams, in bounded memory;
the diff is joined in a temporary SQLite file, not in dicts.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import html
import io
import os
import sqlite3
import tempfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterator

import orjson

from configs import QualityConfig
from transforms.example import Example
from transforms.quality import QualityChecks
from transforms.review_app import URL, example_url
from transforms.stage import Dropped
from transforms.version import Manifest

SAMPLES = 6
DROP_EXAMPLES = 5
DIFF_ROWS = 20
_EXCERPT = 240
POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"  # no script runs in the report


class _Html(str):
    """Markup made here, from escaped parts: `_e` leaves it as it is."""


def _e(value: Any) -> str:
    if isinstance(value, _Html):
        return value
    return html.escape("" if value is None else str(value), quote=True)


def _linked(version: str, example_id: str) -> _Html:
    """An example_id that opens the example in the review app (`review serve`, at its default port)."""
    return _Html(f'<a href="{_e(example_url(version, example_id))}">{_e(example_id)}</a>')


def _excerpt(text: str, limit: int = _EXCERPT) -> str:
    text = " ".join(str(text)[: limit * 3].split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _digest(line: bytes) -> bytes:
    return hashlib.sha256(line.rstrip(b"\n")).digest()[:16]


class ReportCollector:
    """Gathers counts, samples, per-example digests and the data-quality checks while the build streams its
    examples."""

    def __init__(self, quality: QualityConfig) -> None:
        self.by_category: Counter = Counter()  # (category, split) → examples
        self.lines: Counter = Counter()  # split → examples written, so the line of the last one
        self.quality = QualityChecks(quality)
        self.tokens_by_category: Counter = Counter()
        self.by_source: Counter = Counter()
        self.by_section: Counter = Counter()  # (url, section) → generated examples
        self.samples: list[tuple[str, int, dict[str, Any]]] = []  # max-heap on example_id via negation trick
        self.drops: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
        handle, name = tempfile.mkstemp(prefix="crawl2tune-report-", suffix=".sqlite")
        os.close(handle)
        self.db_path = Path(name)
        self.db = sqlite3.connect(self.db_path)
        self.db.executescript("""
            PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;
            CREATE TABLE current (example_id TEXT PRIMARY KEY, digest BLOB, split TEXT, url TEXT, question TEXT);
            CREATE TABLE previous (example_id TEXT PRIMARY KEY, digest BLOB, split TEXT, url TEXT, title TEXT,
                                   section TEXT);
        """)
        self.pending: list[tuple] = []

    def close(self) -> None:
        self.db.close()
        self.db_path.unlink(missing_ok=True)

    def add(self, example: Example, line: bytes) -> None:
        self.by_category[(example.category, example.split)] += 1
        self.tokens_by_category[example.category] += example.tokens
        self.by_source[(example.source, example.split)] += 1
        if example.generated:
            self.by_section[(example.url, example.section or "")] += 1
        self.lines[example.split] += 1
        self.quality.add(example, self.lines[example.split])
        self.pending.append((example.example_id, _digest(line), example.split, example.url,
                             _excerpt(example.question, 120)))
        if len(self.pending) >= 5000:
            self._flush()
        key = _negate(example.example_id)
        if len(self.samples) < SAMPLES or key > self.samples[0][0]:
            sample = (example.example_id, example.model_dump(include={"example_id", "split", "url", "category",
                                                                       "tokens", "messages"}))
            if len(self.samples) < SAMPLES:
                heapq.heappush(self.samples, (key, sample))
            else:
                heapq.heapreplace(self.samples, (key, sample))

    def quality_summary(self) -> dict[str, Any]:
        """The manifest's `quality` block (see transforms.quality)."""
        categories: Counter = Counter()
        for (category, _), n in self.by_category.items():
            categories[category] += n
        return self.quality.summary(categories)

    def _flush(self) -> None:
        self.db.executemany("INSERT OR REPLACE INTO current VALUES (?, ?, ?, ?, ?)", self.pending)
        self.pending = []

    def dropped(self, drop: Dropped) -> None:
        examples = self.drops[(drop.stage, drop.reason)]
        if len(examples) >= DROP_EXAMPLES:
            return
        record = drop.record
        if isinstance(record, Example):
            text = f"Q: {record.question}\nA: {record.answer}"
        else:
            text = getattr(record, "text", "") or ""
        examples.append({"url": getattr(record, "url", "") or "", "detail": drop.detail, "text": _excerpt(text)})

    # -- the diff against the previous version ---------------------------------------------------------------

    def diff(self, previous: Path | None) -> dict[str, Any] | None:
        self._flush()
        if previous is None or not (previous / "metadata.jsonl").exists():
            return None
        rows = []
        for meta, line in _version_lines(previous):
            rows.append((meta["example_id"], _digest(line), meta.get("split"), meta.get("url"), meta.get("title"),
                         meta.get("section")))
            if len(rows) >= 5000:
                self.db.executemany("INSERT OR REPLACE INTO previous VALUES (?, ?, ?, ?, ?, ?)", rows)
                rows = []
        self.db.executemany("INSERT OR REPLACE INTO previous VALUES (?, ?, ?, ?, ?, ?)", rows)
        q = self.db.execute
        result: dict[str, Any] = {"previous": previous.name}
        queries = {
            "added": ("FROM current c LEFT JOIN previous p USING (example_id) WHERE p.example_id IS NULL",
                      "c.example_id, c.split, c.url, c.question"),
            "removed": ("FROM previous p LEFT JOIN current c USING (example_id) WHERE c.example_id IS NULL",
                        "p.example_id, p.split, p.url, coalesce(p.title || ' - ' || p.section, p.title)"),
            "changed": ("FROM current c JOIN previous p USING (example_id) WHERE c.digest != p.digest",
                        "c.example_id, c.split, c.url, c.question"),
        }
        for kind, (where, columns) in queries.items():
            result[kind] = q(f"SELECT count(*) {where}").fetchone()[0]
            result[f"{kind}_rows"] = q(f"SELECT {columns} {where} ORDER BY 3, 1 LIMIT {DIFF_ROWS}").fetchall()
        return result


_REVERSED_HEX = str.maketrans("0123456789abcdef", "fedcba9876543210")


def _negate(example_id: str) -> str:
    """A key whose order is the reverse of example_id's (hex), so a min-heap keeps the smallest ids."""
    return example_id.translate(_REVERSED_HEX)


def _version_lines(version: Path) -> Iterator[tuple[dict[str, Any], bytes]]:
    """(metadata, train/test line) of every example of a version, in the sidecar's order."""
    files = {split: open(version / f"{split}.jsonl", "rb") for split in ("train", "test")
             if (version / f"{split}.jsonl").exists()}
    try:
        with open(version / "metadata.jsonl", "rb") as meta_file:
            for raw in meta_file:
                meta = orjson.loads(raw)
                source = files.get(meta.get("split"))
                line = source.readline() if source else b""
                yield meta, line
    finally:
        for f in files.values():
            f.close()


# -- plots -----------------------------------------------------------------------------------------------

def token_histogram(tokens: dict[str, Any], limit: int) -> str:
    """An SVG histogram of tokens per example, train and test, as a data: URI for an <img>.

    The bins are counted with numpy and drawn as one filled step outline per split: the same picture as
    `hist`'s bars, without an artist per bar."""
    import numpy as np
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 3.2), dpi=100)
    axes = figure.add_subplot()
    values = [np.asarray(tokens.get(split, ()), dtype=np.int64) for split in ("train", "test")]
    top = max((int(v.max()) for v in values if len(v)), default=1)
    edges = np.linspace(0, top, 41)
    for series, label, color in zip(values, ("train", "test"), ("#3b6ea8", "#e08a2c")):
        if len(series):
            counts, _ = np.histogram(series, bins=edges)
            axes.stairs(counts, edges, fill=True, alpha=0.7, label=f"{label} ({len(series):,})", color=color)
    if limit and limit <= top * 1.2:
        axes.axvline(limit, color="#b00020", linestyle="--", label=f"limit {limit:,}")
    axes.set_xlabel("tokens per example (exact, as billed)")
    axes.set_ylabel("examples")
    axes.legend(loc="upper right", fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


# -- the page --------------------------------------------------------------------------------------------

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI","Noto Sans KR","Malgun Gothic",sans-serif;margin:2rem auto;
max-width:70rem;padding:0 1rem;color:#1d1d1f;line-height:1.45}
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}td,th{border:1px solid #ddd;padding:.25rem .5rem;
text-align:left;vertical-align:top}th{background:#f4f4f6}td.n{text-align:right;font-variant-numeric:tabular-nums}
.warn{background:#fff4e5;border-left:4px solid #e08a2c;padding:.5rem 1rem}pre{white-space:pre-wrap;
word-break:break-word;background:#f7f7f9;padding:.5rem;margin:.25rem 0;max-height:24rem;overflow:auto}
.bar{background:#3b6ea8;height:.7rem;display:inline-block}.muted{color:#666}.msg{margin:.4rem 0}
"""


def _table(headers: list[str], rows: list[list[Any]], numeric: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td class="n">{_e(_fmt(c))}</td>' if i in numeric else f"<td>{_e(c)}</td>"
                         for i, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4f}".rstrip("0").rstrip(".")
    if isinstance(value, int):
        return f"{value:,}"
    return "" if value is None else str(value)


def _percent(value: float) -> str:
    return f"{value:.1%}"


def _place(sample: dict[str, Any]) -> str:
    return f"{sample['split']}.jsonl:{sample['line']}"


def _quality(block: dict[str, Any], version: str) -> str:
    """The data-quality section: its warnings, one row per check (figure, threshold), the examples found."""
    def link(example_id: str) -> _Html:
        return _linked(version, example_id)

    checks = block["checks"]
    parts = ["<h2>Data quality</h2>"]
    if block["warnings"]:
        parts.append('<div class="warn"><strong>Data-quality warnings</strong> (nothing was dropped for them)<ul>'
                     + "".join(f"<li>{_e(w)}</li>" for w in block["warnings"]) + "</ul></div>")
    refusals, balance, fmt = checks["refusals"], checks["category_balance"], checks["format"]
    short, repeated = checks["short_answers"], checks["repeated_answers"]
    ratio = balance.get("ratio")
    rows = [
        ["refusal-like answers", f"{refusals['count']:,} ({_percent(refusals['share'])})"
         if refusals["patterns"] else "off (no patterns)", f"> {_percent(refusals['threshold'])}", refusals],
        ["category imbalance (largest ÷ smallest)", "one category" if ratio is None else
         f"{ratio:g}×: {balance['largest']['category']} {balance['largest']['examples']:,}, "
         f"{balance['smallest']['category']} {balance['smallest']['examples']:,}", f"> {balance['threshold']:g}×",
         balance],
        ["format outliers", f"{fmt['count']:,} ({_percent(fmt['share'])}) differ from `{fmt['usual']}`",
         f"> {_percent(fmt['threshold'])}", fmt],
        [f"very short answers (< {short['min_tokens']} tokens)", f"{short['count']:,} ({_percent(short['share'])})",
         f"> {_percent(short['threshold'])}", short],
        ["repeated answers (verbatim, across pages)", f"{repeated['count']:,} ({_percent(repeated['share'])})",
         f"> {_percent(repeated['threshold'])}", repeated],
    ]
    parts.append(_table(["check", "figure", "warns above", "result"],
                        [[name, figure, limit, "warning" if check["warn"] else "ok"]
                         for name, figure, limit, check in rows]))
    found = [[_place(s), link(s["example_id"]), "refusal-like", s["excerpt"]] for s in refusals["examples"]]
    found += [[_place(s), link(s["example_id"]), f"{o['differs']}: {o['structure']}", ""]
              for o in fmt["outliers"] for s in o["examples"]]
    found += [[_place(s), link(s["example_id"]), "very short", f"{s['answer_tokens']} answer tokens"]
              for s in short["examples"]]
    found += [[_place(s), link(s["example_id"]), f"repeated in {g['examples']} examples of {g['pages']} pages",
               g["excerpt"] or ""] for g in repeated["groups"] for s in g["examples_listed"]]
    if found:
        parts.append("<h3>Examples found (the first few of each)</h3>")
        parts.append(_table(["file:line", "example_id", "finding", "text"], found))
    return "\n".join(parts)


SECTION_ROWS = 100


def _generation(generation: dict[str, Any], collector: ReportCollector) -> str:
    """Generated pairs: the model and cost, questions per style, examples per section (their drops are below)."""
    parts = ["<h2>Generated pairs</h2>", _table(["", ""], [
        ["generator", f"{generation['model']} ({generation['provider']})"],
        ["cost of the cached pairs (USD)", f"{generation['cost_usd']:.4f}"],
        ["held out into the recall set", f"{generation['recall_examples']:,} ({generation['recall_file'] or 'none'})"],
    ])]
    styles = generation.get("questions_by_style") or {}
    parts.append(_table(["style", "questions"], sorted(styles.items()), numeric={1}))
    rows = sorted(collector.by_section.items())
    parts.append(f"<h3>Examples per section ({len(rows):,} sections)</h3>")
    parts.append(_table(["url", "section", "examples"], [[url, section or "(intro)", n]
                                                          for (url, section), n in rows[:SECTION_ROWS]], numeric={2}))
    if len(rows) > SECTION_ROWS:
        parts.append(f"<p class=\"muted\">… and {len(rows) - SECTION_ROWS:,} more sections</p>")
    return "".join(parts)


def render(manifest: Manifest, collector: ReportCollector, tokens: dict[str, Any],
           diff: dict[str, Any] | None) -> str:
    c, t = manifest.counts, manifest.tokens
    title = f"{manifest.dataset} {manifest.version}"

    def link(example_id: str) -> _Html:
        return _linked(manifest.version, example_id)

    parts = [
        "<!DOCTYPE html><html lang=\"ko\"><head><meta charset=\"utf-8\">",
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{POLICY}\">",
        f"<title>crawl2tune report: {_e(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>Dataset {_e(title)}</h1>",
        f"<p class=\"muted\">built {_e(manifest.created_at)} for {_e(manifest.model)} "
        f"({_e(manifest.format or 'chat')} format) · config {_e(manifest.config_hash[:12])}</p>",
    ]
    parts.append(f'<p class="muted">Each example_id opens the example beside its source in the review app, '
                 f'while <code>python pipeline.py review serve</code> runs (at {_e(URL)}).</p>')
    if manifest.warnings:
        parts.append('<div class="warn"><strong>Warnings</strong><ul>'
                     + "".join(f"<li>{_e(w)}</li>" for w in manifest.warnings) + "</ul></div>")
    parts.append("<h2>Summary</h2>")
    summary = [
        ["documents", c["documents"]], ["examples", c["examples"]], ["train", c["train"]], ["test", c["test"]],
        ["dropped", sum(c["dropped"].values())], ["tokens (all examples)", t["total"]],
        ["tokens (train)", t["train"]], ["largest example", t["max_example"]], ["token limit", t["limit"]],
        ["epochs", manifest.n_epochs], ["billed tokens", manifest.billed_tokens],
        ["estimated training cost (USD)", manifest.estimated_cost_usd],
    ]
    fraction = manifest.fraction
    if fraction["value"] < 1:  # left out by design: counted, not listed with the drops
        summary.insert(4, [f"examples outside fraction {fraction['value']:g}", fraction["examples_outside"]])
    parts.append(_table(["", "value"], summary, numeric={1}))
    if manifest.quality:
        parts.append(_quality(manifest.quality, manifest.version))
    parts.append("<h2>Tokens per example</h2>")
    if c["examples"]:
        parts.append(f'<img alt="histogram of tokens per example" src="{token_histogram(tokens, t["limit"])}">')

    parts.append("<h2>Examples per category</h2>")
    categories = sorted({cat for cat, _ in collector.by_category})
    most = max((collector.by_category[(cat, "train")] + collector.by_category[(cat, "test")]
                for cat in categories), default=1)
    rows = []
    for cat in categories:
        train, test = collector.by_category[(cat, "train")], collector.by_category[(cat, "test")]
        rows.append([cat, train, test, train + test, collector.tokens_by_category[cat]])
    parts.append(_table(["category", "train", "test", "examples", "tokens"], rows, numeric={1, 2, 3, 4}))
    if categories:
        parts.append("<div>" + "".join(
            f'<div><span class="bar" style="width:{max(1, round(20 * (r[3] / most)))}rem"></span> '
            f"<span class=\"muted\">{_e(r[0])} ({r[3]:,})</span></div>" for r in rows) + "</div>")
    parts.append("<h2>Examples per source</h2>")
    sources = sorted({src for src, _ in collector.by_source})
    parts.append(_table(["source", "train", "test"], [
        [src, collector.by_source[(src, "train")], collector.by_source[(src, "test")]] for src in sources
    ], numeric={1, 2}))

    if manifest.generation:
        parts.append(_generation(manifest.generation, collector))
    parts.append("<h2>Dropped, by reason</h2>")
    stage_rows = [[stage, reason, n] for stage, log in manifest.stages.items()
                  for reason, n in log["dropped"].items()]
    parts.append(_table(["stage", "reason", "count"], stage_rows, numeric={2}) if stage_rows
                 else "<p>Nothing was dropped.</p>")
    for (stage, reason), examples in sorted(collector.drops.items()):
        parts.append(f"<h3>{_e(stage)}: {_e(reason)}</h3>")
        parts.append(_table(["url", "detail", "text"], [[x["url"], x["detail"], x["text"]] for x in examples]))

    extra = []
    if manifest.pii:
        pii = manifest.pii
        extra.append(["personal data", f"{pii.get('mode')}: " + (", ".join(
            f"{kind} {n:,}" for kind, n in pii.get("found", {}).items()) or "none found")])
    if manifest.dedup:
        d = manifest.dedup
        extra.append(["duplicates", f"exact {d['exact']:,}, near {d['near']:,} (threshold {d['threshold']})"])
    if manifest.review:
        r = manifest.review
        extra.append(["review decisions", f"excluded {r['excluded']:,}, edited {r['edited']:,}, stored "
                                          f"{r['stored']:,}, not matching any example {r['unmatched']:,}"])
    if extra:
        parts.append("<h2>Personal data, duplicates, review</h2>" + _table(["", ""], extra))
        pairs = manifest.dedup.get("pairs") or []
        if pairs:
            parts.append(_table(["dropped example", "duplicate of", "kind", "similarity"], [
                [p["example_id"], link(p["duplicate_of"]), p["kind"], p["similarity"]] for p in pairs[:DIFF_ROWS]]))

    parts.append('<h2 id="changes">Changes since the previous version</h2>')
    if diff is None:
        parts.append("<p>This is the first version of the dataset.</p>")
    else:
        parts.append(f"<p>Against {_e(diff['previous'])}: {diff['added']:,} examples added, "
                     f"{diff['removed']:,} removed, {diff['changed']:,} changed.</p>")
        for kind in ("added", "removed", "changed"):
            if diff[f"{kind}_rows"]:
                parts.append(f"<h3>{kind} (first {DIFF_ROWS})</h3>")
                rows = [[link(r[0]) if kind != "removed" else r[0], *r[1:]] for r in diff[f"{kind}_rows"]]
                parts.append(_table(["example_id", "split", "url", "question / page"], rows))

    parts.append("<h2>Sample examples</h2>")
    for _, sample in sorted(collector.samples, key=lambda s: s[1][0]):
        _, data = sample
        parts.append(f"<h3>{_e(link(data['example_id']))} · {_e(data['split'])} · {_e(data['tokens'])} tokens</h3>"
                     f"<p class=\"muted\">{_e(data['category'])} · {_e(data['url'])}</p>")
        for message in data["messages"]:
            weight = f" (weight {message['weight']})" if "weight" in message else ""
            parts.append(f"<div class=\"msg\"><strong>{_e(message.get('role'))}{_e(weight)}</strong>"
                         f"<pre>{_e(message.get('content'))}</pre></div>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
