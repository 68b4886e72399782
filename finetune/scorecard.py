"""`evaluate --set`: every model, with and without retrieved context, over the question sets, side by side.

Columns are `base`, `base+RAG`, `tuned`, `tuned+RAG` (the +RAG ones with `--rag`): each model is asked each
question as is, and with the top-k sections of the version's BM25 index as a system message. Every answer gets
chrF and token F1 (and the refusal set: whether it declined); with `finetune.evaluation.judge` set, the judge
grades each one (cached, see finetune.judge). The headline is the judge's score when there is a judge (it
reads meaning, and it is the only score that can credit a right refusal), else chrF. Model and judge requests
run on one bounded pool (`concurrency`); the first failed request stops the run with nothing written.
"""

from __future__ import annotations

import json
import statistics
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from configs import EvaluationConfig, SamplingConfig
from finetune.backend import Backend, ChatReply, Refused
from finetune.evaluate import Question, _slug, _write
from finetune.judge import Judge
from finetune.question_sets import load_set
from finetune.retrieval import Index, Section, context_message, recall_at_k
from finetune.scores import bootstrap_interval, chrf, declines, token_f1
from transforms.version import DatasetVersion


@dataclass
class Scorecard:
    dataset: DatasetVersion
    columns: dict[str, str]  # column label -> model name, in the report's order
    sets: list[str]
    rows: list[dict[str, Any]]  # one per (set, question)
    summary: dict[str, Any]
    headline: str  # "judge" or "chrf"
    jsonl: Path
    html: Path
    judge_requests: int = 0


def columns_for(models: Mapping[str, str], rag: bool) -> dict[str, str]:
    out: dict[str, str] = {}
    for label, name in models.items():
        out[label] = name
        if rag:
            out[f"{label}+RAG"] = name
    return out


def _ask(backend: Backend, model: str, prompt: list[dict[str, Any]], sampling: SamplingConfig,
         context: list[Section] | None) -> tuple[ChatReply, float]:
    messages = prompt if context is None else [*prompt[:-1], context_message(context), prompt[-1]]
    started = time.perf_counter()
    reply = backend.chat(model, messages, sampling=sampling)[0]
    return reply, time.perf_counter() - started


def _run_pool(settings: EvaluationConfig, jobs: dict[Any, Callable[[], Any]],
              on_done: Callable[[int, int], None], *, then: Callable[[Any, Any], tuple] | None = None,
              grade: Callable[..., Any] | None = None, key: Callable[..., str] | None = None
              ) -> tuple[dict[Any, Any], dict[str, Any]]:
    """Run `jobs` on one pool of `concurrency` threads; with `then`, each finished job's arguments for `grade`
    are submitted to the same pool at once (once per distinct `key`), so judging overlaps asking. Returns the
    jobs' results and the grades by key. The first exception cancels what has not started and is raised."""
    results: dict[Any, Any] = {}
    graded: dict[str, Any] = {}
    with ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix="scorecard") as pool:
        pending: dict[Future, tuple[str, Any]] = {pool.submit(fn): ("job", k) for k, fn in jobs.items()}
        asked: set[str] = set()
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    kind, k = pending.pop(future)
                    if kind == "grade":
                        graded[k] = future.result()
                        continue
                    results[k] = future.result()
                    on_done(len(results), len(jobs))
                    if then is not None:
                        args = then(k, results[k])
                        if (g := key(*args)) not in asked:  # the same answer twice is graded once
                            asked.add(g)
                            pending[pool.submit(grade, *args)] = ("grade", g)
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    return results, graded


