"""`evaluate`: ask models the test questions and score every answer against the reference, side by side.

The score is token-overlap F1 (SQuAD-style, over lower-cased \\w+ tokens): cheap, deterministic and readable,
a first signal for a reviewer rather than a verdict. `compare_models` asks any number of models (a tuned model
and its base, a job's checkpoints, the models of a scaling experiment) the same questions with the same
sampling settings; `sweep` repeats that for several values of one setting. Requests run on a bounded thread
pool and the first error stops the run. The HTML reports are self-contained files; every text in them is
escaped, because questions, references and answers all come from crawled pages or model output and are untrusted.
"""

from __future__ import annotations

import hashlib
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
from typing import Any, Callable, Mapping, Sequence

from configs import EvaluationConfig, SamplingConfig
from finetune.backend import Backend, ChatReply, Refused
from transforms.version import DatasetVersion

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


def load_questions(ds: DatasetVersion, limit: int | None = None, split: str = "test") -> list[Question]:
    """The questions of a split (each example up to its last answer, which is the reference), with their
    metadata.jsonl rows."""
    path = ds.dir / f"{split}.jsonl"
    if not path.is_file() or path.stat().st_size == 0:
        raise Refused(f"the {split} split of {ds.label} is empty: nothing to evaluate; raise dataset.test_fraction "
                      "and rebuild with `python pipeline.py build`")
    meta: dict[int, dict[str, Any]] = {}
    sidecar = ds.dir / "metadata.jsonl"
    if sidecar.is_file():
        for raw in sidecar.read_text(encoding="utf-8").splitlines():
            row = json.loads(raw)
            if row.get("split") == split:
                meta[row["line"]] = row
    questions = []
    for line, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not raw.strip():
            continue
        example = json.loads(raw)
        messages = example.get("messages") if isinstance(example, dict) else None
        if not isinstance(messages, list):
            raise Refused(f"{path} line {line} is not a chat example; `evaluate` asks chat models only")
        last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
        if last is None or last == 0:
            continue
        questions.append(Question(line, messages[:last], _text(messages[last].get("content")), meta.get(line, {})))
        if limit and len(questions) >= limit:
            break
    return questions


def changed_settings(sampling: SamplingConfig) -> dict[str, Any]:
    """The sampling settings that differ from their defaults, in declaration order."""
    defaults = SamplingConfig()
    return {k: getattr(sampling, k) for k in SamplingConfig.model_fields
            if getattr(sampling, k) != getattr(defaults, k)}


def describe(sampling: SamplingConfig) -> str:
    """`temperature 0`, plus every other setting that is not at its default: `temperature 1, top_p 0.9, n 3`."""
    shown = {"temperature": sampling.temperature, **changed_settings(sampling)}
    return ", ".join(f"{k} {v:g}" for k, v in shown.items())


def sampling_warnings(sampling: SamplingConfig) -> list[str]:
    """Settings that are valid but probably not what the user wants, one line each."""
    defaults, notes = SamplingConfig(), []
    if sampling.temperature != defaults.temperature and sampling.top_p != defaults.top_p:
        notes.append(f"both temperature and top_p differ from their defaults ({defaults.temperature:g} and "
                     f"{defaults.top_p:g}): vary one of them, not both, or their effects cannot be told apart")
    if sampling.n > 1 and sampling.temperature == 0:
        notes.append(f"n {sampling.n} at temperature 0 gives (nearly) the same answer {sampling.n} times: raise "
                     "temperature to sample different ones")
    return notes


@dataclass
class Evaluation:
    dataset: DatasetVersion
    models: dict[str, str]  # label (the column: "base", "tuned", "step 80", "fraction 0.5") -> model name
    settings: EvaluationConfig
    rows: list[dict[str, Any]]
    jsonl: Path
    html: Path

    def mean(self, label: str) -> float:
        """Mean score over the questions (with n > 1, each question's score is the mean of its answers)."""
        return statistics.fmean(r["answers"][label]["score"] for r in self.rows) if self.rows else 0.0

    def best(self, label: str) -> float:
        """Mean over the questions of the best of each question's n answers (the mean when n is 1)."""
        return statistics.fmean(r["answers"][label].get("best", r["answers"][label]["score"])
                                for r in self.rows) if self.rows else 0.0

    @property
    def leader(self) -> str | None:
        """The label with the highest mean score, of equals the first (the earliest checkpoint); None when every
        model scores the same."""
        return _top([self.mean(label) for label in self.models], list(self.models))


