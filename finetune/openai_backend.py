"""The OpenAI backend on the official `openai` SDK; Azure OpenAI through the SDK's AzureOpenAI client.

Every SDK call goes through `_calling`, which turns the SDK's exceptions into our typed errors carrying the
API's own message, with the API key scrubbed out. The SDK retries 429, 5xx and timeouts itself
(`finetune.max_retries`, honouring Retry-After); what still fails arrives here as TransientError.
"""

from __future__ import annotations

import base64
import binascii
import os
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

import openai

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
    MissingCredentials,
    RemoteFile,
    TransientError,
)

if TYPE_CHECKING:
    from configs import SamplingConfig

MB = 1024 * 1024
FILES_API_MAX_BYTES = 512 * MB  # larger files go through the Uploads API
UPLOAD_PART_BYTES = 64 * MB
DEFAULT_BASE_URL = "https://api.openai.com/v1"


@dataclass(frozen=True)
class Connection:
    """Where and as whom to call the API; the key is kept out of repr so it cannot leak through a log."""

    provider: str
    base_url: str | None
    organization: str | None
    project: str | None
    api_version: str | None
    timeout: float
    max_retries: int
    api_key: str = field(repr=False)

    @property
    def scope(self) -> str:
        return "|".join((self.provider, self.base_url or DEFAULT_BASE_URL, self.organization or "",
                         self.project or ""))


def resolve_connection(config: Any, provider: str, env: Mapping[str, str] | None = None) -> Connection:
    """Settings by precedence env > config file > default; the key comes from the environment only.

    With `finetune.api_key_env` the service is another one than OPENAI_BASE_URL's (Nebius Token Factory …):
    its key is read from that variable alone and the OPENAI_* variables are ignored, so OpenAI's key is never
    sent to it, nor its key to OpenAI."""
    env = os.environ if env is None else env

    def pick(*names: str, fallback: str | None = None) -> str | None:
        return next((env[n] for n in names if env.get(n)), None) or fallback

    if config.api_key_env:  # a service of its own: its key, and only the config says where it is
        key = pick(config.api_key_env)
        key_help = f"export {config.api_key_env}=…, the variable finetune.api_key_env names"
        base_url = config.base_url
        api_version = pick("OPENAI_API_VERSION", fallback=config.api_version) if provider == "azure" else None
    elif provider == "azure":
        key = pick("AZURE_OPENAI_API_KEY", "OPENAI_API_KEY")
        key_help = "export AZURE_OPENAI_API_KEY=… (or OPENAI_API_KEY)"
        base_url = pick("AZURE_OPENAI_ENDPOINT", "OPENAI_BASE_URL", fallback=config.base_url)
        api_version = pick("OPENAI_API_VERSION", fallback=config.api_version)
    else:
        key = pick("OPENAI_API_KEY")
        key_help = "export OPENAI_API_KEY=sk-…"
        base_url = pick("OPENAI_BASE_URL", fallback=config.base_url)
        api_version = None
    if not key:
        raise MissingCredentials(
            f"no API key for the {provider} fine-tuning API: set it in the environment ({key_help}) and run the "
            "command again; keys are never read from config files"
        )
    if provider == "azure" and not base_url:
        raise FinetuneError("Azure OpenAI needs its resource endpoint: set finetune.base_url "
                            "(https://<resource>.openai.azure.com/) or AZURE_OPENAI_ENDPOINT")
    if provider == "azure" and not api_version:
        raise FinetuneError("Azure OpenAI needs an API version: set finetune.api_version or OPENAI_API_VERSION")
    own = bool(config.api_key_env)
    return Connection(
        provider=provider,
        base_url=base_url,
        organization=config.organization if own else pick("OPENAI_ORG_ID", fallback=config.organization),
        project=config.project if own else pick("OPENAI_PROJECT_ID", fallback=config.project),
        api_version=api_version,
        timeout=config.timeout,
        max_retries=config.max_retries,
        api_key=key,
    )


def make_client(conn: Connection) -> openai.OpenAI:
    common: dict[str, Any] = dict(api_key=conn.api_key, organization=conn.organization, project=conn.project,
                                  timeout=conn.timeout, max_retries=conn.max_retries)
    if conn.provider == "azure":
        return openai.AzureOpenAI(azure_endpoint=conn.base_url, api_version=conn.api_version, **common)
    return openai.OpenAI(base_url=conn.base_url, **common)


