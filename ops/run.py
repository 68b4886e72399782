"""A recorded run: the output directory's lock, a ledger row from start to end, and log lines tagged with it.

    with recorded(config.output_dir, "run") as run:
        ...
        run.record("crawl", counts)

The lock is taken first, so a refused command (`LockHeld`) leaves no row. Any exception marks the row
`failed` with the (redacted) error and is re-raised; Ctrl-C marks it `interrupted`. Nothing here touches the
datasets: a failed build leaves the previous version as it was (see `transforms.write`).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from base import logs
from ops.ledger import Ledger, Run
from ops.lock import OutputLock


@contextmanager
def recorded(output_dir: Path, command: str, *, trigger: str = "manual", schedule: str | None = None,
             sources: list[str] | None = None, shared: bool = False) -> Iterator[Run]:
    lock = OutputLock(output_dir, shared=shared).acquire()
    try:
        with Ledger(output_dir) as ledger:
            for holder in lock.recovered:
                died = ledger.mark_died(holder.pid, holder.host)
                logs.say(f"warning: recovered a stale lock of {holder.describe()}, which is no longer running"
                         + (f"; its run {', '.join(map(str, died))} is marked died" if died else ""), "warning")
            run = Run(ledger, ledger.start(command, trigger=trigger, schedule=schedule, sources=sources))
            try:
                with logs.bound(run.id):
                    yield run
            except KeyboardInterrupt:
                ledger.finish(run.id, "interrupted", error="interrupted (Ctrl-C or SIGTERM)")
                raise
            except BaseException as exc:
                message = logs.redact(str(exc) or type(exc).__name__)
                ledger.finish(run.id, "failed", error=f"{type(exc).__name__}: {message}")
                raise
            else:
                ledger.finish(run.id, run.status, error=run.error)
    finally:
        lock.release()


def crawl_counts(reports: list) -> dict:
    """The ledger's per-source crawl counts, from `crawlers.crawl.SourceReport`s."""
    return {
        r.name: {"finish_reason": r.finish_reason, "responses": sum(r.pages_by_status.values()),
                 "by_status": r.pages_by_status, "requests": r.requests, **r.counts, "dropped": r.dropped,
                 "attachments": r.attachments}
        for r in reports
    }


def build_counts(result) -> dict:
    """The ledger's build counts, from a `transforms.build.BuildResult`: totals and every stage's in/out/drops."""
    m = result.manifest
    return {"version": m.version, "unchanged": result.unchanged, **m.counts,
            "tokens": m.tokens["total"], "stages": m.stages, "warnings": len(result.warnings)}
