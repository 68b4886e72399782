"""What the commands print: human-readable lines by default, one JSON object per line with `--log-format json`.

A JSON line carries `ts`, `level`, `run_id` (the ledger's run, if any), `stage` (crawl, build, finetune,
schedule, …), `message`, and `logger` for records of Python's logging. Every line is redacted (API keys
masked, `redact`) before it is written, in this process and in the crawl's child process, which learns the
format and the run id from the environment (CRAWL2TUNE_LOG_FORMAT, CRAWL2TUNE_RUN_ID).
"""

from __future__ import annotations

import contextvars
import io
import json
import logging
import os
import re
import sys
import tempfile
import traceback
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, TextIO

FORMATS = ("text", "json")
ENV_FORMAT = "CRAWL2TUNE_LOG_FORMAT"
ENV_RUN = "CRAWL2TUNE_RUN_ID"

_run_id: contextvars.ContextVar[int | None] = contextvars.ContextVar("crawl2tune_run_id", default=None)
_stage: contextvars.ContextVar[str | None] = contextvars.ContextVar("crawl2tune_stage", default=None)
_state: dict[str, object] = {"format": "text"}
_KEY_PATTERN = re.compile(r"\b(sk-[A-Za-z0-9_-]{3})[A-Za-z0-9_-]{6,}")
_secrets: set[str] = set()


def register_secret(value: str) -> None:
    """Mask `value` (a password, token or cookie read from the environment) wherever this process writes it."""
    if value:
        _secrets.add(value)


def redact(text: str) -> str:
    """Mask API keys (the configured one wherever it appears, and anything shaped like an OpenAI key) and the
    registered secrets."""
    for name in ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY"):
        secret = os.environ.get(name)
        if secret and len(secret) >= 8:
            text = text.replace(secret, "***")
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return _KEY_PATTERN.sub(r"\1***", text)


def fmt() -> str:
    return str(_state["format"])


def record(message: str, level: str = "info", **extra: object) -> str:
    """One JSON log line (without the newline)."""
    run_id = _run_id.get()
    if run_id is None and os.environ.get(ENV_RUN, "").isdigit():
        run_id = int(os.environ[ENV_RUN])
    data = {"ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "level": level,
            "run_id": run_id, "stage": _stage.get() or _state.get("stage"), "message": redact(message), **extra}
    return json.dumps(data, ensure_ascii=False)


def say(text: str = "", level: str = "info") -> None:
    """A line of a command's output (stdout)."""
    if fmt() == "json":
        if text.strip():
            if level == "info" and text.lstrip().startswith(("warning:", "error:")):
                level = text.lstrip().split(":", 1)[0]
            print(record(text, level), flush=True)
    else:
        print(redact(text), flush=True)


def error(text: str) -> None:
    """The one-line error of a failed command (stderr)."""
    print(record(text, "error") if fmt() == "json" else redact(text), file=sys.stderr, flush=True)


class JsonFormatter(logging.Formatter):
    def format(self, rec: logging.LogRecord) -> str:
        message = rec.getMessage()
        if rec.exc_info:
            message += "\n" + self.formatException(rec.exc_info)
        return record(message, rec.levelname.lower(), logger=rec.name)


class _StderrHandler(logging.StreamHandler):
    """Writes to the `sys.stderr` of the moment (or a fixed stream), so a replaced stderr is followed."""

    def __init__(self, stream: TextIO | None = None):
        self._fixed = stream
        super().__init__(stream)

    @property
    def stream(self) -> TextIO:  # type: ignore[override]
        return self._fixed or sys.stderr

    @stream.setter
    def stream(self, value: TextIO | None) -> None:
        pass


def configure(log_format: str = "text", *, level: int = logging.WARNING, stream: TextIO | None = None) -> None:
    """Set the format for this process and the processes it starts; route Python's logging to stderr."""
    if log_format not in FORMATS:
        raise ValueError(f"unknown log format {log_format!r}; use one of {', '.join(FORMATS)}")
    _state["format"] = log_format
    os.environ[ENV_FORMAT] = log_format
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_crawl2tune", False)]:
        root.removeHandler(handler)
    if log_format == "text":
        return  # Python's own last-resort handler prints warnings as they are, as before
    handler = _StderrHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.setLevel(level)
    handler._crawl2tune = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    if root.level > level or root.level == logging.NOTSET:
        root.setLevel(level)