def _slug(*parts: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", "--".join(parts)).strip("_")
    if len(slug) > 200:  # several long ft: names would overflow a file name's 255 bytes
        slug = f"{slug[:180]}-{hashlib.sha256(slug.encode()).hexdigest()[:12]}"
    return slug


def output_dir(ds: DatasetVersion, names: Sequence[str], sampling: SamplingConfig) -> Path:
    """`<version>/evaluations/<last>--vs--…--vs--<first>[--<setting>-<value>…]`: the subject first (the tuned
    model before its base, the final model before its checkpoints, which are named by their suffix), and every
    sampling setting that is not at its default, so runs do not overwrite each other."""
    subject, *others = reversed(names)
    others = [name.removeprefix(f"{subject}:") for name in others]
    changed = [f"{k}-{v:g}" for k, v in changed_settings(sampling).items()]
    return ds.dir / "evaluations" / _slug("--vs--".join([subject, *others]), *changed)


def compare_models(backend: Backend, ds: DatasetVersion, models: Mapping[str, str] | Sequence[str],
                   settings: EvaluationConfig | None = None, *, out: Path | None = None,
                   on_answer: Callable[[int, int], None] = lambda done, total: None) -> Evaluation:
    """Ask every model the same test questions of `ds` and score their answers side by side.

    `models`: model names, or labels mapped to names (`{"fraction 0.5": "ft:…", "fraction 1": "ft:…"}`), in
    the order the report shows them, the baseline first. `settings`: `finetune.evaluation` (sampling,
    concurrency, max_examples); default: its defaults. Writes results.jsonl and report.html to `out`
    (default: `output_dir`) and returns the Evaluation: `mean(label)`, `best(label)` (best of n), `leader`;
    `table(evaluation)` gives the lines to print. The first failed request stops it with nothing written.
    """
    settings = settings or EvaluationConfig()
    named = dict(models) if isinstance(models, Mapping) else {name: name for name in models}
    if not named:
        raise Refused("no model to evaluate")
    questions = load_questions(ds, settings.max_examples)
    if not questions:
        raise Refused(f"the test split of {ds.label} holds no question with a reference answer")
    sampling = SamplingConfig.model_validate(settings.model_dump(include=set(SamplingConfig.model_fields)))
    replies: dict[tuple[int, str], list[ChatReply]] = {}
    total = len(questions) * len(named)
    with ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix="evaluate") as pool:
        futures: dict[Future[list[ChatReply]], tuple[int, str]] = {
            pool.submit(backend.chat, name, q.prompt, sampling=sampling): (i, label)
            for i, q in enumerate(questions) for label, name in named.items()
        }
        try:
            for future in as_completed(futures):
                replies[futures[future]] = future.result()
                on_answer(len(replies), total)
        except BaseException:
            for pending in futures:
                pending.cancel()
            raise
    rows = [{"line": q.line, "url": q.meta.get("url"), "title": q.meta.get("title"), "question": q.question,
             "reference": q.reference,
             "answers": {label: _scored(name, replies[(i, label)], q.reference) for label, name in named.items()}}
            for i, q in enumerate(questions)]
    out = out or output_dir(ds, list(named.values()), sampling)
    out.mkdir(parents=True, exist_ok=True)
    result = Evaluation(ds, named, settings, rows, out / "results.jsonl", out / "report.html")
    _write(result.jsonl, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    _write(result.html, render_html(result))
    return result


def _scored(name: str, replies: list[ChatReply], reference: str) -> dict[str, Any]:
    """One model's answer to one question; with several choices, all of them, their mean and the best score."""
    choices = [{"text": r.text, "score": round(similarity(r.text, reference), 4), "finish_reason": r.finish_reason}
               for r in replies]
    if len(choices) == 1:
        return {"model": name, **choices[0]}
    return {"model": name, "score": round(statistics.fmean(c["score"] for c in choices), 4),
            "best": max(c["score"] for c in choices), "choices": choices}


def _top(scores: list[float], keys: list[Any]) -> Any:
    """The key of the highest score (to the printed precision), of equals the first; None when all are equal."""
    rounded = [round(score, 3) for score in scores]
    return keys[rounded.index(max(rounded))] if len(set(rounded)) > 1 else None


def table(ev: Evaluation) -> list[str]:
    """The mean score of each model, one line each in the report's order, the leader marked; with n > 1 also
    the mean of each question's best answer."""
    width = max(len(_named(label, name)) for label, name in ev.models.items())
    lines, leader = [], ev.leader
    for label, name in ev.models.items():
        best = f" · best of {ev.settings.n} {ev.best(label):.3f}" if ev.settings.n > 1 else ""
        mark = "  ← best" if label == leader else ""
        lines.append(f"  {_named(label, name):<{width}}  {ev.mean(label):.3f}{best}{mark}")
    return lines


def _named(label: str, name: str) -> str:
    return name if label == name else f"{label}: {name}"


@dataclass
class Sweep:
    param: str
    values: list[float]
    evaluations: list[Evaluation]  # one per value, in the order of `values`
    jsonl: Path
    html: Path


def sweep(backend: Backend, ds: DatasetVersion, models: Mapping[str, str] | Sequence[str], settings: EvaluationConfig,
          param: str, values: Sequence[float], *,
          on_answer: Callable[[int, int], None] = lambda done, total: None) -> Sweep:
    """One `compare_models` per value of the sampling setting `param`, everything else as in `settings`.

    Each value's evaluation has its own folder; the scores of all of them, value by value, go to
    `<version>/evaluations/<models>--sweep-<param>/` (scores.jsonl, report.html) beside them.
    """
    runs: dict[float, EvaluationConfig] = {}  # a value given twice is asked once
    for value in values:
        run = settings.model_validate({**settings.model_dump(), param: value})
        runs.setdefault(getattr(run, param), run)
    if not runs:
        raise Refused(f"a sweep of {param} needs at least one value")
    evaluations = [compare_models(backend, ds, models, run, on_answer=on_answer) for run in runs.values()]
    first = evaluations[0]
    fixed = settings.model_validate({**settings.model_dump(), param: SamplingConfig.model_fields[param].default})
    out = output_dir(ds, list(first.models.values()), fixed)
    out = out.with_name(f"{out.name}--sweep-{param}")
    out.mkdir(parents=True, exist_ok=True)
    result = Sweep(param, list(runs), evaluations, out / "scores.jsonl", out / "report.html")
    _write(result.jsonl, "".join(json.dumps({
        param: value, "folder": str(ev.jsonl.parent),
        "scores": {label: {"model": name, "mean": round(ev.mean(label), 4), "best": round(ev.best(label), 4)}
                   for label, name in ev.models.items()}}, ensure_ascii=False) + "\n"
        for value, ev in zip(result.values, evaluations)))
    _write(result.html, render_sweep_html(result))
    return result


def sweep_table(sw: Sweep) -> list[str]:
    """A table per model: each value of the swept setting and the mean score, the model's best value marked
    (none when they all score the same)."""
    first = sw.evaluations[0]
    width = max(len(f"{sw.param} {v:g}") for v in sw.values)
    lines = []
    for label, name in first.models.items():
        lines.append(f"  {_named(label, name)}")
        means = [ev.mean(label) for ev in sw.evaluations]
        top = _top(means, list(range(len(means))))
        for i, (value, ev) in enumerate(zip(sw.values, sw.evaluations)):
            best = f" · best of {ev.settings.n} {ev.best(label):.3f}" if ev.settings.n > 1 else ""
            mark = "  ← best" if i == top else ""
            lines.append(f"    {f'{sw.param} {value:g}':<{width}}  {means[i]:.3f}{best}{mark}")
    return lines


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
.means td{font-size:1.05rem}.choice+.choice{border-top:1px dashed #d0d7de;margin-top:.4rem;padding-top:.4rem}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _page(title: str, body: str) -> str:
    """A self-contained page: the CSP forbids scripts and fetches; callers escape every text with `_e`."""
    return ("<!doctype html><html><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>{body}</body></html>\n")


def _generated() -> str:
    return _e(datetime.now(timezone.utc).isoformat(timespec="seconds"))


def render_html(ev: Evaluation) -> str:
    """The means, then every question with each model's answer(s) and score, the top score of a row marked."""
    labels = list(ev.models)
    several = ev.settings.n > 1
    means = "".join(
        f"<tr><td>{_e(name)}</td><td>{_e(label)}</td><td class=\"score\">{ev.mean(label):.3f}</td>"
        + (f"<td class=\"score\">{ev.best(label):.3f}</td>" if several else "") + "</tr>"
        for label, name in ev.models.items())
    head = (
        f"<h1>{_e(ev.dataset.label)}: {_e(' vs '.join(labels))} on {len(ev.rows)} test questions</h1>"
        f"<p>{_e(describe(ev.settings))} · score: token F1 against the reference answer (0–1) · "
        f"generated {_generated()}</p>"
        "<table class=\"means\"><tr><th>model</th><th>label</th><th>mean score</th>"
        + (f"<th>mean of the best of {ev.settings.n}</th>" if several else "") + f"</tr>{means}</table><br>"
        "<table><colgroup><col style=\"width:3rem\"><col><col>" + "<col>" * len(labels) + "</colgroup>"
        "<tr><th>#</th><th>question</th><th>reference</th>"
        + "".join(f"<th>{_e(_named(label, name))}</th>" for label, name in ev.models.items()) + "</tr>"
    )
    body = []
    for n, row in enumerate(ev.rows, start=1):
        answers = [row["answers"][label] for label in labels]
        top = max(a["score"] for a in answers)
        cells = []
        for a in answers:
            better = " class=\"better\"" if a["score"] == top and any(b["score"] < top for b in answers) else ""
            if "choices" in a:
                texts = "".join(f"<div class=\"choice\"><div class=\"score\">{c['score']:.3f}</div>"
                                f"<div class=\"text\">{_e(c['text'])}</div></div>" for c in a["choices"])
                cells.append(f"<td{better}><div class=\"score\">mean {a['score']:.3f} · best {a['best']:.3f}</div>"
                             f"{texts}</td>")
            else:
                cells.append(f"<td{better}><div class=\"score\">{a['score']:.3f}</div>"
                             f"<div class=\"text\">{_e(a['text'])}</div></td>")
        source = " · ".join(_e(x) for x in (row.get("title"), row.get("url")) if x)
        body.append(
            f"<tr><td>{n}</td><td><div class=\"text\">{_e(row['question'])}</div>"
            f"<div class=\"src\">{source}</div></td><td><div class=\"text\">{_e(row['reference'])}</div></td>"
            + "".join(cells) + "</tr>"
        )
    return _page(f"{ev.dataset.label}: {' vs '.join(ev.models.values())}", head + "".join(body) + "</table>")


def render_sweep_html(sw: Sweep) -> str:
    """A row per value of the swept setting, a column per model, each value linking to its own report."""
    first = sw.evaluations[0]
    head = (f"<h1>{_e(first.dataset.label)}: {_e(sw.param)} sweep on {len(first.rows)} test questions</h1>"
            f"<p>mean score: token F1 against the reference answer (0–1) · generated {_generated()}</p>"
            f"<table><tr><th>{_e(sw.param)}</th>"
            + "".join(f"<th>{_e(_named(label, name))}</th>" for label, name in first.models.items())
            + "<th>report</th></tr>")
    rows = []
    for value, ev in zip(sw.values, sw.evaluations):
        link = os.path.relpath(ev.html, sw.html.parent)
        rows.append(f"<tr><td>{value:g}</td>"
                    + "".join(f"<td class=\"score\">{ev.mean(label):.3f}</td>" for label in ev.models)
                    + f"<td><a href=\"{_e(link)}\">{_e(ev.html.parent.name)}</a></td></tr>")
    return _page(f"{first.dataset.label}: {sw.param} sweep", head + "".join(rows) + "</table>")
