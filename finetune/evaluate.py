"""`evaluate`: ask the base and the tuned model every test question; score both against the reference answer.

The score is token-overlap F1 (SQuAD-style, over lower-cased \\w+ tokens): cheap, deterministic and readable,
a first signal for a reviewer rather than a verdict. Requests run on a bounded thread pool and the first
error stops the run. The HTML report is one self-contained file; every text in it is escaped, because
questions, references and answers all come from crawled pages or model output and are untrusted.
"""

from __future__ import annotations

import html
import json
import os
import re
import statistics
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from finetune.backend import Backend, ChatReply, Refused
from finetune.launch import Dataset

_WORD = re.compile(r"\w+")


def similarity(answer: str, reference: str) -> float:
    """Token F1 between an answer and the reference, in [0, 1]."""
    got, want = Counter(_WORD.findall(answer.lower())), Counter(_WORD.findall(reference.lower()))
    if not got or not want:
        return float(got == want)
    overlap = sum((got & want).values())
    if not overlap:
        return 0.0
    precision, recall = overlap / sum(got.values()), overlap / sum(want.values())
    return 2 * precision * recall / (precision + recall)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


@dataclass(frozen=True)
class Question:
    line: int
    prompt: list[dict[str, Any]]  # the messages before the reference answer
    reference: str
    meta: dict[str, Any] = field(default_factory=dict)  # url, title, category from metadata.jsonl

    @property
    def question(self) -> str:
        return next((_text(m.get("content")) for m in reversed(self.prompt) if m.get("role") == "user"), "")


def load_questions(ds: Dataset, limit: int | None = None) -> list[Question]:
    if not ds.test.is_file() or ds.test.stat().st_size == 0:
        raise Refused(f"the test split of {ds.label} is empty: nothing to evaluate; raise dataset.test_fraction "
                      "and rebuild with `python pipeline.py build`")
    meta: dict[int, dict[str, Any]] = {}
    sidecar = ds.dir / "metadata.jsonl"
    if sidecar.is_file():
        for raw in sidecar.read_text(encoding="utf-8").splitlines():
            row = json.loads(raw)
            if row.get("split") == "test":
                meta[row["line"]] = row
    questions = []
    for line, raw in enumerate(ds.test.read_text(encoding="utf-8").splitlines(), start=1):
        if not raw.strip():
            continue
        example = json.loads(raw)
        messages = example.get("messages") if isinstance(example, dict) else None
        if not isinstance(messages, list):
            raise Refused(f"{ds.test} line {line} is not a chat example; `evaluate` asks chat models only")
        last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
        if last is None or last == 0:
            continue
        questions.append(Question(line, messages[:last], _text(messages[last].get("content")), meta.get(line, {})))
        if limit and len(questions) >= limit:
            break
    return questions


@dataclass
class Evaluation:
    dataset: Dataset
    models: dict[str, str]  # role ("base", "tuned") -> model name
    rows: list[dict[str, Any]]
    jsonl: Path
    html: Path

    def mean(self, role: str) -> float:
        return statistics.fmean(r["answers"][role]["score"] for r in self.rows) if self.rows else 0.0


