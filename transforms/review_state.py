"""The review tables of the crawl state (decisions, approvals) and the error both their users raise."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from base.errors import Crawl2TuneError
from base.state import connect

SCHEMA = """
CREATE TABLE IF NOT EXISTS review_decisions (
    dataset TEXT NOT NULL,
    example_id TEXT NOT NULL,
    decision TEXT NOT NULL,       -- exclude | edit
    answer TEXT,                  -- the edited answer, for `edit`
    url TEXT,
    source_file TEXT,
    decided_at TEXT NOT NULL,
    PRIMARY KEY (dataset, example_id)
);
CREATE TABLE IF NOT EXISTS approvals (
    dataset TEXT NOT NULL,
    version TEXT NOT NULL,
    manifest_sha256 TEXT NOT NULL,
    approved_at TEXT NOT NULL,
    approved_by TEXT,
    PRIMARY KEY (dataset, version)
);
"""


class ReviewError(Crawl2TuneError, ValueError):
    """A review file or approval request cannot be used; the message says what to fix."""


def open_state(state: Path) -> sqlite3.Connection:
    """The state with the review tables created."""
    db = connect(Path(state))
    db.executescript(SCHEMA)
    return db