@contextmanager
def bound(run_id: int | None) -> Iterator[None]:
    """Lines written inside the block (and by child processes started inside it) carry `run_id`."""
    token = _run_id.set(run_id)
    previous = os.environ.get(ENV_RUN)
    if run_id is not None:
        os.environ[ENV_RUN] = str(run_id)
    try:
        yield
    finally:
        _run_id.reset(token)
        if previous is None:
            os.environ.pop(ENV_RUN, None)
        else:
            os.environ[ENV_RUN] = previous


@contextmanager
def stage(name: str) -> Iterator[None]:
    token = _stage.set(name)
    try:
        yield
    finally:
        _stage.reset(token)


class JsonLines(io.TextIOBase):
    """A text stream that writes every complete line it is given as a JSON log line to `target`."""

    def __init__(self, target: TextIO, level: str = "info"):
        self.target = target
        self.level = level
        self._buffer = ""

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        self._buffer += text
        *lines, self._buffer = self._buffer.replace("\r", "\n").split("\n")
        for line in lines:
            if line.strip():
                self.target.write(record(line.strip(), self.level) + "\n")
        self.target.flush()
        return len(text)

    def flush(self) -> None:
        self.target.flush()


def traceback_file(command: str, output_dir: Path | None) -> Path:
    """A new file for this process's tracebacks, `<command>-<time>-<pid>.log`: in `<output_dir>/logs/` when that
    is usable, else in the temp directory's crawl2tune-logs/ (os.devnull when neither is)."""
    name = f"{command}-{datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}.log"
    folders = [Path(output_dir) / "logs"] if output_dir is not None else []
    for folder in [*folders, Path(tempfile.gettempdir()) / "crawl2tune-logs"]:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).touch()
            return folder / name
        except OSError:
            continue
    return Path(os.devnull)


def append_traceback(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as out:
        out.write(redact(text))


def _tracebacks_to_file(command: str, output_dir: Path) -> None:
    """From now on (in this process and the processes it forks) a warning or error logged with an exception is
    one line naming the file its traceback went to (`traceback_file`, made at the first): whichever library
    logged it (Scrapy's spider and pipeline errors, the extractor's), the terminal gets no traceback."""
    make = logging.getLogRecordFactory()
    files: dict[int, Path] = {}  # by process: a forked one writes its own

    def record(*args: object, **kwargs: object) -> logging.LogRecord:
        rec = make(*args, **kwargs)
        if rec.exc_info and rec.exc_info[0] is not None and rec.levelno >= logging.WARNING:
            if os.getpid() not in files:
                files[os.getpid()] = traceback_file(command, output_dir)
            path = files[os.getpid()]
            append_traceback(path, f"{rec.getMessage()}\n{''.join(traceback.format_exception(*rec.exc_info))}\n")
            rec.msg = f"{rec.getMessage()} ({rec.exc_info[0].__name__}); the traceback is in {path}"
            rec.args, rec.exc_info, rec.exc_text = (), None, None
        return rec

    logging.setLogRecordFactory(record)


def configure_child(stage_name: str, output_dir: Path) -> bool:
    """In a child process (the crawl): tracebacks go to a file in `<output_dir>/logs/` (each logged one is a line
    naming it), and lines follow the parent's format. Returns True when the format is JSON, in which case the caller
    should not let a library install its own text handler on the root logger."""
    _tracebacks_to_file(stage_name, output_dir)
    log_format = os.environ.get(ENV_FORMAT, "text")
    if log_format != "json":
        return False
    _state["stage"] = stage_name  # the whole process is that stage, whatever context a callback runs in
    sys.stderr = JsonLines(sys.__stderr__)  # plain lines (progress) become JSON lines too
    configure("json", stream=sys.__stderr__)
    return True
