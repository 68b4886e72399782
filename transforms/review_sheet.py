"""review.csv: one spreadsheet-safe row per example, for a person to fill in the `decision` column."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from transforms.example import Example

COLUMNS = ["example_id", "split", "category", "url", "title", "section", "tokens", "question", "answer_excerpt",
           "decision"]
EXCERPT_CHARS = 300
CSV_CHUNK = 2000
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(text: str | None) -> str:
    """Spreadsheet-safe text: a crawled value starting like a formula is shown, never evaluated."""
    text = text or ""
    return "'" + text if text.startswith(_FORMULA_START) else text


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """The start of `text`, runs of whitespace as one space, cut to `limit` characters. Only the start is read:
    the first `limit` + 25 % characters nearly always fill it (flattening a prefix gives a prefix of the
    flattened text), else up to three times `limit`."""
    for window in (limit + limit // 4, limit * 3):
        flat = " ".join(text[:window].split())
        if len(flat) > limit:
            return flat[: limit - 1] + "…"
    return flat


class ReviewSheet:
    """review.csv, one row per example, written in chunks with the csv module (the writer pandas' `to_csv`
    uses, without building a DataFrame per chunk; UTF-8 with BOM so Excel reads Korean)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.rows: list[tuple[Any, ...]] = []
        self.started = False

    def add(self, example: Example) -> None:
        self.rows.append((
            example.example_id, example.split, _cell(example.category), _cell(example.url), _cell(example.title),
            _cell(example.section), example.tokens, _cell(excerpt(example.question)),
            _cell(excerpt(example.answer)), "",
        ))
        if len(self.rows) >= CSV_CHUNK:
            self.flush()

    def flush(self) -> None:
        if not self.rows and self.started:
            return
        mode, encoding = ("a", "utf-8") if self.started else ("w", "utf-8-sig")
        with open(self.path, mode, encoding=encoding, newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            if not self.started:
                writer.writerow(COLUMNS)
            writer.writerows(self.rows)
        self.started = True
        self.rows = []
