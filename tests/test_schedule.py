"""`schedule` runs the pipeline on cron expressions: never two runs at once, missed fire times coalesced, a
clean stop on SIGTERM, and `--once` for cron and systemd timers; every scheduled run is in the ledger."""

from __future__ import annotations

import os
import signal
import sqlite3
from datetime import datetime, timedelta, timezone

import pytest

from configs import ConfigError, load_config
from ops.schedule import CronTrigger
from ops.schedule import Planned, plan
from ops_site import config, docs_site, pipeline, runs, wait_for
from pipeline import main
from sites import Site


def test_schedule_firing_every_second_runs_twice_without_overlap_and_records_both(tmp_path):
    with Site(docs_site(3, 4)) as site:
        cfg = config(tmp_path, site.base, extra='schedule: "* * * * * *"\ndataset: {test_fraction: 0.2}')
        scheduler = pipeline(cfg, "schedule")
        out_dir = tmp_path / "out"
        waited: AssertionError | None = None
        try:
            wait_for(lambda: len([r for r in runs(out_dir) if r["status"] == "ok"]) >= 2
                     or any(r["status"] in ("failed", "died") for r in runs(out_dir)), timeout=120,
                     what="two scheduled runs")
        except AssertionError as exc:
            waited = exc
        finally:
            scheduler.send_signal(signal.SIGTERM)  # what systemd sends to stop the service
        out, err = scheduler.communicate(timeout=120)
    assert waited is None, f"{waited}; scheduler said:\n{out}\n{err}"
    assert scheduler.returncode == 0, err
    rows = runs(out_dir)
    assert len(rows) >= 2
    assert [(r["status"], r["error"], r["trigger"], r["schedule"]) for r in rows] == [
        ("ok", None, "schedule", "* * * * * *")] * len(rows)
    for before, after in zip(rows, rows[1:]):
        assert before["finished_at"] <= after["started_at"]  # one at a time
    assert "skipped: its previous run is still going" in out  # a run takes longer than a second
    assert out.rstrip().endswith("scheduler stopped")
    assert rows[0]["dataset_version"] == "v0001" and rows[1]["counts"]["build"]["unchanged"]


def test_once_runs_what_is_due_then_nothing_until_a_fire_time_passes(tmp_path, capsys):
    with Site(docs_site(3, 4)) as site:
        cfg = config(tmp_path, site.base, extra='schedule: "0 3 * * *"\ndataset: {test_fraction: 0.2}')
        assert main(["schedule", "--once", "--config", str(cfg)]) == 0  # never ran: due
        assert main(["schedule", "--once", "--config", str(cfg)]) == 0
        out = capsys.readouterr().out
        assert "not due: docs (0 3 * * *), next at " in out
        assert len(runs(tmp_path / "out")) == 1

        # the machine was off for three nights: one run catches up, not three
        three_days_ago = (datetime.now(timezone.utc) - timedelta(days=3)).isoformat()
        with sqlite3.connect(tmp_path / "out" / "state.sqlite") as db:
            db.execute("UPDATE runs SET started_at = ?", (three_days_ago,))
        assert main(["schedule", "--once", "--config", str(cfg)]) == 0
        assert main(["schedule", "--once", "--config", str(cfg)]) == 0
    rows = runs(tmp_path / "out")
    assert [(r["trigger"], r["status"]) for r in rows] == [("schedule", "ok"), ("schedule", "ok")]


def test_scheduled_run_finding_the_output_locked_is_skipped_and_recorded(tmp_path, capsys):
    from ops.lock import OutputLock

    with Site(docs_site(3, 4)) as site:
        cfg = config(tmp_path, site.base, extra='schedule: "0 3 * * *"\ndataset: {test_fraction: 0.2}')
        with OutputLock(tmp_path / "out", command="pipeline.py run"):
            assert main(["schedule", "--once", "--config", str(cfg)]) == 1
    assert "warning: scheduled run skipped (run 1): " in capsys.readouterr().out
    [row] = runs(tmp_path / "out")
    assert row["status"] == "skipped" and f"in use by pid {os.getpid()}" in row["error"]


def test_sources_run_on_their_own_schedule_and_the_rest_on_the_global_one(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("""
schedule: "0 3 * * *"
sources:
  - {name: a, start_urls: ["http://a.test/"]}
  - {name: b, start_urls: ["http://b.test/"], schedule: "*/15 * * * *"}
  - {name: c, start_urls: ["http://c.test/"]}
""")
    assert plan(load_config(cfg)) == [Planned("0 3 * * *", ("a", "c")), Planned("*/15 * * * *", ("b",))]


def test_schedule_without_cron_expressions_says_how_to_add_one(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text('sources: [{name: a, start_urls: ["http://a.test/"]}]\n')
    assert main(["schedule", "--config", str(cfg)]) == 1
    assert "schedules nothing; add `schedule: \"0 3 * * *\"` at the top level" in capsys.readouterr().err


def test_cron_expressions_follow_crontab_and_bad_ones_name_the_field(tmp_path):
    saturday = datetime(2026, 11, 21, 12, 0, tzinfo=timezone.utc)
    sunday_3am = CronTrigger("0 3 * * 0", timezone=timezone.utc).next_after(saturday)
    assert sunday_3am == datetime(2026, 11, 22, 3, 0, tzinfo=timezone.utc)  # 0 is Sunday, as in crontab
    every_20s = CronTrigger("*/20 * * * * *", timezone=timezone.utc)
    assert every_20s.next_after(saturday) == saturday + timedelta(seconds=20)

    cfg = tmp_path / "c.yaml"
    cfg.write_text('sources: [{name: a, start_urls: ["http://a.test/"], schedule: "0 25 * * *"}]\n')
    with pytest.raises(ConfigError, match=r"c.yaml: sources.0.schedule: '0 25 \* \* \*' is not a valid cron"):
        load_config(cfg)
    cfg.write_text('schedule: "daily"\nsources: [{name: a, start_urls: ["http://a.test/"]}]\n')
    with pytest.raises(ConfigError, match=r"schedule: 'daily' has 1 fields; a cron expression has 5"):
        load_config(cfg)


def test_scheduler_started_after_missed_fire_times_runs_once_at_start_then_waits(tmp_path):
    import threading

    from ops.ledger import Ledger
    from ops.schedule import Scheduler

    with Ledger(tmp_path) as ledger:  # the last nightly run was three nights ago
        run_id = ledger.start("run", trigger="schedule", schedule="0 3 * * *", sources=["docs"])
        ledger.finish(run_id, "ok")
        ledger.db.execute("UPDATE runs SET started_at = ?",
                          ((datetime.now(timezone.utc) - timedelta(days=3)).isoformat(),))
    calls = []
    stop = threading.Event()

    def runner(job):
        calls.append(job)
        threading.Timer(1.0, stop.set).start()  # long enough for a second, wrong, catch-up run to show
        return 0

    guard = threading.Timer(20.0, stop.set)  # never hang the suite if the catch-up run never comes
    guard.start()
    assert Scheduler([Planned("0 3 * * *", ("docs",))], runner, tmp_path).serve(stop) == 0
    guard.cancel()
    assert calls == [Planned("0 3 * * *", ("docs",))]