def run(backend: Backend, ds: DatasetVersion, models: Mapping[str, str], sets: list[str],
        settings: EvaluationConfig, *, index: Index | None = None, k: int = 5, judge: Judge | None = None,
        out: Path | None = None, on_answer: Callable[[int, int], None] = lambda done, total: None) -> Scorecard:
    """Ask every column every question of `sets`; score, judge, summarise and write results.jsonl,
    summary.json and report.html to `out` (default `<version>/evaluations/<models>--sets-…`)."""
    if not models:
        raise Refused("no model to evaluate")
    columns = columns_for(models, index is not None)
    sampling = SamplingConfig.model_validate(settings.model_dump(include=set(SamplingConfig.model_fields)))
    sampling = sampling.model_copy(update={"n": 1})
    questions = [(s, q) for s in sets for q in load_set(ds, s, settings.max_examples)]
    if not questions:
        raise Refused(f"the sets {', '.join(sets)} of {ds.label} hold no question")
    found = index.search_many([q.question for _, q in questions], k) if index is not None else None
    source_text = {s.id: s.text for s in (index.sections if index is not None else [])}

    def judged(i: int, text: str) -> tuple[str, str, str, str]:
        q = questions[i][1]
        return q.question, q.reference, source_text.get(q.meta.get("source_id") or "", q.reference), text

    asks = {(i, col): (lambda q=q, name=name, ctx=(found[i] if found and col.endswith("+RAG") else None):
                       _ask(backend, name, q.prompt, sampling, ctx))
            for i, (_, q) in enumerate(questions) for col, name in columns.items()}
    requests_before = judge.requests if judge is not None else 0
    replies, grades = _run_pool(settings, asks, on_answer,
                                then=(lambda key, reply: judged(key[0], reply[0].text)) if judge else None,
                                grade=judge.grade if judge else None, key=judge.key if judge else None)
    rows = []
    for i, (set_name, q) in enumerate(questions):
        row = {"set": set_name, "line": q.line, "url": q.meta.get("url"), "title": q.meta.get("title"),
               "section": q.meta.get("section"), "source_id": q.meta.get("source_id"),
               "category": q.meta.get("category") or "(none)", "question": q.question, "reference": q.reference,
               "answers": {}}
        if found is not None:
            row["retrieved"] = [s.id for s in found[i]]
        for col, name in columns.items():
            reply, seconds = replies[(i, col)]
            scored = {"model": name, "text": reply.text, "chrf": round(chrf(reply.text, q.reference), 4),
                      "token_f1": round(token_f1(reply.text, q.reference), 4), "seconds": round(seconds, 4),
                      "prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
                      "cost_usd": _cost(settings, name, reply)}
            if set_name == "refusal":
                scored["declined"] = declines(reply.text)
            row["answers"][col] = scored
        rows.append(row)
    if judge is not None:
        for (i, col), answer in ((key, rows[key[0]]["answers"][key[1]]) for key in asks):
            grade = grades[judge.key(*judged(i, answer["text"]))]
            answer.update(grade=grade.grade, reason=grade.reason, judged=grade.score)
    judge_requests = judge.requests - requests_before if judge is not None else 0
    headline = "judge" if judge is not None else "chrf"
    summary = summarise(rows, list(columns), sets, headline, k if index is not None else None)
    out = out or (ds.dir / "evaluations" / _slug("--vs--".join(reversed(list(models.values()))),
                                                 "sets-" + "-".join(sets), *([f"rag-k{k}"] if index else [])))
    out.mkdir(parents=True, exist_ok=True)
    card = Scorecard(ds, columns, sets, rows, summary, headline, out / "results.jsonl", out / "report.html",
                     judge_requests)
    _write(card.jsonl, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    _write(out / "summary.json", json.dumps(summary, ensure_ascii=False, indent=2) + "\n")
    from finetune.scorecard_report import render

    _write(card.html, render(card))
    return card


def _cost(settings: EvaluationConfig, model: str, reply: ChatReply) -> float | None:
    price = settings.prices.get(model)
    if price is None or reply.prompt_tokens is None or reply.completion_tokens is None:
        return None
    return round((reply.prompt_tokens * price[0] + reply.completion_tokens * price[1]) / 1e6, 8)


def headline_score(answer: dict[str, Any], set_name: str, headline: str) -> float | None:
    """The answer's headline score: the judge's, else chrF (on the refusal set: 1 when it declined)."""
    if headline == "judge":
        return answer.get("judged")
    return float(answer["declined"]) if set_name == "refusal" else answer["chrf"]


def _stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "mean": None, "low": None, "high": None}
    low, high = bootstrap_interval(values)
    return {"n": len(values), "mean": round(statistics.fmean(values), 4), "low": round(low, 4),
            "high": round(high, 4)}


