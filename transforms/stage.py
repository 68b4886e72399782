"""The one abstraction of the transform layer: a `Stage` maps an iterator of records to an iterator of records.

A stage that drops a record says why (`log.drop(record, reason, detail)`); the runner counts, per stage,
what came in, what went out and what was dropped per reason, so every dataset explains itself. A record left
out by design, not for a fault a reviewer should look at (outside a `--fraction`), is only counted
(`log.leave_out(reason)`), never listed with the drops.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Iterator


@dataclass
class Dropped:
    stage: str
    reason: str
    record: Any
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)  # structured detail, e.g. {"duplicate_of": example_id}


@dataclass
class StageLog:
    """What one stage saw: records in, records out, drops per reason."""

    name: str
    seen: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    left_out: Counter = field(default_factory=Counter)
    on_drop: Callable[[Dropped], None] | None = None

    def drop(self, record: Any, reason: str, detail: str = "", **data: Any) -> None:
        self.dropped[reason] += 1
        if self.on_drop:
            self.on_drop(Dropped(self.name, reason, record, detail, data))

    def leave_out(self, reason: str) -> None:
        self.left_out[reason] += 1

    def as_dict(self) -> dict[str, Any]:
        counts = {"in": self.seen, "out": self.kept, "dropped": dict(sorted(self.dropped.items()))}
        if self.left_out:
            counts["left_out"] = dict(sorted(self.left_out.items()))
        return counts


class Stage(ABC):
    name: ClassVar[str]

    @abstractmethod
    def __call__(self, records: Iterable[Any], log: StageLog) -> Iterator[Any]:
        """Yield the records that go on; call `log.drop` for every one that does not."""


def _counted(records: Iterable[Any], log: StageLog, attr: str) -> Iterator[Any]:
    for record in records:
        setattr(log, attr, getattr(log, attr) + 1)
        yield record


def run_stages(
    records: Iterable[Any], stages: list[Stage], on_drop: Callable[[Dropped], None] | None = None
) -> tuple[Iterator[Any], list[StageLog]]:
    """Chain `stages` lazily over `records`; the logs fill in as the returned iterator is consumed."""
    logs = []
    stream: Iterable[Any] = records
    for stage in stages:
        log = StageLog(stage.name, on_drop=on_drop)
        stream = _counted(stage(_counted(stream, log, "seen"), log), log, "kept")
        logs.append(log)
    return iter(stream), logs
