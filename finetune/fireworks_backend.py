"""Fireworks AI: datasets and supervised fine-tuning jobs (LoRA) under `/v1/accounts/{account}`.

Routes (https://docs.fireworks.ai/api-reference): POST datasets (a `datasetId` and the dataset's
`exampleCount`), POST datasets/{id}:upload (multipart `file`, up to 150 MB; a larger file: POST
datasets/{id}:getUploadEndpoint, then a PUT to the signed URL it returns), POST datasets/{id}:validateUpload,
GET datasets/{id}; POST supervisedFineTuningJobs, GET supervisedFineTuningJobs/{id}, POST
supervisedFineTuningJobs/{id}:cancel (the REST form of `firectl supervised-fine-tuning-job cancel`);
DELETE models/{id}; chat at /inference/v1/chat/completions. Fireworks lists no events, checkpoints or metrics
file for a job: events and `results` are the job's state and `jobProgress` as last read.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from finetune.backend import (
    ApiError,
    Backend,
    ChatReply,
    Checkpoint,
    FinetuneError,
    Job,
    JobError,
    JobEvent,
    JobRequest,
    RemoteFile,
    TransientError,
)
from finetune.rest import Rest, api_key, chat_completions

if TYPE_CHECKING:
    from configs import FinetuneConfig, SamplingConfig

DEFAULT_BASE_URL = "https://api.fireworks.ai"
KEY_ENV = "FIREWORKS_API_KEY"
UPLOAD_MAX_BYTES = 150 * 1024 * 1024  # the one-request upload's limit; a larger file goes to a signed URL
STATUS = {"JOB_STATE_CREATING": "queued", "JOB_STATE_PENDING": "queued", "JOB_STATE_VALIDATING": "validating_files",
          "JOB_STATE_RUNNING": "running", "JOB_STATE_WRITING_RESULTS": "running", "JOB_STATE_COMPLETED": "succeeded",
          "JOB_STATE_FAILED": "failed", "JOB_STATE_FAILED_CLEANING_UP": "failed", "JOB_STATE_CANCELLED": "cancelled",
          "JOB_STATE_CANCELLING": "running", "JOB_STATE_EXPIRED": "failed"}


def refusals(ft: FinetuneConfig) -> list[str]:
    """The configured settings Fireworks' supervised jobs have no field for (checked before any upload)."""
    from configs import LoraConfig

    out = []
    if not ft.account:
        out.append("finetune.account: Fireworks' routes are under an account id; set it")
    if ft.seed is not None:
        out.append("finetune.seed: Fireworks' jobs take no seed; remove it")
    if ft.wandb is not None:
        out.append("finetune.wandb: Fireworks takes a W&B key in the request body, which this project never sends; "
                   "remove finetune.wandb")
    if ft.batch_size != "auto":
        out.append("finetune.batch_size: Fireworks sizes batches itself; set it to auto")
    if not ft.lora.enabled:
        out.append("finetune.lora.enabled: Fireworks' supervised jobs train LoRA adapters only")
    default = LoraConfig()
    for name in ("alpha", "dropout", "target_modules"):
        if getattr(ft.lora, name) != getattr(default, name):
            out.append(f"finetune.lora.{name}: Fireworks takes only the rank (lora.r); leave {name} at its default")
    return out


def hyperparameters(ft: FinetuneConfig) -> dict[str, Any]:
    return {"n_epochs": ft.n_epochs, "learning_rate": ft.learning_rate, "lora_rank": ft.lora.r,
            "max_context_length": ft.max_seq_length}


def create_body(request: JobRequest) -> dict[str, Any]:
    """The POST supervisedFineTuningJobs body; see the mapping table in docs/finetuning.md."""
    hp = request.hyperparameters
    body: dict[str, Any] = {"dataset": request.training_file, "baseModel": request.model,
                            "loraRank": hp["lora_rank"], "maxContextLength": hp["max_context_length"]}
    if hp.get("n_epochs", "auto") != "auto":
        body["epochs"] = hp["n_epochs"]
    if hp.get("learning_rate", "auto") != "auto":
        body["learningRate"] = hp["learning_rate"]
    if request.validation_file:
        body["evaluationDataset"] = request.validation_file
    if request.suffix:
        body["displayName"] = request.suffix
    return body