def summarise(rows: list[dict[str, Any]], columns: list[str], sets: list[str], headline: str,
              k: int | None) -> dict[str, Any]:
    """Per set and column: the headline with its bootstrap 95 % interval, chrF, token F1, grade counts, tokens,
    cost and latency per answer; per set and category the headline; per set the retrieval recall@k."""
    summary: dict[str, Any] = {"headline": headline, "columns": columns, "sets": {}}
    for set_name in sets:
        in_set = [r for r in rows if r["set"] == set_name]
        entry: dict[str, Any] = {"questions": len(in_set), "columns": {}, "categories": {}}
        sourced = [r for r in in_set if r.get("source_id") and "retrieved" in r]
        if k is not None and sourced:
            value = recall_at_k([r["retrieved"] for r in sourced], [r["source_id"] for r in sourced], k)
            entry["recall_at_k"] = {"k": k, "value": round(value, 4), "questions": len(sourced)}
        for col in columns:
            answers = [r["answers"][col] for r in in_set]
            scores = [s for s in (headline_score(a, set_name, headline) for a in answers) if s is not None]
            grades: dict[str, int] = {}
            for a in answers:
                if a.get("grade"):
                    grades[a["grade"]] = grades.get(a["grade"], 0) + 1
            costs = [a["cost_usd"] for a in answers if a.get("cost_usd") is not None]
            tokens = [(a["prompt_tokens"] or 0) + (a["completion_tokens"] or 0) for a in answers
                      if a.get("prompt_tokens") is not None]
            entry["columns"][col] = {
                "headline": _stats(scores),
                "chrf": round(statistics.fmean(a["chrf"] for a in answers), 4) if answers else None,
                "token_f1": round(statistics.fmean(a["token_f1"] for a in answers), 4) if answers else None,
                "grades": grades,
                "seconds_per_answer": round(statistics.fmean(a["seconds"] for a in answers), 4) if answers else None,
                "tokens_per_answer": round(statistics.fmean(tokens), 1) if tokens else None,
                "cost_per_answer_usd": round(statistics.fmean(costs), 8) if costs else None,
            }
        for category in sorted({r["category"] for r in in_set}):
            chosen = [r for r in in_set if r["category"] == category]
            entry["categories"][category] = {
                col: _stats([s for s in (headline_score(r["answers"][col], set_name, headline) for r in chosen)
                             if s is not None]) for col in columns}
        summary["sets"][set_name] = entry
    summary["verdict"] = verdict(summary)
    return summary


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f} %"


def verdict(summary: dict[str, Any]) -> str:
    """One paragraph from the numbers: per set every column's headline, best first, whether the top two differ
    beyond their 95 % intervals, and the retrieval recall@k."""
    what = "judged correct" if summary["headline"] == "judge" else "by chrF"
    parts = []
    for set_name, entry in summary["sets"].items():
        stats = {c: v["headline"] for c, v in entry["columns"].items() if v["headline"]["mean"] is not None}
        if not stats:
            continue
        ranked = sorted(stats, key=lambda c: -stats[c]["mean"])
        scores = ", ".join(f"{c} {_pct(stats[c]['mean'])}" for c in ranked)
        text = f"on the {set_name} set ({entry['questions']} questions) {scores} {what}"
        if len(ranked) > 1:
            first, second = stats[ranked[0]], stats[ranked[1]]
            if first["mean"] == second["mean"]:
                text += f" ({ranked[0]} and {ranked[1]} tie)"
            elif first["low"] > second["high"]:
                text += f" ({ranked[0]} ahead beyond the 95 % intervals)"
            else:
                text += f" ({ranked[0]} and {ranked[1]}: 95 % intervals overlap, not a clear difference)"
        if "recall_at_k" in entry:
            r = entry["recall_at_k"]
            text += f"; retrieval found the source section in the top {r['k']} for {_pct(r['value'])}"
        parts.append(text)
    if not parts:
        return "No answers were scored."
    return "On this site, " + "; ".join(parts) + "."
