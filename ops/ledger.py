"""The run ledger: every `run`, `crawl`, `build` and scheduled run in `<output_dir>/state.sqlite` (table `runs`).

A row is written when a run starts (status `running`) and completed when it ends: `ok`, `failed` (with the
error), `interrupted` (Ctrl-C / SIGTERM), `skipped` (a scheduled run found the output locked) or `died` (its
process was killed; found out by the next run that takes the lock). Counts are per stage: per source for the
crawl (a `crawl --worker` row also has `fetched`, the pages this worker fetched, and `ingested`, the pages of
every worker it stored; its new/changed/unchanged/removed are its state's), per stage of the build, and the
dataset version it produced. The conventions of every table of the state (`base.state`):
autocommit, one statement per transaction, WAL, so a crash never leaves a half-written row.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from base.state import connect, now, state_path

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    command TEXT NOT NULL,
    trigger TEXT NOT NULL,
    schedule TEXT,
    sources TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    counts TEXT NOT NULL DEFAULT '{}',
    dataset_version TEXT,
    job_id TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS runs_schedule ON runs (schedule, id);
"""
STATUSES = ("running", "ok", "failed", "interrupted", "skipped", "died")
TRIGGERS = ("manual", "schedule")



@dataclass
class RunRecord:
    id: int
    command: str
    trigger: str
    schedule: str | None
    sources: list[str]
    status: str
    started_at: str
    finished_at: str | None
    pid: int
    host: str
    counts: dict[str, Any] = field(default_factory=dict)
    dataset_version: str | None = None
    job_id: str | None = None
    error: str | None = None

    COLUMNS = ("id", "command", "trigger", "schedule", "sources", "status", "started_at", "finished_at", "pid",
               "host", "counts", "dataset_version", "job_id", "error")

    @classmethod
    def from_row(cls, row: tuple) -> "RunRecord":
        values = dict(zip(cls.COLUMNS, row))
        values["sources"] = json.loads(values["sources"])
        values["counts"] = json.loads(values["counts"] or "{}")
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.COLUMNS}


class Ledger:
    """Read and write the `runs` table of one output directory's state."""

    def __init__(self, output_dir: Path):
        self.db: sqlite3.Connection = connect(state_path(Path(output_dir)))
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, command: str, *, trigger: str = "manual", schedule: str | None = None,
              sources: list[str] | None = None, status: str = "running") -> int:
        assert trigger in TRIGGERS and status in STATUSES
        cursor = self.db.execute(
            "INSERT INTO runs (command, trigger, schedule, sources, status, started_at, pid, host)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (command, trigger, schedule, json.dumps(sources or []), status, now(), os.getpid(), socket.gethostname()),
        )
        return int(cursor.lastrowid)

    def update(self, run_id: int, **values: Any) -> None:
        if "counts" in values:
            values["counts"] = json.dumps(values["counts"], ensure_ascii=False, sort_keys=True)
        unknown = set(values) - set(RunRecord.COLUMNS)
        assert not unknown, unknown
        assignments = ", ".join(f"{name} = ?" for name in values)
        self.db.execute(f"UPDATE runs SET {assignments} WHERE id = ?", (*values.values(), run_id))

    def finish(self, run_id: int, status: str, *, error: str | None = None) -> None:
        assert status in STATUSES
        self.update(run_id, status=status, finished_at=now(), error=error)

    def get(self, run_id: int) -> RunRecord | None:
        row = self.db.execute(f"SELECT {', '.join(RunRecord.COLUMNS)} FROM runs WHERE id = ?", (run_id,)).fetchone()
        return RunRecord.from_row(row) if row else None

    def list(self, limit: int | None = 20) -> list[RunRecord]:
        """Newest first."""
        query = f"SELECT {', '.join(RunRecord.COLUMNS)} FROM runs ORDER BY id DESC"
        rows = self.db.execute(query + " LIMIT ?", (limit,)) if limit else self.db.execute(query)
        return [RunRecord.from_row(row) for row in rows]

    def last_scheduled(self, schedule: str, sources: list[str]) -> RunRecord | None:
        """The latest run the cron expression `schedule` started for `sources` (skipped ones too: they were
        due as well)."""
        row = self.db.execute(
            f"SELECT {', '.join(RunRecord.COLUMNS)} FROM runs WHERE trigger = 'schedule' AND schedule = ?"
            " AND sources = ? ORDER BY id DESC LIMIT 1",
            (schedule, json.dumps(sources)),
        ).fetchone()
        return RunRecord.from_row(row) if row else None

    def mark_died(self, pid: int, host: str) -> list[int]:
        """Runs of a process that was killed while holding the lock: they stay `running` forever otherwise."""
        rows = self.db.execute(
            "SELECT id FROM runs WHERE status = 'running' AND pid = ? AND host = ?", (pid, host)
        ).fetchall()
        for (run_id,) in rows:
            self.finish(run_id, "died", error="the process was killed (or the machine stopped) during the run")
        return [run_id for (run_id,) in rows]


class Run:
    """The run being recorded, as the pipeline sees it: counts and results are stored as they arrive."""

    def __init__(self, ledger: Ledger, run_id: int):
        self.ledger = ledger
        self.id = run_id
        self.counts: dict[str, Any] = {}
        self.status = "ok"  # what the row ends with when no exception ends the run
        self.error: str | None = None

    def record(self, stage: str, counts: dict[str, Any]) -> None:
        self.counts[stage] = counts
        self.ledger.update(self.id, counts=self.counts)

    def set_version(self, version: str) -> None:
        self.ledger.update(self.id, dataset_version=version)

    def set_job(self, job_id: str) -> None:
        self.ledger.update(self.id, job_id=job_id)
