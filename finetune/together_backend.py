"""Together AI's fine-tuning API: files upload, `/v1/fine-tunes` (LoRA or full, sft or dpo), events, cancel.

Routes (https://docs.together.ai/reference): POST /files/upload (multipart: file, file_name, purpose,
file_type), GET /files/{id}, POST /fine-tunes, GET /fine-tunes/{id}, GET /fine-tunes/{id}/events,
POST /fine-tunes/{id}/cancel, DELETE /fine-tunes/{id} (the job and its model), POST /chat/completions.
Together serves no per-step metrics file, pausing or checkpoint listing through this API: `results` writes
the steps its events name (epochs, checkpoints; losses go to W&B only), checkpoints are read from
CHECKPOINT_SAVE events, and pausing is refused in one line.
"""

from __future__ import annotations

import csv
import io
import os
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

DEFAULT_BASE_URL = "https://api.together.xyz/v1"
KEY_ENV = "TOGETHER_API_KEY"
MAX_EPOCHS = 20
MAX_SUFFIX = 40
EVALS_WITH_VALIDATION = 5  # Together evaluates the validation file only when n_evals > 0
STATUS = {"pending": "validating_files", "queued": "queued", "running": "running", "compressing": "running",
          "uploading": "running", "cancel_requested": "running", "completed": "succeeded", "error": "failed",
          "cancelled": "cancelled", "user_error": "failed"}


def refusals(ft: FinetuneConfig) -> list[str]:
    """The configured settings Together has no equivalent for (checked before any upload)."""
    out = []
    if ft.seed is not None:
        out.append("finetune.seed: Together's fine-tunes take no seed; remove it")
    if ft.wandb is not None:
        out.append("finetune.wandb: Together takes a W&B key in the request body, which this project never sends; "
                   "remove finetune.wandb")
    if ft.suffix and len(ft.suffix) > MAX_SUFFIX:
        out.append(f"finetune.suffix: Together takes at most {MAX_SUFFIX} characters, got {len(ft.suffix)}")
    if ft.n_epochs != "auto" and ft.n_epochs > MAX_EPOCHS:
        out.append(f"finetune.n_epochs: Together trains 1-{MAX_EPOCHS} epochs, got {ft.n_epochs}")
    return out


def hyperparameters(ft: FinetuneConfig) -> dict[str, Any]:
    """Our settings as stored with the job (and hashed to recognise a repeat)."""
    lora = ft.lora
    return {
        "n_epochs": ft.n_epochs, "batch_size": ft.batch_size, "learning_rate": ft.learning_rate,
        "lora": {"r": lora.r, "alpha": lora.alpha, "dropout": lora.dropout,
                 "target_modules": lora.target_modules} if lora.enabled else None,
        "training_method": ft.training_method, "train_on_inputs": ft.train_on_inputs,
        "from_checkpoint": ft.from_checkpoint,
    }


def create_body(request: JobRequest) -> dict[str, Any]:
    """The POST /fine-tunes body; see the mapping table in docs/finetuning.md."""
    hp = request.hyperparameters
    body: dict[str, Any] = {"training_file": request.training_file}
    if hp.get("from_checkpoint"):
        body["from_checkpoint"] = hp["from_checkpoint"]  # the checkpoint names its model: not both
    else:
        body["model"] = request.model
    if request.validation_file:
        body["validation_file"] = request.validation_file
        body["n_evals"] = EVALS_WITH_VALIDATION
    for ours, theirs in (("n_epochs", "n_epochs"), ("batch_size", "batch_size"), ("learning_rate", "learning_rate")):
        if hp.get(ours, "auto") != "auto":
            body[theirs] = hp[ours]
    lora = hp.get("lora")
    if lora:
        modules = lora["target_modules"]
        body["training_type"] = {"type": "Lora", "lora_r": lora["r"], "lora_alpha": lora["alpha"],
                                 "lora_dropout": lora["dropout"],
                                 "lora_trainable_modules": modules if isinstance(modules, str) else ",".join(modules)}
    else:
        body["training_type"] = {"type": "Full"}
    body["training_method"] = {"method": hp.get("training_method", "sft")}
    if hp.get("train_on_inputs", "auto") != "auto":
        body["train_on_inputs"] = hp["train_on_inputs"]
    if request.suffix:
        body["suffix"] = request.suffix
    return body


def _epoch(stamp: Any) -> int | None:
    if isinstance(stamp, (int, float)):
        return int(stamp)
    if isinstance(stamp, str) and stamp:
        return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp())
    return None


