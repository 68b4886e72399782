"""`schedule`: run the pipeline on the config's cron expressions, unattended.

Sources are grouped by their cron expression (a source's own `schedule:`, else the global one); each group is
one scheduled job that crawls those sources and then builds the dataset. APScheduler runs the jobs one at a
time in one worker thread: fire times missed while a run was going (or while the scheduler was down) are
coalesced into one run, and a job still running is never started again (`max_instances=1`). The ledger is
the memory between processes: a job whose last scheduled run is older than one of its fire times is due.
SIGTERM or Ctrl-C stops scheduling at once and waits for the run in progress; a second one interrupts that
run's crawl (gracefully, as Ctrl-C does: it continues at the next run); a third exits at once (the run it
abandons is marked `died` by the next command that takes the lock).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any, Callable

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobSubmissionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from croniter import croniter
from tzlocal import get_localzone

from configs.cron import check
from base import logs
from ops.ledger import Ledger
from ops.lock import LockHeld
from base.errors import Crawl2TuneError


class ScheduleError(Crawl2TuneError, ValueError):
    """The config has nothing to schedule."""


class CronTrigger(BaseTrigger):
    """APScheduler trigger firing at the times a cron expression names."""

    def __init__(self, expression: str, timezone: tzinfo | None = None):
        self.expression = check(expression)
        self.seconds = len(self.expression.split(" ")) == 6
        self.timezone = timezone or get_localzone()

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        """The first fire time after `previous_fire_time`, or at/after `now` when there was none."""
        start = previous_fire_time if previous_fire_time is not None else now - timedelta(microseconds=1)
        return self.next_after(start)

    def next_after(self, moment: datetime) -> datetime:
        moment = moment.astimezone(self.timezone)
        return croniter(self.expression, moment, second_at_beginning=self.seconds).get_next(datetime)

    def __str__(self) -> str:
        return f"cron[{self.expression}]"

    def __repr__(self) -> str:
        return f"<CronTrigger {self.expression!r} tz={self.timezone}>"


@dataclass(frozen=True)
class Planned:
    """One scheduled job: the sources crawled together on one cron expression."""

    expression: str
    sources: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"{self.expression} [{', '.join(self.sources)}]"


def plan(config: Any) -> list[Planned]:
    """The jobs of `config`: each source on its own `schedule`, else on the global one; unscheduled ones not."""
    groups: dict[str, list[str]] = {}
    for source in config.sources:
        expression = source.schedule or config.schedule
        if expression:
            groups.setdefault(expression, []).append(source.name)
    return [Planned(expression, tuple(names)) for expression, names in groups.items()]


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


class Scheduler:
    """Runs `runner(planned)` (returns an exit code; raises on failure) on each job's cron expression."""

    def __init__(self, jobs: list[Planned], runner: Callable[[Planned], int], output_dir: Path):
        if not jobs:
            raise ScheduleError("nothing to schedule")
        self.jobs = jobs
        self.runner = runner
        self.output_dir = Path(output_dir)
        self.triggers = {job: CronTrigger(job.expression) for job in jobs}
        self.stop = threading.Event()

    # --- when -------------------------------------------------------------------------------------

    def next_due(self, job: Planned, now: datetime | None = None) -> datetime | None:
        """When `job` is next due: the first fire time after its last scheduled run; None if it never ran."""
        with Ledger(self.output_dir) as ledger:
            last = ledger.last_scheduled(job.expression, list(job.sources))
        return self.triggers[job].next_after(_parse(last.started_at)) if last else None

    def is_due(self, job: Planned, now: datetime) -> bool:
        due = self.next_due(job)
        return due is None or due <= now

    # --- running ----------------------------------------------------------------------------------

    def run_job(self, job: Planned) -> int:
        """One scheduled run; a failure is logged (and in the ledger) and never stops the scheduler."""
        with logs.stage("schedule"):
            logs.say(f"scheduled run of {', '.join(job.sources)} ({job.expression}) starting")
        try:
            code = self.runner(job)
        except LockHeld as exc:
            with Ledger(self.output_dir) as ledger:
                run_id = ledger.start("run", trigger="schedule", schedule=job.expression, sources=list(job.sources),
                                      status="skipped")
                ledger.finish(run_id, "skipped", error=str(exc))
            with logs.stage("schedule"):
                logs.say(f"warning: scheduled run skipped (run {run_id}): {exc}", "warning")
            return 1
        except Exception as exc:  # recorded as failed by the run itself
            with logs.stage("schedule"):
                logs.error(f"error: scheduled run of {', '.join(job.sources)} failed: {exc}")
            return 1
        return int(code or 0)

    def run_due(self, now: datetime | None = None) -> int:
        """`--once`: every job that is due runs once (missed fire times coalesced); 0 when all went well."""
        now = now or datetime.now().astimezone()
        due = [job for job in self.jobs if self.is_due(job, now)]
        with logs.stage("schedule"):
            for job in self.jobs:
                if job not in due:
                    logs.say(f"not due: {', '.join(job.sources)} ({job.expression}), next at "
                             f"{self.next_due(job):%Y-%m-%d %H:%M:%S %Z}")
        codes = [self.run_job(job) for job in due]
        return max(codes, default=0)

    def serve(self, stop: threading.Event | None = None) -> int:
        """Run until SIGTERM/SIGINT (or `stop` is set); waits for the run in progress before returning."""
        stop = stop or self.stop
        scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(1)},  # one run at a time, across jobs too
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        scheduler.add_listener(self._still_running, EVENT_JOB_MAX_INSTANCES)
        now = datetime.now().astimezone()
        for job in self.jobs:
            options: dict[str, Any] = {}
            due = self.next_due(job, now)
            if due is not None and due <= now:
                options["next_run_time"] = now  # missed while the scheduler was down: one run now
            scheduler.add_job(self.run_job, self.triggers[job], args=[job], id=job.key, name=job.key, **options)
        restore = self._install_signals(stop)
        scheduler.start()
        try:
            with logs.stage("schedule"):
                for aps_job in scheduler.get_jobs():
                    logs.say(f"scheduled {aps_job.name}: next run at {aps_job.next_run_time:%Y-%m-%d %H:%M:%S %Z}")
            while not stop.wait(0.2):
                pass
            with logs.stage("schedule"):
                logs.say("stopping: no new runs; waiting for the run in progress, if any")
            scheduler.shutdown(wait=True)
        finally:
            if scheduler.running:
                scheduler.shutdown(wait=False)
            restore()
        with logs.stage("schedule"):
            logs.say("scheduler stopped")
        return 0

    def _still_running(self, event: JobSubmissionEvent) -> None:
        with logs.stage("schedule"):
            logs.say(f"fire time {min(event.scheduled_run_times):%H:%M:%S} of {event.job_id} skipped: its previous "
                     "run is still going")

    def _install_signals(self, stop: threading.Event) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        signals_seen = []

        def handler(signum: int, frame: Any) -> None:
            signals_seen.append(signum)
            if len(signals_seen) == 2:  # interrupt the run in progress: its crawl stops as Ctrl-C stops it
                with logs.stage("schedule"):
                    logs.say("interrupting the run in progress; its crawl continues at the next run", "warning")
                for child in multiprocessing.active_children():
                    os.kill(child.pid, signal.SIGINT)
            elif len(signals_seen) > 2:  # leave now; the next command that takes the lock marks the run died
                logs.error("stopping now, without waiting for the run in progress")
                os._exit(130)
            stop.set()

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
        return lambda: [signal.signal(sig, old) for sig, old in previous.items()] and None
