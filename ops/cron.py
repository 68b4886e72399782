"""Cron expressions: crontab's own semantics (croniter) as an APScheduler trigger.

Five fields are crontab's `minute hour day month weekday` (weekday 0 and 7 are Sunday, names work too); six
fields put seconds first (`*/30 * * * * *`: every 30 seconds). Times are the machine's local time, like cron.
"""

from __future__ import annotations

from datetime import datetime, timedelta, tzinfo

from apscheduler.triggers.base import BaseTrigger
from croniter import croniter
from tzlocal import get_localzone

FIELDS = "minute hour day-of-month month day-of-week"


def check(expression: str) -> str:
    """The expression, normalised; ValueError saying what is expected when it is not a cron expression."""
    expression = " ".join(str(expression).split())
    n = len(expression.split(" "))
    if n not in (5, 6):
        raise ValueError(f"{expression!r} has {n} fields; a cron expression has 5 ({FIELDS}), or 6 with seconds "
                         "first, e.g. '0 3 * * *' for 03:00 every day")
    try:
        croniter(expression, second_at_beginning=n == 6)
    except (ValueError, KeyError) as exc:
        raise ValueError(f"{expression!r} is not a valid cron expression ({FIELDS}): {exc}") from None
    return expression


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
