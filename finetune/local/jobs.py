"""The on-disk form of a local fine-tuning job, written by the trainer process and read by the backend.

`<output_dir>/local_jobs/<job id>/` holds:

    job.json          the request: base model, files, resolved hyperparameters, seed (written once, at creation)
    status.json       status, times, error, trained tokens (replaced atomically by whoever changes it)
    process.json      pid and start time of the training process, to tell it from a later process with its pid
    events.jsonl      the job's log, one JSON object a line, appended by both sides (a line is one write)
    train.log         the process's own stdout and stderr
    step_metrics.csv  step, train_loss, train_accuracy, valid_loss, valid_mean_token_accuracy (OpenAI's columns)
    checkpoints/      checkpoint-<step>/ after every epoch (the adapter alone with LoRA)
    adapter/          the trained LoRA adapter (or the whole model) with its tokenizer, when the job succeeded
    paused            present while the process is stopped by `jobs pause`

Uploaded training files are copies under `<output_dir>/local_jobs/files/`, named by content.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

METRIC_COLUMNS = ("step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy")


def jobs_root(output_dir: Path) -> Path:
    return Path(output_dir) / "local_jobs"


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default


@dataclass(frozen=True)
class JobDir:
    path: Path

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def job_file(self) -> Path:
        return self.path / "job.json"

    @property
    def status_file(self) -> Path:
        return self.path / "status.json"

    @property
    def process_file(self) -> Path:
        return self.path / "process.json"

    @property
    def events_file(self) -> Path:
        return self.path / "events.jsonl"

    @property
    def log_file(self) -> Path:
        return self.path / "train.log"

    @property
    def metrics_file(self) -> Path:
        return self.path / "step_metrics.csv"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def adapter(self) -> Path:
        return self.path / "adapter"

    @property
    def paused_marker(self) -> Path:
        return self.path / "paused"

    def job(self) -> dict[str, Any]:
        return read_json(self.job_file, {})

    def status(self) -> dict[str, Any]:
        return read_json(self.status_file, {"status": "queued"})

    def set_status(self, status: str, **fields: Any) -> dict[str, Any]:
        current = {**self.status(), **fields, "status": status, "updated_at": int(time.time())}
        write_json(self.status_file, current)
        return current

    def event(self, message: str, *, level: str = "info", type: str = "message",
              data: dict[str, Any] | None = None) -> None:
        line = json.dumps({"created_at": int(time.time()), "level": level, "message": message, "type": type,
                           "data": data or {}}, ensure_ascii=False) + "\n"
        fd = os.open(self.events_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode("utf-8"))  # one write per line: lines from two processes never interleave
        finally:
            os.close(fd)

    def events(self) -> list[dict[str, Any]]:
        try:
            raw = self.events_file.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        out = []
        for n, line in enumerate(raw.splitlines(), start=1):
            try:
                out.append({"id": f"ev-{n}", **json.loads(line)})
            except json.JSONDecodeError:
                continue  # a line still being written
        return out
