"""A fake of Fireworks AI's datasets and supervised fine-tuning jobs on 127.0.0.1, as strict as
tests/fireworks_schemas.json, with the dataset rules of its guide: at least 3 examples, UTF-8 JSON lines of
`messages` (system only first), `exampleCount` equal to the lines uploaded.

A file over the one-request upload's 150 MB goes to the signed URL `:getUploadEndpoint` returns: a PUT that must
carry no API key, `Content-Type: application/octet-stream`, the announced size as `x-goog-content-length-range`
and the signature.

A job moves one state per GET: JOB_STATE_CREATING → JOB_STATE_RUNNING (epoch by epoch) → JOB_STATE_COMPLETED
with `outputModel`.
"""

from __future__ import annotations

import copy
import json
import re
import urllib.parse
import uuid
from typing import Any

from fake_service import Failure, FakeService

MIN_EXAMPLES = 3
STAMP = "2026-11-21T00:00:00Z"


class FakeFireworks(FakeService):
    schema_file = "fireworks_schemas.json"

    def __init__(self, api_key: str = "fw-test-key-0123456789abcdef", *, account: str = "acct",
                 models: tuple[str, ...] = ()):
        super().__init__(api_key)
        self.account = account
        self.models = set(models)
        self.datasets: dict[str, dict[str, Any]] = {}
        self.data: dict[str, bytes] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.deleted_models: set[str] = set()
        self.signed: dict[str, tuple[str, int]] = {}  # signature → dataset, announced size
        self.signed_puts: list[dict[str, str]] = []  # the headers of each PUT to a signed URL
        root = rf"/v1/accounts/{re.escape(account)}"
        self.routes = [
            ("POST", re.compile(rf"{root}/datasets"), self._create_dataset),
            ("POST", re.compile(rf"{root}/datasets/([^/:]+):upload"), self._upload),
            ("POST", re.compile(rf"{root}/datasets/([^/:]+):getUploadEndpoint"), self._upload_endpoint),
            ("POST", re.compile(rf"{root}/datasets/([^/:]+):validateUpload"), self._validate),
            ("GET", re.compile(rf"{root}/datasets/([^/:]+)"), self._get_dataset),
            ("POST", re.compile(rf"{root}/supervisedFineTuningJobs"), self._create_job),
            ("GET", re.compile(rf"{root}/supervisedFineTuningJobs/([^/:]+)"), self._get_job),
            ("POST", re.compile(rf"{root}/supervisedFineTuningJobs/([^/:]+):cancel"), self._cancel),
            ("DELETE", re.compile(rf"{root}/models/([^/:]+)"), self._delete_model),
            ("POST", re.compile(r"/inference/v1/chat/completions"), self._chat),
        ]

    @property
    def base_url(self) -> str:
        return super().base_url.removesuffix("/v1")

    def _name(self, kind: str, ident: str) -> str:
        return f"accounts/{self.account}/{kind}/{ident}"

    # ---- datasets

    def _dataset(self, ident: str) -> dict[str, Any]:
        if ident not in self.datasets:
            raise Failure(404, f"dataset {ident} not found", "NOT_FOUND")
        return self.datasets[ident]

    def _create_dataset(self, *, body: Any, query: Any) -> dict[str, Any]:
        self.check("CreateDataset", body)
        ident = body["datasetId"]
        if ident in self.datasets:
            raise Failure(409, f"dataset {ident} already exists", "ALREADY_EXISTS")
        self.datasets[ident] = {"name": self._name("datasets", ident), "createTime": STAMP, "state": "UPLOADING",
                                "status": {"code": "OK", "message": ""}, **copy.deepcopy(body["dataset"])}
        return self.datasets[ident]

    def _upload(self, ident: str, *, body: Any, query: Any) -> dict[str, Any]:
        dataset = self._dataset(ident)
        self.check("UploadDatasetFile", {k: {} for k in (body or {})})
        data = body["file"].data
        self.data[ident] = data
        return {"id": ident, "object": "file", "bytes": len(data), "created_at": 1_795_000_000,
                "filename": body["file"].filename, "purpose": "fine-tune"}

    def _upload_endpoint(self, ident: str, *, body: Any, query: Any) -> dict[str, Any]:
        self._dataset(ident)
        self.check("GetDatasetUploadEndpoint", body)
        urls = {}
        for filename, size in body["filenameToSize"].items():
            signature = uuid.uuid4().hex
            self.signed[signature] = (ident, int(size))
            urls[filename] = f"{self.base_url}/storage/{ident}/{filename}?X-Goog-Signature={signature}"
        return {"filenameToSignedUrls": urls}

    def dispatch(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
        if method != "PUT":
            return super().dispatch(method, raw_path, headers, body)
        lower = {k.lower(): v for k, v in headers.items()}
        with self.lock:
            self.signed_puts.append(lower)
            signature = urllib.parse.parse_qs(urllib.parse.urlsplit(raw_path).query).get("X-Goog-Signature", [""])[0]
            ident, size = self.signed.get(signature, (None, -1))
            problem = ("no such signature" if ident is None
                       else "an Authorization header on a signed URL" if "authorization" in lower
                       else "Content-Type is not application/octet-stream"
                       if lower.get("content-type") != "application/octet-stream"
                       else "x-goog-content-length-range is not the announced size"
                       if lower.get("x-goog-content-length-range") != f"{size},{size}"
                       else "the body is not the announced size" if len(body) != size else None)
            if problem:
                return 403, "application/xml", f"<Error><Code>AccessDenied</Code><Message>{problem}</Message></Error>".encode()
            self.data[ident] = body
            return 200, "text/plain", b""

    def _validate(self, ident: str, *, body: Any, query: Any) -> dict[str, Any]:
        dataset = self._dataset(ident)
        self.check("ValidateDatasetUpload", body)
        if ident not in self.data:
            raise Failure(400, f"dataset {ident} has no uploaded file", "FAILED_PRECONDITION")
        try:
            lines = self.data[ident].decode("utf-8").splitlines()
        except UnicodeDecodeError:
            raise Failure(400, f"dataset {ident} is not UTF-8", "INVALID_ARGUMENT") from None
        if len(lines) < MIN_EXAMPLES:
            raise Failure(400, f"dataset {ident} has {len(lines)} examples, fewer than {MIN_EXAMPLES}",
                          "INVALID_ARGUMENT")
        if dataset.get("exampleCount") not in (None, str(len(lines))):
            raise Failure(400, f"exampleCount {dataset['exampleCount']} but {len(lines)} lines uploaded",
                          "INVALID_ARGUMENT")
        for n, line in enumerate(lines, 1):
            try:
                example = json.loads(line)
                self.check("TrainingLine", example)
            except (json.JSONDecodeError, Failure) as exc:
                raise Failure(400, f"dataset {ident} line {n}: {exc}", "INVALID_ARGUMENT") from None
            if any(m["role"] == "system" for m in example["messages"][1:]):
                raise Failure(400, f"dataset {ident} line {n}: a system message must come first", "INVALID_ARGUMENT")
        dataset["state"] = "READY"
        return {}

    def _get_dataset(self, ident: str, *, body: Any, query: Any) -> dict[str, Any]:
        return self._dataset(ident)

    # ---- jobs

    def _create_job(self, *, body: Any, query: Any) -> dict[str, Any]:
        self.check("CreateSupervisedFineTuningJob", body)
        if body.get("baseModel") and body["baseModel"] not in self.models:
            raise Failure(400, f"base model {body['baseModel']} is not tunable", "INVALID_ARGUMENT")
        for field in ("dataset", "evaluationDataset"):
            if field in body:
                ident = body[field].rsplit("/", 1)[-1]
                if self._dataset(ident)["state"] != "READY":
                    raise Failure(400, f"{field} {body[field]} is not READY", "FAILED_PRECONDITION")
        ident = uuid.uuid4().hex[:12]
        job = {"name": self._name("supervisedFineTuningJobs", ident), "createTime": STAMP, "updateTime": STAMP,
               "state": "JOB_STATE_CREATING", "status": {"code": "OK", "message": ""}, **copy.deepcopy(body)}
        self.jobs[ident] = job
        return job

    def _job(self, ident: str) -> dict[str, Any]:
        if ident not in self.jobs:
            raise Failure(404, f"supervised fine-tuning job {ident} not found", "NOT_FOUND")
        return self.jobs[ident]

    def _get_job(self, ident: str, *, body: Any, query: Any) -> dict[str, Any]:
        job = self._job(ident)
        epochs = job.get("epochs", 1)
        if job["state"] == "JOB_STATE_CREATING":
            job["state"], job["jobProgress"] = "JOB_STATE_RUNNING", {"percent": 0, "epoch": 0}
        elif job["state"] == "JOB_STATE_RUNNING":
            epoch = job["jobProgress"]["epoch"] + 1
            job["jobProgress"] = {"percent": round(100 * epoch / epochs), "epoch": epoch, "inputTokens": 1000 * epoch}
            if epoch >= epochs:
                job["state"], job["completedTime"] = "JOB_STATE_COMPLETED", STAMP
                job["outputModel"] = self._name("models", f"ft-{ident}")
        return job

    def _cancel(self, ident: str, *, body: Any, query: Any) -> dict[str, Any]:
        job = self._job(ident)
        if job["state"] in ("JOB_STATE_COMPLETED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"):
            raise Failure(400, f"job {ident} is {job['state']}", "FAILED_PRECONDITION")
        job["state"] = "JOB_STATE_CANCELLED"
        return {}

    def _delete_model(self, ident: str, *, body: Any, query: Any) -> dict[str, Any]:
        name = self._name("models", ident)
        if name in self.deleted_models or not any(j.get("outputModel") == name for j in self.jobs.values()):
            raise Failure(404, f"model {name} not found", "NOT_FOUND")
        self.deleted_models.add(name)
        return {}

    def _chat(self, *, body: Any, query: Any) -> dict[str, Any]:
        self.check("ChatCompletions", body)
        outputs = {j.get("outputModel") for j in self.jobs.values()} - self.deleted_models
        if body["model"] not in self.models | outputs:
            raise Failure(404, f"model {body['model']} not found", "NOT_FOUND")
        n = body.get("n", 1)
        return {"id": uuid.uuid4().hex, "object": "chat.completion", "model": body["model"],
                "choices": [{"index": i, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": f"answer {i} from {body['model']}"}}
                            for i in range(n)],
                "usage": {"prompt_tokens": 5, "completion_tokens": 4 * n, "total_tokens": 5 + 4 * n}}
