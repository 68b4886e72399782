"""A fake of Together AI's files and fine-tunes API on 127.0.0.1, as strict as tests/together_schemas.json.

A job moves one step per GET /v1/fine-tunes/{id}: pending → queued → running (an EPOCH_COMPLETE event with its
step per poll, a CHECKPOINT_SAVE at the last) → completed with `model_output_name`. The training file
is checked when the job is created, against the line shape of its training method (sft chat lines, dpo pairs).
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from fake_service import Failure, FakeService

CREATED = "2026-11-21T00:00:00.000Z"


@dataclass
class TJob:
    id: str
    body: dict[str, Any]
    status: str = "pending"
    events: list[dict[str, Any]] = field(default_factory=list)
    polls: int = 0

    def api(self, user: str) -> dict[str, Any]:
        b = self.body
        out = {"id": self.id, "status": self.status, "model": b.get("model") or b["from_checkpoint"].split(":")[0],
               "training_file": b["training_file"], "validation_file": b.get("validation_file", ""),
               "n_epochs": b.get("n_epochs", 1), "learning_rate": b.get("learning_rate", 0.00001),
               "batch_size": b.get("batch_size", 8), "training_type": b.get("training_type", {"type": "Full"}),
               "training_method": b.get("training_method", {"method": "sft"}), "suffix": b.get("suffix"),
               "created_at": CREATED, "updated_at": CREATED, "events": self.events, "token_count": 1234}
        if self.status == "completed":
            out["model_output_name"] = f"{user}/{out['model'].split('/')[-1]}-{b.get('suffix', 'ft')}-{self.id[3:11]}"
        return out


class FakeTogether(FakeService):
    schema_file = "together_schemas.json"

    def __init__(self, api_key: str = "together-test-key-0123456789abcdef", *, models: tuple[str, ...] = (),
                 running_polls: int = 2, user: str = "fake-user"):
        super().__init__(api_key)
        self.models = set(models)
        self.running_polls = running_polls
        self.user = user
        self.files: dict[str, dict[str, Any]] = {}
        self.data: dict[str, bytes] = {}
        self.jobs: dict[str, TJob] = {}
        self.routes = [
            ("POST", re.compile(r"/v1/files/upload"), self._upload),
            ("GET", re.compile(r"/v1/files/([^/]+)"), self._file),
            ("POST", re.compile(r"/v1/fine-tunes"), self._create),
            ("GET", re.compile(r"/v1/fine-tunes"), self._list),
            ("GET", re.compile(r"/v1/fine-tunes/([^/]+)"), self._retrieve),
            ("GET", re.compile(r"/v1/fine-tunes/([^/]+)/events"), self._events),
            ("POST", re.compile(r"/v1/fine-tunes/([^/]+)/cancel"), self._cancel),
            ("DELETE", re.compile(r"/v1/fine-tunes/([^/]+)"), self._delete),
            ("POST", re.compile(r"/v1/chat/completions"), self._chat),
        ]

    # ---- files

    def _upload(self, *, body: Any, query: Any) -> dict[str, Any]:
        self.check("FilesUpload", {k: ({} if k == "file" else v) for k, v in (body or {}).items()})
        data = body["file"].data
        file_id = f"file-{uuid.uuid4()}"
        self.files[file_id] = {"id": file_id, "object": "file", "created_at": 1_795_000_000,
                               "filename": body["file_name"], "bytes": len(data), "purpose": body["purpose"],
                               "Processed": True, "FileType": body.get("file_type", "jsonl"),
                               "LineCount": data.count(b"\n")}
        self.data[file_id] = data
        return self.files[file_id]

    def _file(self, file_id: str, *, body: Any, query: Any) -> dict[str, Any]:
        if file_id not in self.files:
            raise Failure(404, f"file {file_id} not found", "not_found")
        return self.files[file_id]

    def _check_lines(self, file_id: str, method: str) -> None:
        schema = "TrainingLinePreference" if method == "dpo" else "TrainingLineChat"
        try:
            text = self.data[file_id].decode("utf-8")
        except UnicodeDecodeError:
            raise Failure(400, f"{file_id} is not UTF-8", "invalid_file") from None
        for n, line in enumerate(text.splitlines(), 1):
            try:
                self.check(schema, json.loads(line))
            except (json.JSONDecodeError, Failure) as exc:
                raise Failure(400, f"{file_id} line {n} is not a valid {method} example: {exc}", "invalid_file")

    # ---- jobs

    def _create(self, *, body: Any, query: Any) -> dict[str, Any]:
        self.check("FineTunesCreate", body)
        if "model" in body and body["model"] not in self.models:
            raise Failure(400, f"model {body['model']} is not available for fine-tuning", "invalid_model")
        for param in ("training_file", "validation_file"):
            if body.get(param) and body[param] not in self.files:
                raise Failure(400, f"{param} {body[param]} not found", "invalid_file")
        method = body.get("training_method", {}).get("method", "sft")
        self._check_lines(body["training_file"], method)
        job = TJob(f"ft-{uuid.uuid4()}", copy.deepcopy(body))
        job.events.append({"object": "fine-tune-event", "created_at": CREATED, "level": "Info",
                           "message": "Fine tune request created", "type": "JOB_PENDING", "hash": uuid.uuid4().hex})
        self.jobs[job.id] = job
        return job.api(self.user)

    def _job(self, job_id: str) -> TJob:
        if job_id not in self.jobs:
            raise Failure(404, f"fine-tune job {job_id} not found", "not_found")
        return self.jobs[job_id]

    def _event(self, job: TJob, type_: str, message: str, **extra: Any) -> None:
        job.events.append({"object": "fine-tune-event", "created_at": CREATED, "level": "Info", "message": message,
                           "type": type_, "hash": uuid.uuid4().hex, **extra})

    def advance(self, job: TJob) -> None:
        if job.status == "pending":
            job.status = "queued"
            self._event(job, "JOB_START", "Job queued")
        elif job.status == "queued":
            job.status = "running"
            self._event(job, "TRAINING_START", "Training started")
        elif job.status == "running":
            job.polls += 1
            step = job.polls * 10
            self._event(job, "EPOCH_COMPLETE", f"Epoch {job.polls} completed at step {step}", step=step)
            if job.polls >= self.running_polls:
                self._event(job, "CHECKPOINT_SAVE", f"Checkpoint saved at step {step}", step=step)
                self._event(job, "JOB_COMPLETE", "Job finished")
                job.status = "completed"

    def _retrieve(self, job_id: str, *, body: Any, query: Any) -> dict[str, Any]:
        job = self._job(job_id)
        self.advance(job)
        return job.api(self.user)

    def _list(self, *, body: Any, query: Any) -> dict[str, Any]:
        return {"object": "list", "data": [j.api(self.user) for j in self.jobs.values()]}

    def _events(self, job_id: str, *, body: Any, query: Any) -> dict[str, Any]:
        return {"object": "list", "data": self._job(job_id).events}

    def _cancel(self, job_id: str, *, body: Any, query: Any) -> dict[str, Any]:
        job = self._job(job_id)
        if job.status in ("completed", "cancelled", "error"):
            raise Failure(400, f"job {job_id} is {job.status} and cannot be cancelled", "invalid_state")
        job.status = "cancelled"
        self._event(job, "JOB_STOPPED", "Job cancelled")
        return job.api(self.user)

    def _delete(self, job_id: str, *, body: Any, query: Any) -> dict[str, Any]:
        self._job(job_id)
        del self.jobs[job_id]  # its checkpoints and output model go with it
        return {"message": "Fine-tune job deleted successfully"}

    def _chat(self, *, body: Any, query: Any) -> dict[str, Any]:
        self.check("ChatCompletions", body)
        outputs = {j.api(self.user).get("model_output_name") for j in self.jobs.values()}
        if body["model"] not in self.models | outputs:
            raise Failure(404, f"model {body['model']} not found", "model_not_found")
        n = body.get("n", 1)
        return {"id": uuid.uuid4().hex, "object": "chat.completion", "model": body["model"],
                "choices": [{"index": i, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": f"answer {i} from {body['model']}"}}
                            for i in range(n)],
                "usage": {"prompt_tokens": 5, "completion_tokens": 4 * n, "total_tokens": 5 + 4 * n}}
