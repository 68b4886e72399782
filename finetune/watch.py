"""Watch a job until it ends: status, step/total and the train/valid loss from its metric events.

Polling rides out trouble: a 429, 5xx or timeout that outlasts the SDK's own retries is retried here with a
doubling delay (from `poll_interval`, at most a minute) before it is reported. A paused job ends the watch,
since it will not move until someone resumes it. Ctrl-C is left to the caller: the job keeps running.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

from finetune.backend import Backend, Job, JobEvent, TransientError
from finetune.state import FinetuneState

POLL_RETRIES = 6
MAX_BACKOFF = 60.0
FIRST_EVENTS = 20  # a watch that starts late shows the newest events, not the whole history

T = TypeVar("T")


@dataclass
class Progress:
    """One poll: the job as it is now, the events new since the last poll, and the latest value of each metric."""

    job: Job
    events: list[JobEvent]
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def step(self) -> int | None:
        return _int(self.metrics.get("step"))

    @property
    def total_steps(self) -> int | None:
        return _int(self.metrics.get("total_steps"))

    @property
    def train_loss(self) -> float | None:
        return self.metrics.get("train_loss")

    @property
    def valid_loss(self) -> float | None:
        return self.metrics.get("valid_loss")


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) else None


def retrying(call: Callable[[], T], *, base_delay: float, sleep: Callable[[float], None],
             on_retry: Callable[[TransientError, float], None], attempts: int = POLL_RETRIES) -> T:
    for attempt in range(attempts):
        try:
            return call()
        except TransientError as exc:
            if attempt == attempts - 1:
                raise
            delay = min(MAX_BACKOFF, base_delay * 2 ** attempt)
            on_retry(exc, delay)
            sleep(delay)
    raise AssertionError("unreachable")


def watch(backend: Backend, job_id: str, *, poll_interval: float, on_progress: Callable[[Progress], None],
          on_retry: Callable[[TransientError, float], None] = lambda e, d: None,
          state: FinetuneState | None = None, sleep: Callable[[float], None] = time.sleep) -> Job:
    """Poll until the job is succeeded, failed, cancelled or paused; returns the job as last seen."""
    last_event: str | None = None
    metrics: dict[str, Any] = {}

    def again(call: Callable[[], T]) -> T:
        return retrying(call, base_delay=poll_interval, sleep=sleep, on_retry=on_retry)

    while True:
        job = again(lambda: backend.get_job(job_id))
        since = last_event
        events = again(lambda: backend.list_events(job_id, since=since,
                                                   limit=None if since else FIRST_EVENTS))
        if events:
            last_event = events[-1].id
        for event in events:
            if event.type == "metrics" and event.data:
                metrics.update(event.data)  # validation runs every few steps: keep its last value
        if state is not None:
            state.update_job(job)
        on_progress(Progress(job, events, metrics))
        if job.terminal or job.status == "paused":
            return job
        sleep(poll_interval)
