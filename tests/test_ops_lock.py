"""One command at a time per output directory: a second one is refused at once, naming the first; a lock left
by a killed process is recovered; crawl workers share the lock with each other but not with run/build."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from ops.lock import HOLDER_FILE, LockHeld, OutputLock
from ops_site import config, docs_site, pipeline, runs, wait_for
from pipeline import main
from sites import Site

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_second_run_on_the_same_output_is_refused_while_the_first_holds_the_lock(tmp_path, capsys):
    with Site(docs_site(3, 4, delay=0.15)) as site:
        cfg = config(tmp_path, site.base, crawl="  concurrency_per_domain: 1")
        first = pipeline(cfg, "run")
        holder = tmp_path / "out" / HOLDER_FILE
        wait_for(holder.exists, what="the first run to take the lock")

        for command in ("run", "crawl", "build"):
            assert main([command, "--config", str(cfg)]) == 1
            out, err = capsys.readouterr()
            lines = err.splitlines()
            assert len(lines) == 1, err  # one line, at once
            assert lines[0].startswith(f"error: {tmp_path / 'out'} is in use by pid {first.pid} on "
                                       f"{socket.gethostname()} (`pipeline.py run --config {cfg}`, started 20")
            assert "wait for it to finish or stop it, then run this command again" in lines[0]

        out, err = first.communicate(timeout=120)
        assert first.returncode == 0, err
        assert [r["status"] for r in runs(tmp_path / "out")] == ["ok"]  # refusals leave no row
        assert not holder.exists()
        assert main(["build", "--config", str(cfg)]) == 0  # free again


def test_stale_lock_of_a_killed_process_is_recovered_and_its_run_marked_died(tmp_path, capsys):
    with Site(docs_site(1, 2)) as site:
        cfg = config(tmp_path, site.base)
        killed = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
            import os, signal
            from ops.run import recorded
            with recorded({str(tmp_path / 'out')!r}, "run", sources=["docs"]):
                os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer or `kill -9` would
        """)], cwd=ROOT)
        assert killed.wait(timeout=60) == -signal.SIGKILL
        assert (tmp_path / "out" / HOLDER_FILE).exists()  # its note stays behind; the kernel freed the lock

        assert main(["crawl", "--config", str(cfg)]) == 0
        first_line = capsys.readouterr().out.splitlines()[0]
        assert first_line == (f"warning: recovered a stale lock of pid {killed.pid} on {socket.gethostname()} "
                              f"(`-c`, started {first_line.split('started ')[1].split(')')[0]}), which is no longer "
                              "running; its run 1 is marked died")
        rows = runs(tmp_path / "out")
        assert [(r["command"], r["status"]) for r in rows] == [("run", "died"), ("crawl", "ok")]
        assert rows[0]["finished_at"] and "killed" in rows[0]["error"]


def test_crawl_workers_share_the_lock_and_keep_run_and_build_out(tmp_path):
    first = OutputLock(tmp_path, shared=True, command="pipeline.py crawl --worker").acquire()
    second = OutputLock(tmp_path, shared=True, command="pipeline.py crawl --worker").acquire()
    with pytest.raises(LockHeld) as refused:
        OutputLock(tmp_path, command="pipeline.py build").acquire()
    assert "in use by 2 processes, e.g. pid" in str(refused.value)
    assert "`pipeline.py crawl --worker`" in str(refused.value)
    first.release()
    second.release()
    with OutputLock(tmp_path, command="pipeline.py build") as exclusive:
        assert exclusive.recovered == []  # clean releases leave nothing stale
        with pytest.raises(LockHeld):
            OutputLock(tmp_path, shared=True).acquire()
