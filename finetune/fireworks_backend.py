"""Fireworks AI: datasets and supervised fine-tuning jobs (LoRA) under `/v1/accounts/{account}`.

Routes (https://docs.fireworks.ai/api-reference): POST datasets (a `datasetId` and the dataset's
`exampleCount`), POST datasets/{id}:upload (multipart `file`, up to 150 MB), POST datasets/{id}:validateUpload,
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
)
from finetune.rest import Rest, api_key, chat_completions

if TYPE_CHECKING:
    from configs import FinetuneConfig, SamplingConfig

DEFAULT_BASE_URL = "https://api.fireworks.ai"
KEY_ENV = "FIREWORKS_API_KEY"
UPLOAD_MAX_BYTES = 150 * 1024 * 1024  # larger files need the signed-URL upload, which is not implemented here
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
        data = path.read_bytes()
        if len(data) > UPLOAD_MAX_BYTES:
            raise FinetuneError(f"{path} is {len(data):,} bytes; Fireworks' one-request upload takes up to 150 MB: "
                                "upload it with firectl and train from there")
        ident = dataset_id(filename, hashlib.sha256(data).hexdigest())
        self.rest.request("POST", f"{self.root}/datasets", what=f"creating dataset {ident}", body={
            "datasetId": ident,
            "dataset": {"displayName": filename, "exampleCount": str(len(data.splitlines())), "userUploaded": {}}})
        self.rest.upload(f"{self.root}/datasets/{ident}:upload", {}, file_field="file", filename=filename,
                         content=data, what=f"uploading {filename}")
        self.rest.request("POST", f"{self.root}/datasets/{ident}:validateUpload", body={},
                          what=f"validating the upload of {filename}")
        return self._dataset(self.rest.request("GET", f"{self.root}/datasets/{ident}"), len(data))

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
