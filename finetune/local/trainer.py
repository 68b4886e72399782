"""The background process of a local fine-tuning job: TRL supervised fine-tuning, a PEFT LoRA adapter by default.

The local backend starts it as `python -m finetune.local.trainer <job dir>` in its own session, so it outlives
the command that started it. It reads job.json, lays every example out with the base model's chat template (the
`weight: 0` assistant messages masked out of the loss, see chat_template), trains with TRL's SFTTrainer on the
GPU when there is one, else the CPU, and reports through the job folder: status.json, events.jsonl (log lines
and per-step metrics), step_metrics.csv, a checkpoint per epoch and, at the end, the adapter. SIGTERM (`jobs
cancel`) stops it after the current step, or at once while it is still loading. Whatever goes wrong ends as
status `failed` with a code and one line.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import shutil
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

from finetune.backend import FinetuneError
from finetune.local.chat_template import Encoded, TemplateError, encode
from finetune.local.jobs import METRIC_COLUMNS, JobDir
from finetune.local.models import (MissingDependencies, ModelUnavailable, load_model, load_tokenizer, pick_device,
                                   require_dependencies)


class NothingToTrain(FinetuneError):
    """No example has a trained token left."""


class Cancelled(BaseException):
    """SIGTERM before training began: there is nothing to keep, so the process ends at once."""


ERROR_CODES = {
    MissingDependencies: "missing_dependencies",
    ModelUnavailable: "base_model_unavailable",
    TemplateError: "invalid_chat_template",
    NothingToTrain: "no_trainable_examples",
}


def read_examples(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def lay_out(tokenizer: Any, examples: list[dict[str, Any]], max_len: int) -> tuple[list[dict[str, list[int]]], dict]:
    """Token ids and loss masks of every example, and what the job log says about them."""
    rows: list[dict[str, list[int]]] = []
    stats = {"examples": len(examples), "tokens": 0, "trained": 0, "truncated": 0, "unweighted": 0, "empty": 0}
    for example in examples:
        enc: Encoded = encode(tokenizer, example)
        ids, mask = enc.input_ids[:max_len], enc.assistant_masks[:max_len]
        stats["truncated"] += len(enc.input_ids) > max_len
        stats["unweighted"] += sum(1 for m in example["messages"] if m.get("role") == "assistant"
                                   and m.get("weight", 1) == 0)
        if not any(mask):
            stats["empty"] += 1
            continue
        stats["tokens"] += len(ids)
        stats["trained"] += sum(mask)
        rows.append({"input_ids": ids, "assistant_masks": mask})
    return rows, stats


def describe(split: str, stats: dict, max_len: int) -> str:
    text = (f"{split}: {stats['examples']} examples laid out with the model's chat template, {stats['tokens']:,} "
            f"tokens of which {stats['trained']:,} are trained")
    if stats["unweighted"]:
        text += f"; {stats['unweighted']} assistant messages with weight 0 left out of the loss"
    if stats["truncated"]:
        text += f"; {stats['truncated']} examples cut at max_seq_length {max_len}"
    if stats["empty"]:
        text += f"; {stats['empty']} examples with nothing left to train skipped"
    return text


class Reporter:
    """A transformers TrainerCallback (built lazily, see `reporter`) writing metrics and events to the job folder."""

    def __init__(self, job: JobDir, stop: threading.Event):
        self.job, self.stop = job, stop
        self.rows: dict[int, dict[str, Any]] = {}
        self.tokens = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        self.job.event(f"Training {state.max_steps} steps: {args.num_train_epochs:g} epochs, batch size "
                       f"{args.per_device_train_batch_size}, learning rate {args.learning_rate:g}")

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **_: Any) -> None:
        if not state.is_world_process_zero:  # with several GPUs, one process reports
            return
        logs = logs or {}
        if "train_runtime" in logs:  # the closing summary, not a step
            return
        step = state.global_step
        row = self.rows.setdefault(step, {"step": step})
        data: dict[str, Any] = {"step": step, "total_steps": state.max_steps}
        if "loss" in logs:
            row["train_loss"], row["train_accuracy"] = logs["loss"], logs.get("mean_token_accuracy")
            data.update(train_loss=logs["loss"], train_mean_token_accuracy=logs.get("mean_token_accuracy"))
        if "eval_loss" in logs:
            row["valid_loss"], row["valid_mean_token_accuracy"] = logs["eval_loss"], logs.get("eval_mean_token_accuracy")
            data.update(valid_loss=logs["eval_loss"], valid_mean_token_accuracy=logs.get("eval_mean_token_accuracy"))
        if "num_tokens" in logs:
            self.tokens = int(logs["num_tokens"])
        data = {k: v for k, v in data.items() if v is not None}
        parts = [f"training loss={data['train_loss']:.4f}" if "train_loss" in data else "",
                 f"validation loss={data['valid_loss']:.4f}" if "valid_loss" in data else ""]
        self.job.event(f"Step {step}/{state.max_steps}: " + ", ".join(p for p in parts if p), type="metrics",
                       data=data)
        self.write_metrics()

    def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        if self.stop.is_set():
            control.should_training_stop = True
            control.should_save = False

    def on_save(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        self.job.event(f"Saved checkpoint at step {state.global_step}")

    def write_metrics(self) -> None:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(METRIC_COLUMNS)
        for step in sorted(self.rows):
            row = self.rows[step]
            writer.writerow(["" if row.get(c) is None else row[c] for c in METRIC_COLUMNS])
        tmp = self.job.metrics_file.with_name(f".{self.job.metrics_file.name}.tmp")
        tmp.write_text(buf.getvalue(), encoding="utf-8")
        os.replace(tmp, self.job.metrics_file)


def reporter(job: JobDir, stop: threading.Event) -> Any:
    from transformers import TrainerCallback

    class _Reporter(Reporter, TrainerCallback):
        pass

    return _Reporter(job, stop)


def sft_config(job: dict[str, Any], device: Any, output_dir: Path, has_eval: bool) -> Any:
    import torch
    from trl import SFTConfig

    hp = job["hyperparameters"]
    cuda = device.type == "cuda"
    names = {f.name for f in dataclasses.fields(SFTConfig)}  # transformers 5 renamed it; the old name warns
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    options = {}
    for ours, trl_name in (("packing", "packing"), ("padding_free", "padding_free"), ("liger_kernel", "use_liger_kernel")):
        if hp.get(ours):
            if trl_name not in names:
                raise FinetuneError(f"finetune.{ours}: this TRL's SFTConfig has no {trl_name}; upgrade trl or set "
                                    f"{ours}: false")
            if ours != "packing" and not cuda:
                raise FinetuneError(f"finetune.{ours} needs a GPU (none was found); set {ours}: false")
            options[trl_name] = True
    return SFTConfig(
        output_dir=str(output_dir),
        num_train_epochs=hp["n_epochs"],
        per_device_train_batch_size=hp["batch_size"],
        per_device_eval_batch_size=hp["batch_size"],
        learning_rate=hp["learning_rate"],
        max_length=hp["max_seq_length"],
        seed=job["seed"],
        logging_steps=1,
        eval_strategy="epoch" if has_eval else "no",
        save_strategy="epoch",
        save_only_model=True,
        save_total_limit=None if hp["method"] == "lora" else 1,
        bf16=cuda and device.dtype == torch.bfloat16,
        fp16=False,
        use_cpu=not cuda,
        **{checkpointing: cuda},  # saves GPU memory; on the CPU it only costs time
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        **options,
    )


def lora_config(hp: dict[str, Any]) -> Any:
    if hp["method"] != "lora":
        return None
    from peft import LoraConfig

    return LoraConfig(r=hp["lora_r"], lora_alpha=hp["lora_alpha"], lora_dropout=hp["lora_dropout"],
                      target_modules=hp["lora_target_modules"], task_type="CAUSAL_LM")


def build_trainer(job: dict[str, Any], job_dir: JobDir, stop: threading.Event, say: Any = lambda _: None) -> Any:
    """The SFTTrainer for a job, its data laid out and masked; also used by tests to inspect the batches."""
    require_dependencies()
    import datasets
    from transformers.utils import logging as hf_logging
    from trl import SFTTrainer

    datasets.disable_progress_bars()
    hf_logging.set_verbosity_error()
    hp = job["hyperparameters"]
    device = pick_device()
    say(f"Loading {job['model']} on {device.label}")
    tokenizer = load_tokenizer(job["model"])
    model = load_model(job["model"], device)
    train, stats = lay_out(tokenizer, read_examples(Path(job["training_path"])), hp["max_seq_length"])
    say(describe("train", stats, hp["max_seq_length"]))
    if not train:
        raise NothingToTrain("no training example has a trained assistant message left (every one has weight 0 "
                             "or was cut away by max_seq_length)")
    valid = None
    if job.get("validation_path"):
        valid, vstats = lay_out(tokenizer, read_examples(Path(job["validation_path"])), hp["max_seq_length"])
        say(describe("validation", vstats, hp["max_seq_length"]))
    args = sft_config(job, device, job_dir.checkpoints, has_eval=bool(valid))
    return SFTTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(train),
                      eval_dataset=datasets.Dataset.from_list(valid) if valid else None, processing_class=tokenizer,
                      peft_config=lora_config(hp), callbacks=[reporter(job_dir, stop)])


def train(job_dir: JobDir, stop: threading.Event, training: threading.Event) -> None:
    job = job_dir.job()
    trainer = build_trainer(job, job_dir, stop, say=job_dir.event)
    training.set()  # from here on SIGTERM stops after the current step
    if stop.is_set():
        return
    trainer.train()
    if stop.is_set() or not trainer.is_world_process_zero():  # data parallel: rank 0 holds the same weights
        return
    done = job_dir.adapter
    tmp = done.with_name(f".{done.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.save_model(str(tmp))
    trainer.processing_class.save_pretrained(str(tmp))
    shutil.rmtree(done, ignore_errors=True)
    os.replace(tmp, done)
    what = "LoRA adapter" if job["hyperparameters"]["method"] == "lora" else "fine-tuned model"
    job_dir.event(f"Saved the {what} to {done}")
    callback = next(c for c in trainer.callback_handler.callbacks if isinstance(c, Reporter))
    job_dir.set_status("succeeded", finished_at=int(time.time()), fine_tuned_model=f"local:{job_dir.id}",
                       trained_tokens=callback.tokens, result_files=[f"{job_dir.id}/step_metrics.csv"])
    job_dir.event("The job has successfully completed")


class QuietJobDir(JobDir):
    """The job folder as the other processes of a several-GPU run see it: rank 0 alone writes status and events."""

    def set_status(self, status: str, **fields: Any) -> dict[str, Any]:
        return {}

    def event(self, message: str, **_: Any) -> None:
        pass


def main(argv: list[str]) -> int:
    warnings.filterwarnings("ignore", category=FutureWarning)  # deprecation notices of the libraries, not the job's
    job_dir = (JobDir if int(os.environ.get("RANK", "0")) == 0 else QuietJobDir)(Path(argv[0]).resolve())
    stop, training = threading.Event(), threading.Event()

    def on_sigterm(*_: Any) -> None:
        stop.set()
        if not training.is_set():
            raise Cancelled()

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        job_dir.set_status("running", started_at=int(time.time()))
        job_dir.event("Training process started")
        train(job_dir, stop, training)
    except Cancelled:
        pass
    except FinetuneError as exc:
        code = next((c for kind, c in ERROR_CODES.items() if isinstance(exc, kind)), "training_error")
        return fail(job_dir, code, str(exc))
    except Exception as exc:  # noqa: BLE001 - the job must end with a status whatever happened
        import traceback

        traceback.print_exc()
        line = next((l.strip() for l in str(exc).splitlines() if l.strip()), "")
        return fail(job_dir, "training_error", f"{type(exc).__name__}: {line} (the traceback is in "
                    f"{job_dir.log_file})")
    if stop.is_set():
        job_dir.set_status("cancelled", finished_at=int(time.time()))
        job_dir.event("Job cancelled: training stopped" if training.is_set() else "Job cancelled before training began")
    return 0


def fail(job_dir: JobDir, code: str, message: str) -> int:
    job_dir.set_status("failed", finished_at=int(time.time()), error={"code": code, "message": message})
    job_dir.event(f"Job failed: {message}", level="error")
    print(f"error: {code}: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
