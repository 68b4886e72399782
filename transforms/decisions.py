"""Review decisions: read from a filled-in review.csv, stored in the crawl state, applied by every later build.

A reviewer writes `exclude` (or an edited answer) in the `decision` column of a version's review.csv and feeds
it back with `python pipeline.py review apply FILE`. Decisions are stored by example_id, which depends only on
the page's URL, section and question template, so every later build honours them, also after a re-crawl.
"""

from __future__ import annotations

import re
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from base.state import now
from transforms.example import Example
from transforms.review_state import ReviewError, open_state
from transforms.stage import Stage, StageLog

EXCLUDE = {"exclude", "제외"}
KEEP = {"keep", "ok", "유지"}  # clears an earlier decision
_COMMAND_LIKE = re.compile(r"^[A-Za-z_-]{1,16}$")


@dataclass
class Applied:
    excluded: int = 0
    edited: int = 0
    cleared: int = 0
    unknown_ids: list[str] = field(default_factory=list)


def read_decisions(path: Path) -> list[tuple[int, str, str, str]]:
    """(row number, example_id, url, decision) for every row with a decision; raises ReviewError."""
    import pandas as pd

    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except FileNotFoundError:
        raise ReviewError(f"{path} not found; pass the review.csv of a dataset version") from None
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ReviewError(f"{path}: not a readable CSV file ({' '.join(str(exc).split())}); "
                          "save it as CSV UTF-8 from your spreadsheet") from None
    missing = [c for c in ("example_id", "decision") if c not in frame.columns]
    if missing:
        raise ReviewError(f"{path}: missing column {', '.join(missing)}; keep the columns of the review.csv "
                          "the build wrote and fill in only `decision`")
    rows, bad = [], []
    urls = frame["url"] if "url" in frame.columns else [""] * len(frame)
    for number, (example_id, url, decision) in enumerate(zip(frame["example_id"], urls, frame["decision"]), 2):
        decision = decision.strip()
        if not decision:
            continue
        word = decision.casefold()
        if word not in EXCLUDE | KEEP and _COMMAND_LIKE.match(decision):
            bad.append(f"row {number}: {decision!r}")
        rows.append((number, example_id.strip(), url.lstrip("'"), decision))
    if bad:
        raise ReviewError(f"{path}: unknown decision {'; '.join(bad[:5])}; write `exclude`, `keep`, "
                          "or the whole edited answer")
    return rows


def apply_review(state: Path, dataset: str, path: Path, known_ids: Iterable[str] | None = None) -> Applied:
    """Store the decisions of a filled-in review.csv for `dataset`; `keep` clears an earlier decision."""
    rows = read_decisions(path)
    known = set(known_ids) if known_ids is not None else None
    applied = Applied()
    with closing(open_state(state)) as db:
        db.execute("BEGIN")
        for _, example_id, url, decision in rows:
            word = decision.casefold()
            if known is not None and example_id not in known:
                applied.unknown_ids.append(example_id)
            if word in KEEP:
                applied.cleared += db.execute(
                    "DELETE FROM review_decisions WHERE dataset = ? AND example_id = ?", (dataset, example_id)
                ).rowcount
                continue
            kind, answer = ("exclude", None) if word in EXCLUDE else ("edit", decision)
            db.execute("INSERT OR REPLACE INTO review_decisions VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (dataset, example_id, kind, answer, url, str(path), now("seconds")))
            if kind == "exclude":
                applied.excluded += 1
            else:
                applied.edited += 1
        db.execute("COMMIT")
    return applied


def store_decisions(state: Path, dataset: str, decisions: Iterable[tuple[str, str, str | None, str | None]],
                    source: str) -> None:
    """Store (example_id, kind, edited answer, url) decisions in one transaction, as apply_review does: kind
    `exclude` or `edit`; `keep` clears an earlier decision."""
    with closing(open_state(state)) as db:
        db.execute("BEGIN")
        for example_id, kind, answer, url in decisions:
            if kind == "keep":
                db.execute("DELETE FROM review_decisions WHERE dataset = ? AND example_id = ?", (dataset, example_id))
            else:
                db.execute("INSERT OR REPLACE INTO review_decisions VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (dataset, example_id, kind, answer, url, source, now()))
        db.execute("COMMIT")


def stored_decisions(state: Path, dataset: str) -> dict[str, tuple[str, str | None]]:
    """example_id → (decision, edited answer) for a dataset; empty when nothing was reviewed yet."""
    if not Path(state).exists():
        return {}
    with closing(open_state(state)) as db:
        rows = db.execute("SELECT example_id, decision, answer FROM review_decisions WHERE dataset = ?",
                          (dataset,)).fetchall()
    return {example_id: (decision, answer) for example_id, decision, answer in rows}


class ApplyDecisions(Stage):
    """Drop examples a reviewer excluded; put a reviewer's edited answer in place (recounted exactly)."""

    name = "review"

    def __init__(self, decisions: dict[str, tuple[str, str | None]],
                 recount: Callable[[list[dict[str, Any]]], tuple[int, int]],
                 redact: Callable[[str], str] | None = None):
        self.decisions = decisions
        self.recount = recount
        self.redact = redact
        self.matched: set[str] = set()
        self.counts = {"excluded": 0, "edited": 0}

    def __call__(self, examples: Iterable[Example], log: StageLog) -> Iterator[Example]:
        for example in examples:
            decision = self.decisions.get(example.example_id) if self.decisions else None
            if decision is None:
                yield example
                continue
            self.matched.add(example.example_id)
            kind, answer = decision
            if kind == "exclude":
                self.counts["excluded"] += 1
                log.drop(example, "review_excluded", f"{example.url}: excluded by a reviewer")
                continue
            answer = self.redact(answer) if self.redact else answer
            messages = [dict(m) for m in example.messages]
            last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
            messages[last]["content"] = answer
            tokens, answer_tokens = self.recount(messages)
            self.counts["edited"] += 1
            yield example.model_copy(update={"messages": messages, "tokens": tokens, "answer_tokens": answer_tokens,
                                             "review": "edited", "original_answer": example.answer})

    def summary(self) -> dict[str, int]:
        return {**self.counts, "stored": len(self.decisions), "unmatched": len(self.decisions) - len(self.matched)}