def dataset_id(filename: str, digest: str) -> str:
    """Fireworks ids are lowercase letters, digits and '-', at most 63 long; the content hash keeps them unique."""
    stem = re.sub(r"[^a-z0-9-]+", "-", Path(filename).stem.lower()).strip("-")
    return f"{stem[:50]}-{digest[:12]}"


def _measure(path: Path) -> tuple[int, str, int]:
    """A file's size, sha256 and lines, read in blocks (a file for the signed upload may be gigabytes)."""
    digest, size, lines, last = hashlib.sha256(), 0, 0, b"\n"
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            digest.update(block)
            size += len(block)
            lines += block.count(b"\n")
            last = block[-1:]
    return size, digest.hexdigest(), lines + (last != b"\n")


def _put_signed(url: str, path: Path, size: int, *, timeout: float, retries: int, what: str) -> None:
    """PUT a file, streamed, to a signed Cloud Storage URL. The URL is the credential: no API key goes with it,
    and neither it nor its signature is shown in an error."""
    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size),
               "x-goog-content-length-range": f"{size},{size}"}
    for attempt in range(retries + 1):
        try:
            with open(path, "rb") as f, urllib.request.urlopen(
                    urllib.request.Request(url, data=f, method="PUT", headers=headers), timeout=timeout) as answer:
                answer.read()
            return
        except urllib.error.HTTPError as exc:
            if (exc.code == 429 or exc.code >= 500) and attempt < retries:
                time.sleep(0.5 * 2 ** attempt)
                continue
            kind = TransientError if exc.code == 429 or exc.code >= 500 else ApiError
            raise kind(f"{what} failed (HTTP {exc.code}); run the command again", status=exc.code) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            if attempt < retries:
                time.sleep(0.5 * 2 ** attempt)
                continue
            reason = getattr(exc, "reason", exc)
            raise TransientError(f"{what} failed: {' '.join(str(reason).split())}; run the command again") from None


def _epoch(stamp: Any) -> int | None:
    if isinstance(stamp, str) and stamp:
        return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp())
    return None


