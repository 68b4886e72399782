"""`finetune`: check a dataset version locally, upload its files once, and create the job.

Everything that can refuse does so before the first byte leaves the machine: format errors, fewer train
examples than the provider takes (OpenAI and Azure: 10; the local trainer: any), examples over the model's
limit, a retired model or OpenAI's end of new jobs, a missing approval. Uploads are keyed by sha256 in the state, so the same content is uploaded once per account, and
re-running `finetune` on an unchanged dataset finds the job it already started instead of paying twice.
A `model` of the form `ft:<base>:…` continues that fine-tune: it is checked with its base's encoding, limits
and dates, and the job's lineage (parent model, its job when this output_dir made it, base model) is kept in
the state and in `<version>/finetune/<job id>/lineage.json`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from configs import Config
from finetune.backend import ApiError, Backend, Job, JobRequest, Refused, RemoteFile
from finetune.providers import OPEN_WEIGHTS_SERVICES, check_settings, create_backend, hyperparameters
from finetune.state import FinetuneState, JobRecord, Lineage
from finetune.targets import TARGETS, check_file
from configs import model_registry
from transforms.build import datasets_root
from transforms.approval import check_approval
from transforms.tokens import TokenCounter
from transforms.validate import FORMATS, Report, validate_file
from transforms.version import DatasetVersion, resolve, write_json_atomic
from transforms.write import sha256_file

Say = Callable[[str], None]


def resolve_dataset(config: Config, which: str = "latest") -> DatasetVersion:
    """'latest', a version name ('v0003') or a version folder."""
    root = datasets_root(config)
    found = resolve(root, which)
    if found is None or not found.train.is_file():
        where = f"{root}/{which}" if which != "latest" and not Path(which).is_absolute() else which
        raise Refused(f"no dataset version with a train.jsonl at {where}; build one with "
                      "`python pipeline.py build` or pass --dataset DIR|latest")
    return found


@dataclass
class Checked:
    spec: model_registry.ModelSpec
    train: Report
    test: Report | None
    train_path: Path  # the file trained on: train.jsonl, or for DPO the reviewer edits' preference.jsonl
    test_path: Path | None  # the validation file, when there is one
    warnings: list[str] = field(default_factory=list)


def _summary(report: Report, *, skip: tuple[str, ...] = ()) -> str:
    parts = []
    for category, n in sorted(report.errors.items()):
        if category in skip:
            continue
        lines = ", ".join(str(line) for line in report.first_lines.get(category, []) if line)
        parts.append(f"{category} {n}" + (f" (lines {lines})" if lines else ""))
    return "; ".join(parts)


def check_dataset(config: Config, ds: DatasetVersion) -> Checked:
    """Every local refusal; returns the validation reports and warnings when the dataset may be sent."""
    local = config.finetune.provider == "local"
    check_settings(config)
    if local and model_registry.base_of(config.model):
        raise Refused(f"{config.model} is a fine-tune on OpenAI's platform; the local backend trains "
                      "finetune.base_model: set `model` to a base model, or finetune.provider to openai")
    if local:  # the model only decided how the dataset was built; its retirement does not stop local training
        from finetune.local.backend import check_ready

        check_ready(config)
        spec, warnings = config.model_spec, []
    else:
        spec, warnings = model_registry.check(config.model, named=config.finetune.model_specs)
    named = spec in config.finetune.model_specs  # another service's model: OpenAI's end of jobs is not its end
    on = model_registry.today()
    if config.finetune.provider == "openai" and not named and on >= model_registry.NEW_JOBS_END:
        raise Refused(f"OpenAI accepts no new fine-tuning jobs since {model_registry.NEW_JOBS_END.isoformat()}; "
                      "the dataset stays usable with another backend")
    built_for = ds.manifest.model
    if built_for and built_for != spec.name:
        warnings.append(f"{ds.label} was built for {built_for}; checking it against {spec.name}'s limits")
    counter = TokenCounter(spec.encoding)
    epochs = config.finetune.n_epochs if config.finetune.n_epochs != "auto" else None
    fmt = ds.manifest.format if ds.manifest.format in FORMATS else None
    dpo = config.finetune.training_method == "dpo"
    pairs = dpo and ds.preference.is_file()  # a chat build's reviewer edits, as DPO pairs
    path = ds.preference if pairs else ds.train
    train = validate_file(path, spec, counter, n_epochs=epochs, price_per_1m=config.price_per_1m_tokens,
                          fmt="preference" if pairs else fmt)
    if dpo and train.format != "preference":
        raise Refused(f"{ds.train} holds {train.format} examples and {ds.label} has no preference.jsonl; "
                      "training_method dpo needs preference pairs (input, preferred_output, non_preferred_output): "
                      "edit train answers in `python pipeline.py review serve` (each edit becomes a pair) and "
                      "rebuild, or set training_method sft")
    if train.format == "preference" and not dpo:
        raise Refused(f"{ds.train} holds preference (DPO) pairs; `finetune` starts supervised jobs, which need "
                      "chat or prompt/completion examples")
    if local and train.format not in (None, "chat"):
        raise Refused(f"{ds.train} holds {train.format} examples; the local trainer trains chat examples "
                      "(`messages`): set `model` to a chat model and rebuild with `python pipeline.py build`")
    minimum = model_registry.MIN_TRAIN_EXAMPLES[config.finetune.provider]
    few = train.examples < minimum
    problems = _summary(train, skip=("insufficient_examples",))  # the minimum is the provider's, not the file's
    if few or problems:
        raise Refused(
            f"{path} cannot be fine-tuned: "
            + (f"{train.examples} train examples, fewer than the {minimum} the API requires "
               f"({model_registry.FEW_EXAMPLES_REMEDY}); " if few else "")
            + (f"{problems}; " if problems else "")
            + f"nothing was uploaded. Details: `python pipeline.py validate {path} --model {spec.name}`; "
            "fix the config and rebuild with `python pipeline.py build`"
        )
    test = None
    if not pairs and ds.test.is_file() and ds.test.stat().st_size > 0:
        test = validate_file(ds.test, spec, counter, fmt=train.format)
        problems = _summary(test, skip=("insufficient_examples",))
        if problems:
            raise Refused(f"{ds.test} (the validation file) cannot be used: {problems}; nothing was uploaded. "
                          f"Details: `python pipeline.py validate {ds.test} --model {spec.name}`")
    if config.finetune.provider in TARGETS:
        for sent in (path, ds.test) if test else (path,):
            problems = check_file(config.finetune.provider, sent, dpo=dpo)
            if problems:
                raise Refused(f"{sent} is not what {TARGETS[config.finetune.provider].name} accepts: "
                              f"{'; '.join(problems)}; nothing was uploaded")
    if local:
        from finetune.local.backend import check_examples

        warnings += check_examples(config, ds)
    check_approval(config, ds.dir, ds.label)
    return Checked(spec, train, test, path, ds.test if test else None, warnings)


@dataclass(frozen=True)
class Upload:
    path: Path
    file: RemoteFile
    reused: bool


@dataclass
class Launched:
    dataset: DatasetVersion
    checked: Checked
    job: Job
    uploads: list[Upload]
    lineage: Lineage
    existing: JobRecord | None = None  # set when an equal job was already running or done


def job_placeholder(record: JobRecord) -> Job:
    """A Job built from the state alone, for a job the backend no longer knows."""
    return Job(id=record.job_id, provider=record.provider, model=record.model, status=record.status,
               fine_tuned_model=record.fine_tuned_model)


def job_request(config: Config, ds: DatasetVersion, spec: model_registry.ModelSpec) -> dict[str, Any]:
    """The request apart from file ids, as stored with the job and hashed to recognise a repeat.

    The hyperparameters go where today's job API takes them for every model, babbage-002 and davinci-002
    included (`method.supervised.hyperparameters`, see OpenAIBackend.create_job)."""
    ft = config.finetune
    if ft.provider == "local":
        from finetune.local.backend import local_job_request

        return local_job_request(config, ds)
    metadata = {"dataset": ds.name, "dataset_version": ds.version}
    if ds.fraction < 1:
        metadata["dataset_fraction"] = f"{ds.fraction:g}"
    if ft.provider in OPEN_WEIGHTS_SERVICES:
        hyper = hyperparameters(config)
    else:
        hyper = {"n_epochs": ft.n_epochs, "batch_size": ft.batch_size,
                 "learning_rate_multiplier": ft.learning_rate_multiplier}
    return {
        "model": config.model if model_registry.base_of(config.model) else spec.name,  # ft: continues that model
        "hyperparameters": hyper,
        "suffix": ft.suffix,
        "seed": ft.seed,
        "metadata": metadata,
        "wandb": ft.wandb.model_dump(exclude_none=True) if ft.wandb else None,
    }


def lineage_of(config: Config, spec: model_registry.ModelSpec, state: FinetuneState) -> Lineage:
    """Base model, and for an `ft:` model the parent and (when recorded here) the job that made it."""
    if config.finetune.provider == "local":
        return Lineage(config.finetune.base_model)
    if not model_registry.base_of(config.model):
        return Lineage(spec.name)
    parent = state.job_for_model(model_registry.without_checkpoint(config.model))
    return Lineage(spec.name, parent_model=config.model, parent_job_id=parent.job_id if parent else None)


def write_lineage(ds: DatasetVersion, job: Job, lineage: Lineage, state: FinetuneState) -> Path:
    """`<version>/finetune/<job id>/lineage.json` (the folder the job's results go to): beside the data the job
    was trained on, never inside the version's manifest, which is written once at build time and whose sha256
    an approval is bound to."""
    chain = [{"model": r.fine_tuned_model or r.model, "job_id": r.job_id, "dataset": r.dataset,
              "version": r.version} for r in state.ancestry(lineage.parent_job_id)]
    path = ds.dir / "finetune" / job.id / "lineage.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {"job_id": job.id, "provider": job.provider, "dataset": ds.name,
                             "version": ds.version, "fraction": ds.fraction, "model": job.model,
                             "base_model": lineage.base_model, "parent_model": lineage.parent_model,
                             "parent_job_id": lineage.parent_job_id, "ancestors": chain})
    return path


def ensure_uploaded(backend: Backend, state: FinetuneState, path: Path, digest: str, filename: str,
                    say: Say) -> Upload:
    """The file id for this content in this account: reused when it still exists remotely, else uploaded."""
    known = state.find_upload(backend.scope, digest)
    if known:
        remote = backend.get_file(known)
        if remote is not None and remote.status not in ("error", "deleted"):
            return Upload(path, remote, reused=True)
        say(f"  {path.name}: the earlier upload {known} is gone remotely; uploading again")
        state.forget_upload(backend.scope, digest)
    size = path.stat().st_size
    say(f"  uploading {path.name} as {filename} ({size:,} bytes)")
    remote = backend.upload_file(path, filename=filename)
    state.record_upload(backend.scope, digest, remote.id, filename, size)
    return Upload(path, remote, reused=False)


def launch(config: Config, *, dataset: str = "latest", force: bool = False, backend: Backend | None = None,
           say: Say = lambda _: None) -> Launched:
    ds = resolve_dataset(config, dataset)
    checked = check_dataset(config, ds)
    train = checked.train
    local = config.finetune.provider == "local"
    target = config.finetune.base_model if local else checked.spec.name
    if not local and model_registry.base_of(config.model):
        target = f"{config.model} (base {checked.spec.name})"
    trained = "train" if checked.train_path == ds.train else "preference pairs (reviewer edits)"
    say(f"checked {ds.label} for {target}: {trained} "
        f"{train.examples} examples, "
        + (f"test {checked.test.examples} (sent as the validation file)" if checked.test else "no validation file")
        + f"; {sum(train.tokens):,} tokens, at most {max(train.tokens):,} per example (limit {train.limit:,}); "
        + ("trained on this machine, no API cost" if local else
           f"estimated training cost ${train.estimated_cost_usd:.2f} at {train.n_epochs} epochs"))
    for warning in checked.warnings:
        say(f"  warning: {warning}")
    backend = backend or create_backend(config.finetune, output_dir=config.output_dir)
    train_path, test_path = checked.train_path, checked.test_path
    digests = {"train": sha256_file(train_path), "test": sha256_file(test_path) if test_path else None}
    request = job_request(config, ds, checked.spec)
    identity = {"scope": backend.scope, "files": digests, **request}
    identity.pop("metadata")  # the same content in a newer version is still the same job
    request_hash = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    with FinetuneState(config.output_dir) as state:
        lineage = lineage_of(config, checked.spec, state)
        if not force:
            earlier = state.live_job_for(request_hash)
            if earlier is not None:
                try:
                    job = backend.get_job(earlier.job_id)
                except ApiError as exc:
                    if exc.status != 404:
                        raise
                    say(f"  the earlier job {earlier.job_id} no longer exists remotely; starting a new one")
                    job = replace(job_placeholder(earlier), status="cancelled")
                state.update_job(job)
                if job.status not in ("failed", "cancelled"):
                    return Launched(ds, checked, job, [], earlier.lineage, existing=earlier)
        uploads = [ensure_uploaded(backend, state, train_path, digests["train"],
                                   f"{ds.name}-{ds.version}-{train_path.name}", say)]
        if test_path:
            uploads.append(ensure_uploaded(backend, state, test_path, digests["test"],
                                           f"{ds.name}-{ds.version}-{test_path.name}", say))
        job = backend.create_job(JobRequest(
            model=request["model"], training_file=uploads[0].file.id,
            validation_file=uploads[1].file.id if len(uploads) > 1 else None,
            hyperparameters=request["hyperparameters"], suffix=request["suffix"], seed=request["seed"],
            metadata=request["metadata"], wandb=request["wandb"],
        ))
        state.record_job(job, scope=backend.scope, dataset=ds.name, version=ds.version, version_dir=ds.dir,
                         request=request, request_hash=request_hash, lineage=lineage)
        write_lineage(ds, job, lineage, state)
    return Launched(ds, checked, job, uploads, lineage)
