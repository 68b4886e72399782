"""The local backend: fine-tuning an open-weights model on this machine, behind the same interface as OpenAI.

A job is a background process (`python -m finetune.local.trainer`, in its own session so it outlives the command
that started it) with its own folder under `<output_dir>/local_jobs/` (layout in jobs.py). "Uploading" copies
a training file there under a name derived from its content; jobs, events, checkpoints and results are read
from the job folders; cancel, pause and resume are SIGTERM, SIGSTOP and SIGCONT to the process's group. A job
whose process is gone without saying how it ended is reported failed, with the end of its log.

Tuned models are named `local:<job id>` (a checkpoint: `local:<job id>:checkpoint-<step>`); `chat`, used by
`evaluate`, also takes a base model's folder or hub id, or any folder holding a PEFT adapter.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finetune.backend import (TERMINAL, ApiError, Backend, ChatReply, Checkpoint, Job, JobError, JobEvent,
                              JobRequest, Refused, RemoteFile)
from finetune.local.inference import LocalModels, ModelRef
from finetune.local.jobs import JobDir, jobs_root, read_json, write_json
from finetune.local.chat_template import encode
from finetune.local.models import check_available, load_tokenizer, require_dependencies
from finetune.local.pins import pins
from finetune.local.trainer import read_examples
from transforms.write import sha256_file

if TYPE_CHECKING:
    from configs import SamplingConfig

ROOT = Path(__file__).resolve().parents[2]  # the project folder, for the trainer's PYTHONPATH
CANCEL_GRACE_SECONDS = 30.0
_FILE_ID = re.compile(r"^file-local-[0-9a-f]{24}$")
_JOB_ID = re.compile(r"^local-\d{8}-\d{6}-[0-9a-f]{6}$")
_SPAWNED: dict[int, subprocess.Popen] = {}  # processes started by this process, polled so they never linger as zombies


def local_job_request(config: Any, ds: Any) -> dict[str, Any]:
    """The job request for `launch` with `provider: local`: the base model and every resolved hyperparameter."""
    ft = config.finetune
    base = Path(ft.base_model).expanduser()
    lora = ft.lora
    hp: dict[str, Any] = {
        "method": "lora" if lora.enabled else "full",
        "n_epochs": ft.n_epochs if ft.n_epochs != "auto" else int(ds.manifest.n_epochs or 3),
        "batch_size": ft.batch_size if ft.batch_size != "auto" else 4,
        "learning_rate": ft.learning_rate if ft.learning_rate != "auto" else (2e-4 if lora.enabled else 2e-5),
        "max_seq_length": ft.max_seq_length,
        **{name: True for name in ("packing", "padding_free", "liger_kernel") if getattr(ft, name)},
    }
    if lora.enabled:
        hp.update(lora_r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                  lora_target_modules=lora.target_modules)
    model = str(base.resolve()) if base.is_dir() else ft.base_model
    tokenizer = load_tokenizer(model)
    return {
        "model": model,
        "pins": pins(model, tokenizer),
        "hyperparameters": hp,
        "suffix": ft.suffix,
        "seed": ft.seed,
        "metadata": {"dataset": ds.name, "dataset_version": ds.version},
        "wandb": None,
    }


def check_examples(config: Any, ds: Any) -> list[str]:
    """Every train example rendered with the base model's own tokenizer and chat template: a template that would
    train nothing is refused before a job starts; the warning when some are longer than max_seq_length there
    (the build counted tokens with a tiktoken encoding, which another tokenizer does not match)."""
    ft = config.finetune
    base = Path(ft.base_model).expanduser()
    tokenizer = load_tokenizer(str(base.resolve()) if base.is_dir() else ft.base_model)
    lengths = [len(encode(tokenizer, example).input_ids) for example in read_examples(ds.train)]
    long = sum(n > ft.max_seq_length for n in lengths)
    if not long:
        return []
    return [f"{long} of {len(lengths)} train examples are longer than finetune.max_seq_length {ft.max_seq_length} in "
            f"{ft.base_model}'s own tokenizer (up to {max(lengths):,} tokens); the trainer cuts them: raise "
            "max_seq_length, or lower dataset.max_tokens_per_example and rebuild"]


def check_ready(config: Any) -> None:
    """Before anything is copied or started: the packages are installed and the base model is on disk."""
    require_dependencies()
    if config.finetune.liger_kernel and importlib.util.find_spec("liger_kernel") is None:
        raise Refused("finetune.liger_kernel needs the liger-kernel package: pip install liger-kernel (it runs on "
                      "a GPU), or set liger_kernel: false")
    check_available(config.finetune.base_model)


def trainer_command(job_dir: Path, gpus: int) -> list[str]:
    """One process on one device; with several GPUs, one per GPU through `accelerate launch` (data parallel)."""
    module = ["-m", "finetune.local.trainer", str(job_dir)]
    if gpus > 1:
        return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(gpus),
                "--num_machines", "1", "--mixed_precision", "bf16", *module]
    return [sys.executable, *module]


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


# --------------------------------------------------------------------------------------------------
# processes


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks) of a process from /proc, None when there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    return fields[0], int(fields[19])


def _alive(info: dict[str, Any]) -> bool:
    pid = info.get("pid")
    if not pid:
        return False
    proc = _SPAWNED.get(pid)
    if proc is not None:
        return proc.poll() is None
    if not Path("/proc").is_dir():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    stat = _proc_stat(pid)
    if stat is None:
        return False
    state, start = stat
    if state in ("Z", "X"):
        try:
            os.waitpid(pid, os.WNOHANG)  # our own child that nobody waited for
        except ChildProcessError:
            pass
        return False
    return info.get("start") in (None, start)


def _signal(info: dict[str, Any], sig: int) -> None:
    try:
        os.killpg(info["pid"], sig)
    except (ProcessLookupError, PermissionError, KeyError):
        pass


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return " | ".join(l.strip() for l in text.strip().splitlines()[-lines:] if l.strip())[:400]


# --------------------------------------------------------------------------------------------------
# the backend


class LocalBackend(Backend):
    name = "local"

    def __init__(self, config: Any, output_dir: Path):
        self.config = config
        self.root = jobs_root(output_dir)
        self.scope = f"local|{self.root.resolve()}"
        self._models: LocalModels | None = None

    def __repr__(self) -> str:
        return f"LocalBackend({self.root})"

    # ---- files

    def _file_path(self, file_id: str) -> Path:
        if not _FILE_ID.match(file_id):
            raise ApiError(f"no local file {file_id!r}", status=404)
        return self.root / "files" / f"{file_id}.jsonl"

    def upload_file(self, path: Path, *, filename: str) -> RemoteFile:
        file_id = f"file-local-{sha256_file(path)[:24]}"
        dest = self._file_path(file_id)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        shutil.copyfile(path, tmp)
        os.replace(tmp, dest)
        write_json(dest.with_suffix(".json"), {"filename": filename, "source": str(path)})
        return RemoteFile(file_id, filename, dest.stat().st_size, "fine-tune", "processed")

    def get_file(self, file_id: str) -> RemoteFile | None:
        try:
            path = self._file_path(file_id)
        except ApiError:
            return None
        if not path.is_file():
            return None
        meta = read_json(path.with_suffix(".json"), {})
        return RemoteFile(file_id, meta.get("filename", path.name), path.stat().st_size, "fine-tune", "processed")

    def download_result(self, file_id: str) -> bytes:
        job_id, _, name = file_id.partition("/")
        if name != "step_metrics.csv":
            raise ApiError(f"no local result file {file_id!r}", status=404)
        path = self._dir(job_id).metrics_file
        if not path.is_file():
            raise ApiError(f"job {job_id} has written no metrics yet ({path})", status=404)
        return path.read_bytes()

    # ---- jobs

    def _dir(self, job_id: str) -> JobDir:
        d = JobDir(self.root / job_id)
        if not _JOB_ID.match(job_id) or not d.job_file.is_file():
            raise ApiError(f"no local fine-tuning job {job_id} under {self.root}", status=404,
                           code="fine_tuning_job_not_found")
        return d

    def create_job(self, request: JobRequest) -> Job:
        require_dependencies()
        job_id = f"local-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
        d = JobDir(self.root / job_id)
        d.path.mkdir(parents=True)
        job = {
            "id": job_id, "created_at": int(time.time()), "model": request.model,
            "training_file": request.training_file, "validation_file": request.validation_file,
            "training_path": str(self._file_path(request.training_file)),
            "validation_path": str(self._file_path(request.validation_file)) if request.validation_file else None,
            "hyperparameters": dict(request.hyperparameters), "suffix": request.suffix,
            "seed": request.seed if request.seed is not None else random.SystemRandom().randrange(2**31),
            "metadata": dict(request.metadata),
        }
        write_json(d.job_file, job)
        d.set_status("queued")
        d.event(f"Created fine-tuning job {job_id}: {request.model} on this machine")
        self._start(d)
        return self.get_job(job_id)

    def _start(self, d: JobDir) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false",
                   PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
        with open(d.log_file, "ab") as log:
            proc = subprocess.Popen(trainer_command(d.path, gpu_count()),
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)
        _SPAWNED[proc.pid] = proc
        stat = _proc_stat(proc.pid)
        write_json(d.process_file, {"pid": proc.pid, "start": stat[1] if stat else None})

    def _status(self, d: JobDir) -> dict[str, Any]:
        """The job's status, with what its process says: gone without a word → failed; stopped → paused."""
        status = d.status()
        if status["status"] in TERMINAL:
            return status
        process = read_json(d.process_file, {})
        if not _alive(process):
            status = d.status()  # it may have written its end just before exiting
            if status["status"] in TERMINAL:
                return status
            tail = _tail(d.log_file)
            message = "the training process ended without reporting a result" + (f"; its log ends: {tail}"
                                                                                  if tail else "")
            d.event(f"Job failed: {message}", level="error")
            return d.set_status("failed", finished_at=int(time.time()),
                                error={"code": "trainer_exited", "message": message})
        if d.paused_marker.exists():
            return {**status, "status": "paused"}
        return status

    def get_job(self, job_id: str) -> Job:
        d = self._dir(job_id)
        job, status = d.job(), self._status(d)
        error = status.get("error")
        return Job(
            id=job_id, provider=self.name, model=job["model"], status=status["status"],
            created_at=job.get("created_at"), finished_at=status.get("finished_at"),
            fine_tuned_model=status.get("fine_tuned_model"), training_file=job.get("training_file"),
            validation_file=job.get("validation_file"), hyperparameters=dict(job.get("hyperparameters") or {}),
            trained_tokens=status.get("trained_tokens"), result_files=tuple(status.get("result_files") or ()),
            error=JobError(error.get("code"), error.get("message", "")) if error else None,
            suffix=job.get("suffix"), seed=job.get("seed"), metadata=dict(job.get("metadata") or {}),
        )

    def list_events(self, job_id: str, *, since: str | None = None, limit: int | None = None) -> list[JobEvent]:
        events = self._dir(job_id).events()
        if since:
            after = int(since.rpartition("-")[2])
            events = [e for e in events if int(e["id"].rpartition("-")[2]) > after]
        if limit is not None:
            events = events[-limit:] if limit else []
        return [JobEvent(id=e["id"], created_at=e["created_at"], level=e.get("level", "info"),
                         message=e.get("message", ""), type=e.get("type", "message"), data=dict(e.get("data") or {}))
                for e in events]

    def _refuse_unless_live(self, d: JobDir, verb: str) -> dict[str, Any]:
        status = self._status(d)
        if status["status"] in TERMINAL:
            raise ApiError(f"job {d.id} is already {status['status']}; there is nothing to {verb}", status=400)
        return status

    def cancel_job(self, job_id: str) -> Job:
        d = self._dir(job_id)
        self._refuse_unless_live(d, "cancel")
        process = read_json(d.process_file, {})
        _signal(process, signal.SIGTERM)  # the trainer stops after the current step
        _signal(process, signal.SIGCONT)  # a paused one must run to hear it
        d.paused_marker.unlink(missing_ok=True)
        deadline = time.monotonic() + CANCEL_GRACE_SECONDS
        while _alive(process) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(process):
            _signal(process, signal.SIGKILL)
            while _alive(process):
                time.sleep(0.05)
        if d.status()["status"] not in TERMINAL:
            d.set_status("cancelled", finished_at=int(time.time()))
            d.event("Job cancelled")
        return self.get_job(job_id)

    def pause_job(self, job_id: str) -> Job:
        d = self._dir(job_id)
        if self._refuse_unless_live(d, "pause")["status"] != "paused":
            _signal(read_json(d.process_file, {}), signal.SIGSTOP)
            d.paused_marker.touch()
            d.event("Job paused: the training process is stopped until `jobs resume`")
        return self.get_job(job_id)

    def resume_job(self, job_id: str) -> Job:
        d = self._dir(job_id)
        if self._refuse_unless_live(d, "resume")["status"] == "paused":
            _signal(read_json(d.process_file, {}), signal.SIGCONT)
            d.paused_marker.unlink(missing_ok=True)
            d.event("Job resumed")
        return self.get_job(job_id)

    def list_checkpoints(self, job_id: str) -> list[Checkpoint]:
        d = self._dir(job_id)
        rows: dict[int, dict[str, float]] = {}
        if d.metrics_file.is_file():
            with open(d.metrics_file, encoding="utf-8") as f:
                for row in csv.DictReader(f):
                    rows[int(row["step"])] = {k: float(v) for k, v in row.items() if k != "step" and v}
        found = []
        for path in d.checkpoints.glob("checkpoint-*"):
            if path.is_dir() and path.name.split("-")[-1].isdigit():
                step = int(path.name.split("-")[-1])
                metrics = {}
                for s in sorted(k for k in rows if k <= step):  # the latest value of each metric up to the step
                    metrics.update(rows[s])
                found.append(Checkpoint(id=f"{job_id}:{path.name}", step=step, model=f"local:{job_id}:{path.name}",
                                        metrics=metrics, created_at=int(path.stat().st_mtime)))
        return sorted(found, key=lambda c: -c.step)

    # ---- models

    def resolve_model(self, model: str) -> ModelRef:
        """`local:<job>[:checkpoint-N]`, a folder holding a PEFT adapter, or a base model's folder or hub id."""
        if model.startswith("local:"):
            job_id, _, checkpoint = model[len("local:"):].partition(":")
            d = self._dir(job_id)
            job = d.job()
            path = d.checkpoints / checkpoint if checkpoint else d.adapter
            if (checkpoint and not re.fullmatch(r"checkpoint-\d+", checkpoint)) or not path.is_dir():
                raise ApiError(f"model {model} does not exist: job {job_id} is {self._status(d)['status']} and has "
                               f"no {path.name} folder", status=404, code="model_not_found")
            if job["hyperparameters"].get("method") == "full":
                return ModelRef(str(path))
            return ModelRef(job["model"], path)
        folder = Path(model).expanduser()
        adapter = read_json(folder / "adapter_config.json") if folder.is_dir() else None
        if adapter:
            return ModelRef(adapter["base_model_name_or_path"], folder.resolve())
        return ModelRef(model)

    def delete_model(self, model: str) -> bool:
        ref = self.resolve_model(model)
        if not model.startswith("local:"):
            raise Refused(f"{model} is not a model trained by a local job (local:<job id>); nothing was deleted")
        target = ref.adapter or Path(ref.base)
        shutil.rmtree(target)
        return True

    def chat(self, model: str, messages: list[dict[str, Any]], *, sampling: SamplingConfig) -> list[ChatReply]:
        ref = self.resolve_model(model)
        if self._models is None:
            self._models = LocalModels()
        return self._models.chat(ref, messages, sampling=sampling)
