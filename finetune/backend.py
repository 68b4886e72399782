"""The fine-tuning backend interface: what every provider (OpenAI, Azure OpenAI, the local trainer) offers.

Callers above this layer see only the records and errors defined here, never a provider SDK's objects, so a
backend can be swapped without touching `launch`, `watch`, `results` or `evaluate`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from base.errors import Crawl2TuneError

if TYPE_CHECKING:
    from configs import SamplingConfig

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


# --------------------------------------------------------------------------------------------------
# Errors: typed, one line each, never holding a secret


class FinetuneError(Crawl2TuneError, RuntimeError):
    """Base of every error of the fine-tuning stage; the CLI prints it as one line."""


class MissingCredentials(FinetuneError):
    """No API key in the environment."""


class Refused(FinetuneError):
    """The dataset or the request was refused locally, before anything was sent."""


class ApiError(FinetuneError):
    """The API answered with an error (4xx/5xx); `message` is the API's own message."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 param: str | None = None):
        super().__init__(message)
        self.status, self.code, self.param = status, code, param


class TransientError(ApiError):
    """Rate limit, server error, timeout or lost connection that persisted through the retries."""


class JobNotSucceeded(FinetuneError):
    """A job ended failed or cancelled."""

    def __init__(self, message: str, job: "Job"):
        super().__init__(message)
        self.job = job


# --------------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class RemoteFile:
    id: str
    filename: str
    bytes: int
    purpose: str
    status: str | None = None  # processed / error / …; None when the backend does not say


@dataclass(frozen=True)
class JobError:
    code: str | None
    message: str
    param: str | None = None


@dataclass(frozen=True)
class JobRequest:
    """Everything a job is created from; `hyperparameters` values are 'auto' or numbers."""

    model: str
    training_file: str
    validation_file: str | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    suffix: str | None = None
    seed: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    wandb: dict[str, Any] | None = None


@dataclass(frozen=True)
class Job:
    id: str
    provider: str
    model: str
    status: str  # validating_files, queued, running, paused, succeeded, failed, cancelled, or anything new
    created_at: int | None = None
    finished_at: int | None = None
    fine_tuned_model: str | None = None
    training_file: str | None = None
    validation_file: str | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    trained_tokens: int | None = None
    result_files: tuple[str, ...] = ()
    error: JobError | None = None
    suffix: str | None = None
    seed: int | None = None
    estimated_finish: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


@dataclass(frozen=True)
class JobEvent:
    id: str
    created_at: int
    level: str
    message: str
    type: str = "message"  # "metrics" events carry step, total_steps, train_loss, valid_loss … in `data`
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Checkpoint:
    id: str
    step: int
    model: str
    metrics: dict[str, float]
    created_at: int | None = None


@dataclass(frozen=True)
class ChatReply:
    text: str
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


# --------------------------------------------------------------------------------------------------
# The interface


class Backend(ABC):
    """One fine-tuning provider. Methods raise ApiError / TransientError, never the provider's exceptions.

    `name` is stored with every job so later commands reach the job through the same provider; `scope`
    identifies the account a file id is valid in (an upload is reused only within the same scope).
    """

    name: str
    scope: str

    @abstractmethod
    def upload_file(self, path: Path, *, filename: str) -> RemoteFile:
        """Upload a JSONL training file (purpose fine-tune), choosing the upload mechanism by size."""

    @abstractmethod
    def get_file(self, file_id: str) -> RemoteFile | None:
        """The file, or None when it no longer exists remotely."""

    @abstractmethod
    def create_job(self, request: JobRequest) -> Job: ...

    @abstractmethod
    def get_job(self, job_id: str) -> Job: ...

    @abstractmethod
    def list_events(self, job_id: str, *, since: str | None = None, limit: int | None = None) -> list[JobEvent]:
        """Events oldest first; with `since`, only those newer than the event of that id; with `limit`, only
        the newest `limit` of them."""

    @abstractmethod
    def cancel_job(self, job_id: str) -> Job: ...

    @abstractmethod
    def pause_job(self, job_id: str) -> Job: ...

    @abstractmethod
    def resume_job(self, job_id: str) -> Job: ...

    @abstractmethod
    def list_checkpoints(self, job_id: str) -> list[Checkpoint]:
        """Checkpoints, newest step first."""

    @abstractmethod
    def download_result(self, file_id: str) -> bytes:
        """A result file's content, decoded (the OpenAI API serves the CSV base64-encoded)."""

    @abstractmethod
    def delete_model(self, model: str) -> bool: ...

    @abstractmethod
    def chat(self, model: str, messages: list[dict[str, Any]], *, sampling: SamplingConfig) -> list[ChatReply]:
        """`sampling.n` answers to the messages, each sampled with every setting of `sampling`."""
