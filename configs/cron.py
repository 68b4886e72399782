"""Cron expressions as a config may write them: crontab's own semantics (croniter), checked on load.

Five fields are crontab's `minute hour day month weekday` (weekday 0 and 7 are Sunday, names work too); six
fields put seconds first (`*/30 * * * * *`: every 30 seconds). `ops.schedule.CronTrigger` fires on them in the
machine's local time, like cron.
"""

from __future__ import annotations

from croniter import croniter

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
