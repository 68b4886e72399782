"""Processes opening one new state file at the same moment (workers sharing an output_dir, `run` next to the
ledger) all get a usable, fully migrated state."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from crawlers.store import ADDED_COLUMNS, open_state
from finetune.state import ADDED_JOB_COLUMNS, FinetuneState


def _open(path: str, barrier: "multiprocessing.synchronize.Barrier", results: "multiprocessing.Queue") -> None:
    barrier.wait()
    try:
        open_state(Path(path)).close()
        FinetuneState(Path(path).parent).close()
        results.put("ok")
    except Exception as exc:  # reported to the test, which names it
        results.put(f"{type(exc).__name__}: {exc}")


def test_processes_opening_a_new_state_at_once_all_succeed(tmp_path):
    context = multiprocessing.get_context("fork")
    for attempt in range(8):
        path = tmp_path / f"out{attempt}" / "state.sqlite"
        barrier, results = context.Barrier(4), context.Queue()
        processes = [context.Process(target=_open, args=(str(path), barrier, results)) for _ in range(4)]
        for process in processes:
            process.start()
        outcomes = [results.get(timeout=60) for _ in processes]
        for process in processes:
            process.join(timeout=60)
        assert outcomes == ["ok"] * 4, outcomes
        db = open_state(path)
        assert set(ADDED_COLUMNS) <= {row[1] for row in db.execute("PRAGMA table_info(pages)")}
        assert set(ADDED_JOB_COLUMNS) <= {row[1] for row in db.execute("PRAGMA table_info(ft_jobs)")}
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        db.close()
