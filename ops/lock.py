"""One lock per output directory, so two commands never write the same state and datasets at once.

The lock is the kernel's `flock` on `<output_dir>/.crawl2tune.lock`: `run`, `crawl` and `build` take it
exclusively, `crawl --worker` processes share it with each other. The kernel releases it when its process
ends, however it ends, so a killed process never leaves a lock that blocks anyone; what it leaves is the note
saying who held it, which the next holder reports as a recovered stale lock. The lock file itself is never
deleted (deleting a lock file while others wait on it is the classic race).

flock is reliable on local file systems; on NFS it depends on the mount, so keep `output_dir` local and
share work between machines through Redis (`crawl.redis_url`).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
import socket
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from base.errors import Crawl2TuneError
from base.state import now

LOCK_FILE = ".crawl2tune.lock"
HOLDER_FILE = ".crawl2tune.lock.json"  # the exclusive holder
WORKERS_DIR = ".crawl2tune.workers"  # one note per shared holder


class LockHeld(Crawl2TuneError, RuntimeError):
    """Another process holds the output directory."""

    def __init__(self, output_dir: Path, holders: list["Holder"]):
        self.output_dir = Path(output_dir)
        self.holders = holders
        if not holders:
            who = "another process (it has not written its name yet)"
        elif len(holders) == 1:
            who = holders[0].describe()
        else:
            who = f"{len(holders)} processes, e.g. {holders[0].describe()}"
        super().__init__(
            f"{self.output_dir} is in use by {who}; wait for it to finish or stop it, then run this command again"
        )


@dataclass(frozen=True)
class Holder:
    """Who holds (or last held) the lock."""

    pid: int
    host: str
    command: str
    started_at: str
    mode: str = "exclusive"

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} (`{self.command}`, started {self.started_at})"

    def alive(self) -> bool | None:
        """Whether the process still runs; None when it runs on another host and cannot be checked."""
        if self.host != socket.gethostname():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    @classmethod
    def read(cls, path: Path) -> "Holder | None":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(**{k: data[k] for k in ("pid", "host", "command", "started_at", "mode") if k in data})
        except (OSError, ValueError, TypeError, KeyError):
            return None


def command_line() -> str:
    """How this process was started, for other processes' refusals: `pipeline.py run --config x.yaml`."""
    argv = list(sys.argv)
    if argv:
        argv[0] = Path(argv[0]).name
    return " ".join(argv)


class OutputLock:
    """`with OutputLock(output_dir, shared=False):` — refuses at once (`LockHeld`) instead of waiting.

    After acquiring, `recovered` lists the holders a killed process left behind (their notes were stale).
    """

    def __init__(self, output_dir: Path, *, shared: bool = False, command: str | None = None):
        self.dir = Path(output_dir)
        self.shared = shared
        self.me = Holder(os.getpid(), socket.gethostname(), command or command_line(), now("seconds"),
                         "shared" if shared else "exclusive")
        self.recovered: list[Holder] = []
        self._fd: int | None = None
        self._note: Path | None = None

    @property
    def path(self) -> Path:
        return self.dir / LOCK_FILE

    def holders(self) -> list[Holder]:
        """Who the notes say holds the lock (exclusive holder first, then shared ones)."""
        found = [h for h in [Holder.read(self.dir / HOLDER_FILE)] if h is not None]
        workers = self.dir / WORKERS_DIR
        if workers.is_dir():
            found += [h for h in (Holder.read(p) for p in sorted(workers.glob("*.json"))) if h is not None]
        return found

    def acquire(self) -> "OutputLock":
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise LockHeld(self.dir, self._live_holders()) from None
        self._fd = fd
        self._clear_stale_notes()
        self._note = self._note_path()
        self._note.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._note.with_name(f".{self._note.name}.tmp")
        tmp.write_text(json.dumps(asdict(self.me)), encoding="utf-8")
        os.replace(tmp, self._note)
        return self

    def _note_path(self) -> Path:
        if self.shared:
            return self.dir / WORKERS_DIR / f"{self.me.host}-{self.me.pid}-{secrets.token_hex(4)}.json"
        return self.dir / HOLDER_FILE

    def _live_holders(self) -> list[Holder]:
        """The notes of processes that may hold the lock now: the exclusive one if we could not share, the
        shared ones otherwise; notes of processes known dead are left out."""
        holders = [h for h in self.holders() if h.alive() is not False]
        exclusive = [h for h in holders if h.mode == "exclusive"]
        return exclusive or holders

    def _clear_stale_notes(self) -> None:
        """We hold the lock: an exclusive note is stale (its process died holding it); with the exclusive
        lock every shared note is stale too, with a shared one those of dead processes."""
        exclusive = self.dir / HOLDER_FILE
        stale = Holder.read(exclusive) if exclusive.exists() else None
        if stale is not None:
            self.recovered.append(stale)
        exclusive.unlink(missing_ok=True)
        workers = self.dir / WORKERS_DIR
        for note in sorted(workers.glob("*.json")) if workers.is_dir() else []:
            holder = Holder.read(note)
            if not self.shared or holder is None or holder.alive() is False:
                if holder is not None:
                    self.recovered.append(holder)
                note.unlink(missing_ok=True)

    def release(self) -> None:
        if self._fd is None:
            return
        if self._note is not None:
            self._note.unlink(missing_ok=True)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
