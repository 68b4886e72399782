"""The state file: one SQLite database under `output_dir` in which every layer keeps its own tables.

The crawl's pages (`crawlers.store`), the review decisions and approvals (`transforms.review_state`), the
fine-tuning uploads and jobs (`finetune.state`) and the run ledger (`ops.ledger`) each create and migrate their
tables through `connect` and `migrate`, with the same conventions: autocommit (each statement is its own
transaction, so a crash never leaves a half-written row) and WAL (readers never block the writer).
"""

from __future__ import annotations

import sqlite3
import time
from datetime import datetime, timezone
from pathlib import Path


def now(timespec: str = "microseconds") -> str:
    """UTC timestamp; microseconds by default, fine enough to tell two crawls in the same second apart."""
    return datetime.now(timezone.utc).isoformat(timespec=timespec)


def state_path(output_dir: Path) -> Path:
    return Path(output_dir) / "state.sqlite"


def connect(path: Path) -> sqlite3.Connection:
    """The state at `path` (created with its folder when missing), in autocommit and WAL mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=30, isolation_level=None)
    _use_wal(db)
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def _use_wal(db: sqlite3.Connection, patience: float = 30.0) -> None:
    """Switch a state to WAL (kept in the file). SQLite answers "locked" at once, without waiting, when another
    process is creating the same new file, so this waits itself."""
    deadline = time.monotonic() + patience
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def migrate(db: sqlite3.Connection, schema: str, table: str, added: dict[str, str]) -> None:
    """Create `schema` and add the `added` columns `table` lacks, in one write transaction: processes opening a
    new state at the same moment (workers sharing an output_dir) would otherwise both add a column, and one fail."""
    db.executescript(f"BEGIN IMMEDIATE;{schema}")
    try:
        have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        for column, kind in added.items():
            if column not in have:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
