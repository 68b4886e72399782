"""Train/test split by document, stable across re-crawls: a document never moves between train and test.

Plain split: a document's side is a function of its URL and the seed only. Stratified by category: within
each category every k-th document goes to test (systematic sampling from an offset drawn from the category
and seed), so even a small category gets its share; because that depends on the order documents arrive in,
each assignment is written to the state the first time and read back on every later build.

A fraction build (`build --fraction`) keeps the documents whose own hash of URL and seed falls below the
fraction, so subsets are nested (0.5 inside 0.75 inside the full set) and independent of the test draw. The
examples outside it are counted (the manifest's `fraction` block), not listed in dropped.jsonl: nothing is
wrong with them.
"""

from __future__ import annotations

import hashlib
import math
import sqlite3
from collections import Counter
from datetime import datetime, timezone
from typing import Iterable, Iterator

from transforms.example import Example
from transforms.stage import Stage, StageLog

SCHEMA = """
CREATE TABLE IF NOT EXISTS split_assignments (
    dataset TEXT NOT NULL,
    scheme TEXT NOT NULL,         -- stratification, seed and fraction the side was drawn under
    document_id TEXT NOT NULL,
    url TEXT NOT NULL,
    category TEXT NOT NULL,
    split TEXT NOT NULL,
    assigned_at TEXT NOT NULL,
    PRIMARY KEY (dataset, scheme, document_id)
);
"""


def position(url: str, seed: int) -> float:
    """A number in [0, 1) fixed by URL and seed: below `test_fraction` means test."""
    digest = hashlib.sha256(f"{seed}\x00{url}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def in_fraction(url: str, seed: int, fraction: float) -> bool:
    """Whether a document belongs to the `fraction` subset: nested, the same on every build."""
    return fraction >= 1.0 or position(f"fraction\x00{url}", seed) < fraction


OUTSIDE = "outside_fraction"


class FractionSubset(Stage):
    """Keep the examples of the documents in the `fraction` subset.

    It runs after dedup and the split, so a fraction build is exactly the full build restricted to the
    chosen documents: the same examples (dedup saw every document, so no answer is kept here that the full
    build dropped as a duplicate of another page's), on the same sides. Its train split is therefore inside
    the full build's train split, and the full build's test split is a fair test for both models.
    """

    name = "fraction"

    def __init__(self, fraction: float, seed: int):
        self.fraction = fraction
        self.seed = seed
        self.outside = 0  # examples of the documents left out

    def chosen(self, url: str) -> bool:
        return in_fraction(url, self.seed, self.fraction)

    def __call__(self, examples: Iterable[Example], log: StageLog) -> Iterator[Example]:
        url, keep = None, False
        for example in examples:
            if example.url != url:  # examples arrive grouped by document
                url, keep = example.url, self.chosen(example.url)
            if keep:
                yield example
            else:
                self.outside += 1
                log.leave_out(OUTSIDE)


class AssignSplit(Stage):
    name = "split"

    def __init__(self, test_fraction: float, seed: int):
        self.test_fraction = test_fraction
        self.seed = seed

    def __call__(self, examples: Iterable[Example], log: StageLog) -> Iterator[Example]:
        for example in examples:
            side = "test" if position(example.url, self.seed) < self.test_fraction else "train"
            yield example.model_copy(update={"split": side})


class StratifiedSplit(Stage):
    """Each category gets `test_fraction` of its documents in test (rounded), assignments kept in `db`."""

    name = "split"

    def __init__(self, db: sqlite3.Connection, dataset: str, test_fraction: float, seed: int):
        db.executescript(SCHEMA)
        self.db = db
        self.dataset = dataset
        self.fraction = test_fraction
        self.seed = seed
        self.scheme = f"category:{seed}:{test_fraction!r}"
        self.seen = Counter(dict(db.execute(
            "SELECT category, count(*) FROM split_assignments WHERE dataset = ? AND scheme = ? GROUP BY category",
            (dataset, self.scheme)).fetchall()))

    def _side(self, example: Example) -> str:
        row = self.db.execute(
            "SELECT split FROM split_assignments WHERE dataset = ? AND scheme = ? AND document_id = ?",
            (self.dataset, self.scheme, example.document_id)).fetchone()
        if row:
            return row[0]
        k = self.seen[example.category]
        offset = position(example.category, self.seed)
        test = math.floor(self.fraction * (k + 1) + offset) > math.floor(self.fraction * k + offset)
        side = "test" if test else "train"
        self.seen[example.category] += 1
        self.db.execute(
            "INSERT INTO split_assignments VALUES (?, ?, ?, ?, ?, ?, ?)",
            (self.dataset, self.scheme, example.document_id, example.url, example.category, side,
             datetime.now(timezone.utc).isoformat(timespec="seconds")))
        return side

    def __call__(self, examples: Iterable[Example], log: StageLog) -> Iterator[Example]:
        document, side = None, "train"
        self.db.execute("BEGIN")
        try:
            for example in examples:
                if example.document_id != document:
                    document, side = example.document_id, self._side(example)
                yield example.model_copy(update={"split": side})
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