def decode_result(data: bytes) -> bytes:
    """The API serves result files base64-encoded; a compatible server may send the CSV as is."""
    try:
        return base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError):
        return data


class OpenAIBackend(Backend):
    def __init__(self, conn: Connection, client: openai.OpenAI | None = None):
        self.conn = conn
        self.name = conn.provider
        self.scope = conn.scope
        self.client = client or make_client(conn)

    @classmethod
    def from_config(cls, config: Any, provider: str = "openai") -> "OpenAIBackend":
        return cls(resolve_connection(config, provider))

    def __repr__(self) -> str:
        return f"OpenAIBackend({self.conn!r})"

    # ---- errors

    def _scrub(self, text: str) -> str:
        key = self.conn.api_key
        return text.replace(key, "***") if key and len(key) >= 8 else text

    @contextmanager
    def _calling(self, what: str) -> Iterator[None]:
        try:
            yield
        except openai.APIStatusError as exc:
            body = exc.body if isinstance(exc.body, dict) else {}
            message = " ".join(str(body.get("message") or exc.message).split())
            detail = ", ".join(p for p in (f"HTTP {exc.status_code}", exc.code, exc.param and f"param {exc.param}")
                               if p)
            kind = TransientError if exc.status_code == 429 or exc.status_code >= 500 else ApiError
            raise kind(self._scrub(f"{what} failed ({detail}): {message}"), status=exc.status_code,
                       code=exc.code, param=exc.param) from None
        except openai.APITimeoutError:
            raise TransientError(f"{what} failed: no answer within {self.conn.timeout:g}s after "
                                 f"{self.conn.max_retries} retries (finetune.timeout, finetune.max_retries)") from None
        except openai.APIConnectionError:
            raise TransientError(f"{what} failed: cannot connect to {self.conn.base_url or DEFAULT_BASE_URL} after "
                                 f"{self.conn.max_retries} retries; check the network and finetune.base_url") from None
        except openai.OpenAIError as exc:
            raise ApiError(self._scrub(f"{what} failed: {' '.join(str(exc).split())}")) from None

    # ---- files

    @staticmethod
    def _file(f: Any) -> RemoteFile:
        return RemoteFile(id=f.id, filename=f.filename, bytes=f.bytes or 0, purpose=f.purpose,
                          status=getattr(f, "status", None))

    def upload_file(self, path: Path, *, filename: str) -> RemoteFile:
        size = path.stat().st_size
        if size <= FILES_API_MAX_BYTES:
            with self._calling(f"uploading {filename}"), open(path, "rb") as fh:
                return self._file(self.client.files.create(file=(filename, fh, "application/jsonl"),
                                                           purpose="fine-tune"))
        return self._upload_in_parts(path, filename, size)

    def _upload_in_parts(self, path: Path, filename: str, size: int) -> RemoteFile:
        """Uploads API: parts of at most 64 MB read one at a time; a failed upload is cancelled."""
        with self._calling(f"starting the upload of {filename}"):
            upload = self.client.uploads.create(bytes=size, filename=filename, mime_type="text/jsonl",
                                                purpose="fine-tune")
        try:
            part_ids = []
            with open(path, "rb") as fh:
                while chunk := fh.read(UPLOAD_PART_BYTES):
                    with self._calling(f"uploading part {len(part_ids) + 1} of {filename}"):
                        part_ids.append(self.client.uploads.parts.create(upload.id, data=chunk).id)
            with self._calling(f"completing the upload of {filename}"):
                done = self.client.uploads.complete(upload.id, part_ids=part_ids)
        except BaseException:
            with suppress(Exception):
                self.client.uploads.cancel(upload.id)
            raise
        if done.status != "completed" or done.file is None:
            raise ApiError(f"the upload of {filename} ended with status {done.status!r} instead of completed")
        return self._file(done.file)

    def get_file(self, file_id: str) -> RemoteFile | None:
        try:
            with self._calling(f"looking up file {file_id}"):
                return self._file(self.client.files.retrieve(file_id))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def download_result(self, file_id: str) -> bytes:
        with self._calling(f"downloading result file {file_id}"):
            return decode_result(self.client.files.content(file_id).read())

    # ---- jobs

    def _job(self, j: Any) -> Job:
        hp = j.hyperparameters.model_dump(exclude_none=True) if j.hyperparameters else {}
        method = getattr(j, "method", None)
        supervised = getattr(method, "supervised", None) if method else None
        if supervised is not None and supervised.hyperparameters is not None:
            hp = {**hp, **supervised.hyperparameters.model_dump(exclude_none=True)}
        error = None
        if j.error is not None and (j.error.code or j.error.message):
            error = JobError(code=j.error.code, message=j.error.message or "", param=j.error.param)
        return Job(
            id=j.id, provider=self.name, model=j.model, status=str(j.status), created_at=j.created_at,
            finished_at=j.finished_at, fine_tuned_model=j.fine_tuned_model, training_file=j.training_file,
            validation_file=j.validation_file, hyperparameters=hp, trained_tokens=j.trained_tokens,
            result_files=tuple(j.result_files or ()), error=error, suffix=getattr(j, "user_provided_suffix", None),
            seed=j.seed, estimated_finish=j.estimated_finish, metadata=dict(j.metadata or {}),
        )

    def create_job(self, request: JobRequest) -> Job:
        body: dict[str, Any] = {
            "model": request.model,
            "training_file": request.training_file,
            "method": {"type": "supervised", "supervised": {"hyperparameters": dict(request.hyperparameters)}},
        }
        if request.validation_file:
            body["validation_file"] = request.validation_file
        if request.suffix:
            body["suffix"] = request.suffix
        if request.seed is not None:
            body["seed"] = request.seed
        if request.metadata:
            body["metadata"] = dict(request.metadata)
        if request.wandb:
            body["integrations"] = [{"type": "wandb", "wandb": dict(request.wandb)}]
        with self._calling("creating the fine-tuning job"):
            return self._job(self.client.fine_tuning.jobs.create(**body))

    def get_job(self, job_id: str) -> Job:
        with self._calling(f"looking up job {job_id}"):
            return self._job(self.client.fine_tuning.jobs.retrieve(job_id))

    def list_events(self, job_id: str, *, since: str | None = None, limit: int | None = None) -> list[JobEvent]:
        newest_first: list[JobEvent] = []
        with self._calling(f"listing the events of job {job_id}"):
            for e in self.client.fine_tuning.jobs.list_events(job_id, limit=min(limit or 100, 100)):
                if e.id == since or (limit is not None and len(newest_first) >= limit):
                    break
                data = e.data if isinstance(e.data, dict) else {}
                newest_first.append(JobEvent(id=e.id, created_at=e.created_at, level=e.level, message=e.message,
                                             type=e.type or "message", data=dict(data)))
        return newest_first[::-1]

    def cancel_job(self, job_id: str) -> Job:
        with self._calling(f"cancelling job {job_id}"):
            return self._job(self.client.fine_tuning.jobs.cancel(job_id))

    def pause_job(self, job_id: str) -> Job:
        with self._calling(f"pausing job {job_id}"):
            return self._job(self.client.fine_tuning.jobs.pause(job_id))

    def resume_job(self, job_id: str) -> Job:
        with self._calling(f"resuming job {job_id}"):
            return self._job(self.client.fine_tuning.jobs.resume(job_id))

    def list_checkpoints(self, job_id: str) -> list[Checkpoint]:
        with self._calling(f"listing the checkpoints of job {job_id}"):
            return [
                Checkpoint(id=c.id, step=c.step_number, model=c.fine_tuned_model_checkpoint,
                           metrics={k: v for k, v in c.metrics.model_dump().items() if v is not None},
                           created_at=c.created_at)
                for c in self.client.fine_tuning.jobs.checkpoints.list(job_id, limit=100)
            ]

    # ---- models

    def delete_model(self, model: str) -> bool:
        with self._calling(f"deleting model {model}"):
            return bool(self.client.models.delete(model).deleted)

    def chat(self, model: str, messages: list[dict[str, Any]], *, sampling: SamplingConfig) -> list[ChatReply]:
        extra = {"max_completion_tokens": sampling.max_tokens} if sampling.max_tokens else {}
        with self._calling(f"asking {model}"):
            reply = self.client.chat.completions.create(
                model=model, messages=messages, n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p,
                frequency_penalty=sampling.frequency_penalty, presence_penalty=sampling.presence_penalty, **extra)
        usage = reply.usage
        return [ChatReply(text=choice.message.content or "", finish_reason=choice.finish_reason,
                          prompt_tokens=usage.prompt_tokens if usage else None,
                          completion_tokens=usage.completion_tokens if usage and len(reply.choices) == 1 else None)
                for choice in sorted(reply.choices, key=lambda c: c.index)]