class TogetherBackend(Backend):
    name = "together"

    def __init__(self, rest: Rest):
        self.rest = rest
        self.scope = f"together|{rest.base_url}"

    @classmethod
    def from_config(cls, ft: FinetuneConfig, env: Mapping[str, str] | None = None) -> "TogetherBackend":
        env = os.environ if env is None else env
        key = api_key(env, ft.api_key_env or KEY_ENV, "Together AI")
        return cls(Rest(ft.base_url or DEFAULT_BASE_URL, ft.timeout, ft.max_retries, "Together AI", key))

    def __repr__(self) -> str:
        return f"TogetherBackend({self.rest.base_url})"

    # ---- files

    @staticmethod
    def _file(f: dict[str, Any]) -> RemoteFile:
        return RemoteFile(id=f["id"], filename=f.get("filename") or "", bytes=int(f.get("bytes") or 0),
                          purpose=f.get("purpose") or "fine-tune", status="processed" if f.get("Processed") else None)

    def upload_file(self, path: Path, *, filename: str) -> RemoteFile:
        fields = {"purpose": "fine-tune", "file_name": filename, "file_type": "jsonl"}
        return self._file(self.rest.upload("/files/upload", fields, file_field="file", filename=filename,
                                           content=path.read_bytes(), what=f"uploading {filename}"))

    def get_file(self, file_id: str) -> RemoteFile | None:
        try:
            return self._file(self.rest.request("GET", f"/files/{file_id}", what=f"looking up file {file_id}"))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    # ---- jobs

    def _job(self, j: dict[str, Any]) -> Job:
        status = STATUS.get(str(j.get("status")), str(j.get("status")))
        training_type = j.get("training_type") or {}
        hp = {k: j[k] for k in ("n_epochs", "batch_size", "learning_rate") if j.get(k) is not None}
        if training_type.get("type") == "Lora":
            hp.update({k: training_type[k] for k in ("lora_r", "lora_alpha") if k in training_type})
        error = None
        if status == "failed":
            failure = next((e for e in reversed(j.get("events") or []) if str(e.get("level", "")).lower() == "error"),
                           None)
            error = JobError(code="together_error", message=(failure or {}).get("message") or "the job failed")
        done = status == "succeeded"
        return Job(
            id=j["id"], provider=self.name, model=j.get("model") or "", status=status,
            created_at=_epoch(j.get("created_at")), finished_at=_epoch(j.get("updated_at")) if done else None,
            fine_tuned_model=j.get("model_output_name") if done else None, training_file=j.get("training_file"),
            validation_file=j.get("validation_file") or None, hyperparameters=hp,
            trained_tokens=j.get("token_count"), result_files=(f"events:{j['id']}",) if done else (),
            error=error, suffix=j.get("suffix"),
        )

    def create_job(self, request: JobRequest) -> Job:
        return self._job(self.rest.request("POST", "/fine-tunes", body=create_body(request),
                                           what="creating the fine-tuning job"))

    def get_job(self, job_id: str) -> Job:
        return self._job(self.rest.request("GET", f"/fine-tunes/{job_id}", what=f"looking up job {job_id}"))

    def _events(self, job_id: str) -> list[dict[str, Any]]:
        answer = self.rest.request("GET", f"/fine-tunes/{job_id}/events", what=f"listing the events of job {job_id}")
        return list((answer or {}).get("data") or [])

    def list_events(self, job_id: str, *, since: str | None = None, limit: int | None = None) -> list[JobEvent]:
        events = [JobEvent(id=e.get("hash") or f"{job_id}-{n}", created_at=_epoch(e.get("created_at")) or 0,
                           level=str(e.get("level") or "info").lower(), message=e.get("message") or "",
                           data={k: e[k] for k in ("type", "step", "token_count", "total_steps") if e.get(k) is not None})
                  for n, e in enumerate(self._events(job_id))]
        ids = [e.id for e in events]
        if since in ids:
            events = events[ids.index(since) + 1:]
        return events[-limit:] if limit else events

    def cancel_job(self, job_id: str) -> Job:
        return self._job(self.rest.request("POST", f"/fine-tunes/{job_id}/cancel", what=f"cancelling job {job_id}"))

    def pause_job(self, job_id: str) -> Job:
        raise FinetuneError("Together's fine-tunes cannot be paused; `jobs cancel` stops one, and "
                            "finetune.from_checkpoint continues from its last checkpoint")

    resume_job = pause_job

    def list_checkpoints(self, job_id: str) -> list[Checkpoint]:
        """From the CHECKPOINT_SAVE events; each is named `<job id>:<step>`, as from_checkpoint takes it."""
        found = {int(e["step"]): e for e in self._events(job_id)
                 if str(e.get("type", "")).upper() == "CHECKPOINT_SAVE" and e.get("step") is not None}
        return [Checkpoint(id=f"{job_id}:{step}", step=step, model=f"{job_id}:{step}", metrics={},
                           created_at=_epoch(e.get("created_at"))) for step, e in sorted(found.items(), reverse=True)]

    def download_result(self, file_id: str) -> bytes:
        """`events:<job id>`: a CSV of the steps the job's events name (Together reports losses to W&B only)."""
        job_id = file_id.removeprefix("events:")
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["step", "event", "message"])
        for e in self._events(job_id):
            if e.get("step") is not None:
                writer.writerow([e["step"], e.get("type") or "", e.get("message") or ""])
        return out.getvalue().encode("utf-8")

    def delete_model(self, model: str) -> bool:
        """Together deletes a fine-tuned model with its job (DELETE /fine-tunes/{id}): the job that made it is
        found in the job list by its output model name."""
        jobs = (self.rest.request("GET", "/fine-tunes", what="listing the fine-tuning jobs") or {}).get("data") or []
        job = next((j for j in jobs if j.get("model_output_name") == model), None)
        if job is None:
            raise ApiError(f"deleting model {model} failed: no Together fine-tuning job made it", status=404)
        self.rest.request("DELETE", f"/fine-tunes/{job['id']}", what=f"deleting model {model} (job {job['id']})")
        return True

    def chat(self, model: str, messages: list[dict[str, Any]], *, sampling: SamplingConfig) -> list[ChatReply]:
        return chat_completions(self.rest, "/chat/completions", model, messages, sampling)