class FireworksBackend(Backend):
    name = "fireworks"

    def __init__(self, rest: Rest, account: str):
        self.rest, self.account = rest, account
        self.scope = f"fireworks|{rest.base_url}|{account}"
        self.root = f"/v1/accounts/{account}"

    @classmethod
    def from_config(cls, ft: FinetuneConfig, env: Mapping[str, str] | None = None) -> "FireworksBackend":
        env = os.environ if env is None else env
        if not ft.account:
            raise FinetuneError("provider fireworks needs finetune.account, the account id its routes are under")
        key = api_key(env, ft.api_key_env or KEY_ENV, "Fireworks AI")
        return cls(Rest(ft.base_url or DEFAULT_BASE_URL, ft.timeout, ft.max_retries, "Fireworks AI", key), ft.account)

    def __repr__(self) -> str:
        return f"FireworksBackend({self.rest.base_url}, account {self.account})"

    # ---- datasets (our "files")

    def _dataset(self, d: dict[str, Any], size: int = 0) -> RemoteFile:
        state = str(d.get("state") or "")
        return RemoteFile(id=d["name"], filename=d.get("displayName") or "", bytes=size, purpose="fine-tune",
                          status="processed" if state == "READY" else state.lower() or None)

    def upload_file(self, path: Path, *, filename: str) -> RemoteFile:
        size, digest, lines = _measure(path)
        ident = dataset_id(filename, digest)
        self.rest.request("POST", f"{self.root}/datasets", what=f"creating dataset {ident}", body={
            "datasetId": ident, "dataset": {"displayName": filename, "exampleCount": str(lines), "userUploaded": {}}})
        if size <= UPLOAD_MAX_BYTES:
            self.rest.upload(f"{self.root}/datasets/{ident}:upload", {}, file_field="file", filename=filename,
                             content=path.read_bytes(), what=f"uploading {filename}")
        else:
            urls = self.rest.request("POST", f"{self.root}/datasets/{ident}:getUploadEndpoint",
                                     body={"filenameToSize": {filename: str(size)}},
                                     what=f"asking where to upload {filename}").get("filenameToSignedUrls") or {}
            if filename not in urls:
                raise FinetuneError(f"Fireworks gave no upload URL for {filename}; upload it with firectl")
            _put_signed(urls[filename], path, size, timeout=self.rest.timeout, retries=self.rest.max_retries,
                        what=f"uploading {filename} to Fireworks' storage")
        self.rest.request("POST", f"{self.root}/datasets/{ident}:validateUpload", body={},
                          what=f"validating the upload of {filename}")
        return self._dataset(self.rest.request("GET", f"{self.root}/datasets/{ident}"), size)

    def get_file(self, file_id: str) -> RemoteFile | None:
        try:
            return self._dataset(self.rest.request("GET", f"/v1/{file_id}", what=f"looking up {file_id}"))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    # ---- jobs

    def _job(self, j: dict[str, Any]) -> Job:
        state = str(j.get("state") or "")
        status = STATUS.get(state, state.lower())
        status_detail = j.get("status") or {}
        error = None
        if status == "failed":
            error = JobError(code=str(status_detail.get("code") or state),
                             message=status_detail.get("message") or "the job failed")
        done = status == "succeeded"
        hp = {k: j[k] for k in ("epochs", "learningRate", "loraRank", "maxContextLength") if j.get(k) is not None}
        job_id = str(j["name"]).rsplit("/", 1)[-1]
        return Job(
            id=job_id, provider=self.name, model=j.get("baseModel") or "", status=status,
            created_at=_epoch(j.get("createTime")), finished_at=_epoch(j.get("completedTime")),
            fine_tuned_model=j.get("outputModel") if done else None, training_file=j.get("dataset"),
            validation_file=j.get("evaluationDataset") or None, hyperparameters=hp,
            result_files=(f"progress:{job_id}",) if done else (), error=error, suffix=j.get("displayName"),
        )

    def _get(self, job_id: str) -> dict[str, Any]:
        return self.rest.request("GET", f"{self.root}/supervisedFineTuningJobs/{job_id}",
                                 what=f"looking up job {job_id}")

    def create_job(self, request: JobRequest) -> Job:
        return self._job(self.rest.request("POST", f"{self.root}/supervisedFineTuningJobs",
                                           body=create_body(request),
                                           what="creating the supervised fine-tuning job"))

    def get_job(self, job_id: str) -> Job:
        return self._job(self._get(job_id))

    def list_events(self, job_id: str, *, since: str | None = None, limit: int | None = None) -> list[JobEvent]:
        """The job's state and progress now, as one event (Fireworks keeps no event log for a job)."""
        j = self._get(job_id)
        progress = j.get("jobProgress") or {}
        state = str(j.get("state") or "")
        ident = f"{job_id}-{state}-{progress.get('epoch', '')}-{progress.get('percent', '')}"
        if ident == since:
            return []
        message = f"{state.removeprefix('JOB_STATE_').lower()}" + (
            f" · epoch {progress['epoch']} · {progress.get('percent', 0)}%" if "epoch" in progress else "")
        detail = (j.get("status") or {}).get("message")
        return [JobEvent(id=ident, created_at=_epoch(j.get("updateTime")) or 0,
                         level="error" if STATUS.get(state) == "failed" else "info",
                         message=message + (f": {detail}" if detail else ""), data=dict(progress))]

    def cancel_job(self, job_id: str) -> Job:
        self.rest.request("POST", f"{self.root}/supervisedFineTuningJobs/{job_id}:cancel", body={},
                          what=f"cancelling job {job_id}")
        return self.get_job(job_id)

    def pause_job(self, job_id: str) -> Job:
        raise FinetuneError("Fireworks' supervised fine-tuning jobs cannot be paused; `jobs cancel` stops one")

    resume_job = pause_job

    def list_checkpoints(self, job_id: str) -> list[Checkpoint]:
        return []  # Fireworks keeps the output model only

    def download_result(self, file_id: str) -> bytes:
        """`progress:<job id>`: the job's final progress as a one-row CSV (step = epochs done)."""
        progress = self._get(file_id.removeprefix("progress:")).get("jobProgress") or {}
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        columns = [k for k in ("percent", "inputTokens", "outputTokens") if k in progress]
        writer.writerow(["step", *columns])
        writer.writerow([progress.get("epoch", 0), *(progress[k] for k in columns)])
        return out.getvalue().encode("utf-8")

    def delete_model(self, model: str) -> bool:
        """`accounts/<account>/models/<id>`, as a finished job names its output model."""
        self.rest.request("DELETE", f"/v1/{model}", what=f"deleting model {model}")
        return True

    def chat(self, model: str, messages: list[dict[str, Any]], *, sampling: SamplingConfig) -> list[ChatReply]:
        return chat_completions(self.rest, "/inference/v1/chat/completions", model, messages, sampling)