def output_dir(ds: Dataset, model: str, base: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{model}--vs--{base}").strip("_")
    return ds.dir / "evaluations" / slug


def evaluate(backend: Backend, ds: Dataset, *, model: str, base: str, temperature: float = 0.0,
             concurrency: int = 4, max_tokens: int | None = None, max_examples: int | None = None,
             out: Path | None = None, on_answer: Callable[[int, int], None] = lambda done, total: None) -> Evaluation:
    questions = load_questions(ds, max_examples)
    if not questions:
        raise Refused(f"the test split of {ds.label} holds no question with a reference answer")
    models = {"base": base, "tuned": model}
    replies: dict[tuple[int, str], ChatReply] = {}
    total = len(questions) * len(models)
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="evaluate") as pool:
        futures: dict[Future[ChatReply], tuple[int, str]] = {
            pool.submit(backend.chat, name, q.prompt, temperature=temperature, max_tokens=max_tokens): (i, role)
            for i, q in enumerate(questions) for role, name in models.items()
        }
        try:
            for future in as_completed(futures):
                replies[futures[future]] = future.result()
                on_answer(len(replies), total)
        except BaseException:
            for pending in futures:
                pending.cancel()
            raise
    rows = []
    for i, q in enumerate(questions):
        answers = {}
        for role, name in models.items():
            reply = replies[(i, role)]
            answers[role] = {"model": name, "text": reply.text, "score": round(similarity(reply.text, q.reference), 4),
                             "finish_reason": reply.finish_reason}
        rows.append({"line": q.line, "url": q.meta.get("url"), "title": q.meta.get("title"),
                     "question": q.question, "reference": q.reference, "answers": answers})
    out = out or output_dir(ds, model, base)
    out.mkdir(parents=True, exist_ok=True)
    result = Evaluation(ds, models, rows, out / "results.jsonl", out / "report.html")
    _write(result.jsonl, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    _write(result.html, render_html(result, temperature=temperature))
    return result


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI","Noto Sans KR",sans-serif;margin:2rem;color:#1b1f24}
h1{font-size:1.3rem}table{border-collapse:collapse;width:100%;table-layout:fixed}
th,td{border:1px solid #d0d7de;padding:.5rem;vertical-align:top;text-align:left}
th{background:#f6f8fa}td div.text{white-space:pre-wrap;word-break:break-word;max-height:24rem;overflow:auto}
.score{font-weight:600}.better{background:#e6ffec}.src{color:#57606a;font-size:.85em;word-break:break-all}
.means td{font-size:1.05rem}
"""


def render_html(ev: Evaluation, *, temperature: float) -> str:
    """One self-contained page; `e()` escapes every piece of text, and the CSP forbids scripts and fetches."""
    e = lambda value: html.escape("" if value is None else str(value), quote=True)  # noqa: E731
    base, tuned = ev.models["base"], ev.models["tuned"]
    head = (
        "<!doctype html><html><head><meta charset=\"utf-8\">"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        f"<title>{e(ev.dataset.label)}: {e(tuned)} vs {e(base)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{e(ev.dataset.label)}: tuned vs base on {len(ev.rows)} test questions</h1>"
        f"<p>temperature {e(temperature)} · score: token F1 against the reference answer (0–1) · "
        f"generated {e(datetime.now(timezone.utc).isoformat(timespec='seconds'))}</p>"
        "<table class=\"means\"><tr><th>model</th><th>role</th><th>mean score</th></tr>"
        f"<tr><td>{e(base)}</td><td>base</td><td class=\"score\">{ev.mean('base'):.3f}</td></tr>"
        f"<tr><td>{e(tuned)}</td><td>tuned</td><td class=\"score\">{ev.mean('tuned'):.3f}</td></tr></table><br>"
        "<table><colgroup><col style=\"width:3rem\"><col><col><col><col></colgroup>"
        "<tr><th>#</th><th>question</th><th>reference</th>"
        f"<th>base: {e(base)}</th><th>tuned: {e(tuned)}</th></tr>"
    )
    body = []
    for n, row in enumerate(ev.rows, start=1):
        b, t = row["answers"]["base"], row["answers"]["tuned"]
        cells = []
        for answer, other in ((b, t), (t, b)):
            better = " class=\"better\"" if answer["score"] > other["score"] else ""
            cells.append(f"<td{better}><div class=\"score\">{answer['score']:.3f}</div>"
                         f"<div class=\"text\">{e(answer['text'])}</div></td>")
        source = " · ".join(e(x) for x in (row.get("title"), row.get("url")) if x)
        body.append(
            f"<tr><td>{n}</td><td><div class=\"text\">{e(row['question'])}</div>"
            f"<div class=\"src\">{source}</div></td><td><div class=\"text\">{e(row['reference'])}</div></td>"
            + "".join(cells) + "</tr>"
        )
    return head + "".join(body) + "</table></body></html>\n"
