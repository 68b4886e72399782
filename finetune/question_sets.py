"""The question sets `evaluate --set` asks: heldout, recall and refusal.

- heldout: the test split, documents the model never trained on (what `evaluate` always asked).
- recall: eval_recall.jsonl, held-out paraphrases of trained documents written by the generation stage: does
  the tuned model recall what it was trained on? A chat record per line, as in test.jsonl, with a `metadata`
  object naming its `url` and `section`. Template-only versions have none.
- refusal: questions the documentation does not cover, where the right answer declines: the recall file's
  records whose generated style (`metadata.generated.style`) is `not_covered`, else a fixed built-in set of
  out-of-domain questions (the same for every version, so versions compare), each asked with the version's
  own system prompt.
"""

from __future__ import annotations

import json
from typing import Any

from finetune.backend import Refused
from finetune.evaluate import Question, _text, load_questions
from finetune.retrieval import section_id
from transforms.version import RECALL_FILE, DatasetVersion

SETS = ("heldout", "recall", "refusal")
DECLINED = "The documentation does not cover this question."
OUT_OF_DOMAIN = (
    "내일 서울 날씨는 어때?",
    "오늘 코스피 종가를 알려줘.",
    "김치찌개 맛있게 끓이는 법을 알려줘.",
    "Who won the 2022 FIFA World Cup final?",
    "이번 주 로또 당첨 번호는 뭐야?",
)


def _records(ds: DatasetVersion) -> list[tuple[int, list[dict[str, Any]], str, dict[str, Any]]]:
    path = ds.dir / RECALL_FILE
    if not path.is_file():
        return []
    found = []
    for line, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not raw.strip():
            continue
        record = json.loads(raw)
        messages = record.get("messages") if isinstance(record, dict) else None
        if not isinstance(messages, list):
            raise Refused(f"{path} line {line} is not a chat record; regenerate it: python pipeline.py build")
        last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
        if not last:
            continue
        meta = dict(record.get("metadata") or {})
        meta["style"] = (meta.get("generated") or {}).get("style")  # the generated pair's style
        found.append((line, messages[:last], _text(messages[last].get("content")), meta))
    return found


def _with_source(q: Question) -> Question:
    meta = dict(q.meta)
    if meta.get("url"):
        meta["source_id"] = section_id(meta.get("url"), meta.get("section"))
    return Question(q.line, q.prompt, q.reference, meta)


def available(ds: DatasetVersion) -> list[str]:
    """The sets this version has: heldout and refusal always, recall when eval_recall.jsonl holds records."""
    recall = any(m.get("style") != "not_covered" for *_, m in _records(ds))
    return [s for s in SETS if s != "recall" or recall]


def no_recall_set(ds: DatasetVersion) -> str:
    return (f"{ds.label} has no recall set (template-only: no {RECALL_FILE}); run the generation stage "
            "(dataset.generate) and build again: python pipeline.py build")


def load_set(ds: DatasetVersion, name: str, limit: int | None = None) -> list[Question]:
    """The questions of one set, each with `meta["source_id"]` (url#section) when it has a source section."""
    if name == "heldout":
        questions = [_with_source(q) for q in load_questions(ds, limit)]
    elif name == "recall":
        rows = [r for r in _records(ds) if r[3].get("style") != "not_covered"]
        if not rows:
            raise Refused(no_recall_set(ds))
        questions = [_with_source(Question(line, prompt, ref, meta)) for line, prompt, ref, meta in rows]
    elif name == "refusal":
        rows = [r for r in _records(ds) if r[3].get("style") == "not_covered"]
        questions = [Question(line, prompt, ref or DECLINED, meta) for line, prompt, ref, meta in rows]
        if not questions:
            system = _system_prompt(ds)
            questions = [Question(i, [*system, {"role": "user", "content": text}], DECLINED,
                                  {"category": "out of domain", "style": "built-in"})
                         for i, text in enumerate(OUT_OF_DOMAIN, start=1)]
    else:
        raise Refused(f"unknown question set {name!r}: choose heldout, recall, refusal or all")
    return questions[:limit] if limit else questions


def _system_prompt(ds: DatasetVersion) -> list[dict[str, Any]]:
    """The version's first system message, so an out-of-domain question is asked the way its users ask."""
    for path in (ds.test, ds.train):
        if path.is_file():
            with open(path, encoding="utf-8") as f:
                first = f.readline()
            if first.strip():
                messages = json.loads(first).get("messages") or []
                return [m for m in messages[:1] if m.get("role") == "system"]
    return []
