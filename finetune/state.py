"""Fine-tuning state in `<output_dir>/state.sqlite`, beside the crawl's pages: uploads, jobs, comparisons.

`ft_uploads` maps a file's sha256 to the file id it got in one account (`scope`), so the same content is
never uploaded twice; `ft_jobs` records every job with its provider, dataset version, last seen status and
lineage (base model, and for continued fine-tuning the parent model and, when this output_dir made it, the
parent's job), so any later command (and any backend, including a local trainer) finds the job again;
`ft_comparisons` groups the jobs of one experiment (`finetune --compare-fractions`). The conventions of every
table of the state (`base.state`): autocommit, one statement per transaction, WAL.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from base.state import connect, migrate, now, state_path
from finetune.backend import Job

SCHEMA = """
CREATE TABLE IF NOT EXISTS ft_uploads (
    scope TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    file_id TEXT NOT NULL,
    filename TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    uploaded_at TEXT NOT NULL,
    PRIMARY KEY (scope, sha256)
);
CREATE TABLE IF NOT EXISTS ft_jobs (
    job_id TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    scope TEXT NOT NULL,
    dataset TEXT,
    version TEXT,
    version_dir TEXT,
    model TEXT NOT NULL,
    request TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status TEXT NOT NULL,
    fine_tuned_model TEXT,
    error_code TEXT,
    error_message TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    base_model TEXT,
    parent_model TEXT,
    parent_job_id TEXT
);
CREATE INDEX IF NOT EXISTS ft_jobs_request ON ft_jobs (request_hash, status);
CREATE TABLE IF NOT EXISTS ft_comparisons (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,           -- fractions
    dataset TEXT NOT NULL,
    evaluate_on TEXT NOT NULL,    -- the version folder whose test split every model is scored on
    members TEXT NOT NULL,        -- JSON list of {fraction, version, version_dir, job_id}
    created_at TEXT NOT NULL
);
"""
ADDED_JOB_COLUMNS = ("base_model", "parent_model", "parent_job_id")  # states written before lineage existed


@dataclass(frozen=True)
class Lineage:
    """Where a job's model comes from: its base model and, for continued fine-tuning, the fine-tune it
    continues (`parent_job_id` only when this output_dir made that one)."""

    base_model: str | None
    parent_model: str | None = None
    parent_job_id: str | None = None


@dataclass(frozen=True)
class JobRecord:
    job_id: str
    provider: str
    scope: str
    dataset: str | None
    version: str | None
    version_dir: str | None
    model: str
    request: dict[str, Any]
    request_hash: str
    status: str
    fine_tuned_model: str | None
    error_code: str | None
    error_message: str | None
    created_at: str
    updated_at: str
    base_model: str | None = None
    parent_model: str | None = None
    parent_job_id: str | None = None

    @property
    def lineage(self) -> Lineage:
        return Lineage(self.base_model, self.parent_model, self.parent_job_id)


@dataclass(frozen=True)
class Comparison:
    id: int
    kind: str
    dataset: str
    evaluate_on: str
    members: list[dict[str, Any]]
    created_at: str


_JOB_COLUMNS = ", ".join(JobRecord.__dataclass_fields__)


class FinetuneState:
    def __init__(self, output_dir: Path):
        self.path = state_path(output_dir)
        self.db = connect(self.path)
        migrate(self.db, SCHEMA, "ft_jobs", {column: "TEXT" for column in ADDED_JOB_COLUMNS})

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "FinetuneState":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- uploads

    def find_upload(self, scope: str, sha256: str) -> str | None:
        row = self.db.execute("SELECT file_id FROM ft_uploads WHERE scope = ? AND sha256 = ?",
                              (scope, sha256)).fetchone()
        return row[0] if row else None

    def record_upload(self, scope: str, sha256: str, file_id: str, filename: str, size: int) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO ft_uploads (scope, sha256, file_id, filename, bytes, uploaded_at) "
            "VALUES (?, ?, ?, ?, ?, ?)", (scope, sha256, file_id, filename, size, now()))

    def forget_upload(self, scope: str, sha256: str) -> None:
        self.db.execute("DELETE FROM ft_uploads WHERE scope = ? AND sha256 = ?", (scope, sha256))

    # ---- jobs

    def record_job(self, job: Job, *, scope: str, dataset: str | None, version: str | None,
                   version_dir: Path | None, request: dict[str, Any], request_hash: str,
                   lineage: Lineage | None = None) -> None:
        stamp = now()
        lineage = lineage or Lineage(None)
        self.db.execute(
            f"INSERT OR REPLACE INTO ft_jobs ({_JOB_COLUMNS}) VALUES ({', '.join('?' * len(JobRecord.__dataclass_fields__))})",
            (job.id, job.provider, scope, dataset, version, str(version_dir) if version_dir else None, job.model,
             json.dumps(request, sort_keys=True), request_hash, job.status, job.fine_tuned_model,
             job.error.code if job.error else None, job.error.message if job.error else None, stamp, stamp,
             lineage.base_model, lineage.parent_model, lineage.parent_job_id),
        )

    def update_job(self, job: Job) -> None:
        """Store the latest status seen (a job created elsewhere is not recorded)."""
        self.db.execute(
            "UPDATE ft_jobs SET status = ?, fine_tuned_model = ?, error_code = ?, error_message = ?, updated_at = ? "
            "WHERE job_id = ?",
            (job.status, job.fine_tuned_model, job.error.code if job.error else None,
             job.error.message if job.error else None, now(), job.id),
        )

    def job(self, job_id: str) -> JobRecord | None:
        row = self.db.execute(f"SELECT {_JOB_COLUMNS} FROM ft_jobs WHERE job_id = ?", (job_id,)).fetchone()
        return self._record(row) if row else None

    def jobs(self) -> list[JobRecord]:
        rows = self.db.execute(f"SELECT {_JOB_COLUMNS} FROM ft_jobs ORDER BY created_at, job_id").fetchall()
        return [self._record(r) for r in rows]

    def job_for_model(self, model: str) -> JobRecord | None:
        row = self.db.execute(f"SELECT {_JOB_COLUMNS} FROM ft_jobs WHERE fine_tuned_model = ? "
                              "ORDER BY created_at DESC LIMIT 1", (model,)).fetchone()
        return self._record(row) if row else None

    def ancestry(self, job_id: str | None) -> list[JobRecord]:
        """The recorded job `job_id` and the recorded jobs its model descends from, nearest first."""
        chain: list[JobRecord] = []
        while job_id and job_id not in {r.job_id for r in chain}:
            record = self.job(job_id)
            if record is None:
                break
            chain.append(record)
            job_id = record.parent_job_id
        return chain

    def live_job_for(self, request_hash: str) -> JobRecord | None:
        """The newest job made from the same request that did not fail or get cancelled."""
        row = self.db.execute(
            f"SELECT {_JOB_COLUMNS} FROM ft_jobs WHERE request_hash = ? AND status NOT IN ('failed', 'cancelled') "
            "ORDER BY created_at DESC LIMIT 1", (request_hash,)).fetchone()
        return self._record(row) if row else None

    # ---- comparisons

    def record_comparison(self, kind: str, *, dataset: str, evaluate_on: Path,
                          members: list[dict[str, Any]]) -> Comparison:
        """One experiment's jobs; running the same experiment again (same jobs) finds the recorded one."""
        jobs = [m["job_id"] for m in members]
        for known in self.comparisons():
            if known.kind == kind and [m["job_id"] for m in known.members] == jobs:
                return known
        cursor = self.db.execute(
            "INSERT INTO ft_comparisons (kind, dataset, evaluate_on, members, created_at) VALUES (?, ?, ?, ?, ?)",
            (kind, dataset, str(evaluate_on), json.dumps(members, sort_keys=True), now()))
        found = self.comparison(cursor.lastrowid)
        assert found is not None
        return found

    def comparison(self, comparison_id: int) -> Comparison | None:
        row = self.db.execute("SELECT id, kind, dataset, evaluate_on, members, created_at FROM ft_comparisons "
                              "WHERE id = ?", (comparison_id,)).fetchone()
        return self._comparison(row) if row else None

    def comparisons(self, job_id: str | None = None) -> list[Comparison]:
        """Every comparison, oldest first; with `job_id`, those the job is part of."""
        rows = self.db.execute("SELECT id, kind, dataset, evaluate_on, members, created_at FROM ft_comparisons "
                               "ORDER BY id").fetchall()
        found = [self._comparison(r) for r in rows]
        return [c for c in found if job_id is None or any(m["job_id"] == job_id for m in c.members)]

    @staticmethod
    def _comparison(row: tuple) -> Comparison:
        return Comparison(row[0], row[1], row[2], row[3], json.loads(row[4]), row[5])

    @staticmethod
    def _record(row: tuple) -> JobRecord:
        values = dict(zip(JobRecord.__dataclass_fields__, row))
        values["request"] = json.loads(values["request"])
        return JobRecord(**values)
