"""What the `finetune`, `jobs`, `models` and `evaluate` commands do and print.

pipeline.py declares the arguments and turns errors into one line; these handlers print through the `say`
it passes (which masks secrets) and return the exit code. A failed or cancelled job raises JobNotSucceeded
with the API's code, message and a hint for that code.
"""

from __future__ import annotations

import re
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from pydantic import ValidationError

from configs import Config, EvaluationConfig, SamplingConfig
from finetune.backend import (TERMINAL, ApiError, Backend, FinetuneError, Job, JobNotSucceeded, Refused,
                              TransientError)
from finetune.providers import create_backend
from finetune.evaluate import compare_models, describe, sampling_warnings, sweep, sweep_table, table
from finetune.launch import Launched, launch, resolve_dataset
from finetune.results import results_dir, save_results
from finetune.state import Comparison, FinetuneState, JobRecord
from finetune.watch import Progress, watch

Say = Callable[[str], None]

HINTS = {
    "invalid_n_examples": "the training file needs at least 10 examples: crawl more pages, add "
    "dataset.user_templates or lower dataset.test_fraction, then `python pipeline.py build` and finetune again",
    "invalid_training_file": "the API could not read the training file: check it with `python pipeline.py "
    "validate {train}`, rebuild with `python pipeline.py build` and finetune again",
    "invalid_validation_file": "the API could not read the validation file: check it with `python pipeline.py "
    "validate {test}`, rebuild with `python pipeline.py build` and finetune again",
    "invalid_file_format": "the file is not JSONL the API accepts: check it with `python pipeline.py validate "
    "{train}`",
    "model_not_available": "this model can no longer be fine-tuned: choose another `model` in the config",
    "insufficient_quota": "the account is out of quota: raise the limit in the platform's billing settings, then "
    "finetune again",
    "exceeded_quota": "the account is out of quota: raise the limit in the platform's billing settings, then "
    "finetune again",
}
DEFAULT_HINT = "the job's log says more: `python pipeline.py jobs events {job}`"
CHECKPOINT_METRICS = ("train_loss", "train_mean_token_accuracy", "valid_loss", "valid_mean_token_accuracy",
                      "full_valid_loss", "full_valid_mean_token_accuracy")


def hint(code: str | None, job_id: str, version_dir: str | None) -> str:
    folder = Path(version_dir) if version_dir else Path("<dataset version>")
    return HINTS.get(code or "", DEFAULT_HINT).format(train=folder / "train.jsonl", test=folder / "test.jsonl",
                                                      job=job_id)


def _when(ts: int | None) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def _hyper(job: Job) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(job.hyperparameters.items())) or "defaults"


def _backend_for(config: Config, state: FinetuneState, job_id: str) -> tuple[Backend, JobRecord | None]:
    record = state.job(job_id)
    return create_backend(config.finetune, provider=record.provider if record else None,
                          output_dir=config.output_dir), record


# --------------------------------------------------------------------------------------------------
# finetune


def cmd_finetune(config: Config, *, dataset: str, wait: bool, force: bool, config_arg: str, say: Say) -> int:
    launched = launch(config, dataset=dataset, force=force, say=say)
    job = launched.job
    say_launched(launched, say)
    if not wait:
        if not job.terminal:
            say(f"  follow it: python pipeline.py jobs wait {job.id} --config {config_arg}")
        return 0
    backend = create_backend(config.finetune, provider=job.provider, output_dir=config.output_dir)
    return wait_for_job(config, backend, job.id, config_arg=config_arg, say=say)


def say_launched(launched: Launched, say: Say) -> None:
    job = launched.job
    if launched.existing:
        say(f"{launched.dataset.label} already has job {job.id} ({job.status}"
            + (f", {job.fine_tuned_model}" if job.fine_tuned_model else "")
            + ") from the same files and settings; nothing new was started (--force starts another)")
    else:
        for up in launched.uploads:
            if up.reused:
                say(f"  {up.path.name}: already uploaded as {up.file.id}, not sent again")
        say(f"created job {job.id} on {job.provider}: {job.model}, {_hyper(job)}"
            + (f", suffix {job.suffix}" if job.suffix else ""))
    lineage = launched.lineage
    if lineage.parent_model:
        say(f"  continues {lineage.parent_model} ("
            + (f"job {lineage.parent_job_id}" if lineage.parent_job_id else "not made from this output_dir")
            + f"), a fine-tune of {lineage.base_model}")


# --------------------------------------------------------------------------------------------------
# waiting


class _Printer:
    """Prints what changed since the last poll: new log lines, then status with step and losses."""

    def __init__(self, say: Say):
        self.say = say
        self.last: tuple | None = None

    def __call__(self, p: Progress) -> None:
        for event in p.events:
            if event.type != "metrics":
                self.say(f"  {event.level + ': ' if event.level not in ('info', '') else ''}{event.message}")
        parts = []
        if p.step is not None:
            parts.append(f"step {p.step}/{p.total_steps}" if p.total_steps else f"step {p.step}")
        if p.train_loss is not None:
            parts.append(f"train loss {p.train_loss:.4f}")
        if p.valid_loss is not None:
            parts.append(f"valid loss {p.valid_loss:.4f}")
        line = " ".join([f"[{p.job.status}]", " · ".join(parts)]).strip()
        key = (p.job.status, p.step)
        if key != self.last:
            self.say(line)
            self.last = key


def wait_for_job(config: Config, backend: Backend, job_id: str, *, config_arg: str, say: Say) -> int:
    def retry(exc: TransientError, delay: float) -> None:
        say(f"  {exc}; trying again in {delay:g}s")

    with FinetuneState(config.output_dir) as state:
        try:
            job = watch(backend, job_id, poll_interval=config.finetune.poll_interval, on_progress=_Printer(say),
                        on_retry=retry, state=state)
        except KeyboardInterrupt:
            say(f"stopped watching; job {job_id} keeps running. Watch it again with: "
                f"python pipeline.py jobs wait {job_id} --config {config_arg}")
            return 130
        record = state.job(job_id)
    return _finish(config, backend, job, record, config_arg=config_arg, say=say)


def _finish(config: Config, backend: Backend, job: Job, record: JobRecord | None, *, config_arg: str,
            say: Say) -> int:
    if job.status == "succeeded":
        tokens = f" ({job.trained_tokens:,} trained tokens)" if job.trained_tokens else ""
        say(f"succeeded: {job.fine_tuned_model}{tokens}")
        if job.result_files:
            _print_results(config, backend, job, record, say)
        say(f"  compare it with the base model: python pipeline.py evaluate --model {job.fine_tuned_model} "
            f"--config {config_arg}")
        return 0
    if job.status == "failed":
        code = job.error.code if job.error else None
        message = job.error.message if job.error else "no error message"
        raise JobNotSucceeded(f"job {job.id} failed: {code or 'no code'}: {message} — hint: "
                              f"{hint(code, job.id, record.version_dir if record else None)}", job)
    if job.status == "cancelled":
        raise JobNotSucceeded(f"job {job.id} was cancelled; start a new one with `python pipeline.py finetune "
                              f"--config {config_arg}`", job)
    say(f"job {job.id} is {job.status}: continue it with `python pipeline.py jobs resume {job.id} --config "
        f"{config_arg}`, then `python pipeline.py jobs wait {job.id} --config {config_arg}`")
    return 0


def _print_results(config: Config, backend: Backend, job: Job, record: JobRecord | None, say: Say) -> None:
    dest = results_dir(Path(record.version_dir) if record and record.version_dir else None, config.output_dir,
                       job.id)
    results = save_results(backend, job, dest, dataset=f"{record.dataset} {record.version}" if record else None)
    final = " · ".join(f"{k} {v:.4f}" for k, v in results.final.items())
    say(f"  results: {results.csv} and plot {results.plot}")
    if final:
        say(f"  final: {final}")


# --------------------------------------------------------------------------------------------------
# jobs


def cmd_jobs(config: Config, *, verb: str, job_id: str | None, config_arg: str, say: Say) -> int:
    with FinetuneState(config.output_dir) as state:
        if verb == "list":
            return _list_jobs(config, state, say)
        assert job_id is not None
        backend, record = _backend_for(config, state, job_id)
    if verb == "wait":
        return wait_for_job(config, backend, job_id, config_arg=config_arg, say=say)
    with FinetuneState(config.output_dir) as state:
        if verb == "events":
            for e in backend.list_events(job_id):
                say(f"{_when(e.created_at)}  {e.level:<5}  {e.message}")
            return 0
        if verb == "checkpoints":
            checkpoints = backend.list_checkpoints(job_id)
            if not checkpoints:
                say(f"job {job_id} has no checkpoints yet (they are made at the last epochs)")
            for c in checkpoints:
                metrics = " · ".join(f"{k} {c.metrics[k]:.4f}" for k in CHECKPOINT_METRICS if k in c.metrics)
                say(f"step {c.step:>6}  {c.model}" + (f"  {metrics}" if metrics else ""))
            return 0
        if verb == "results":
            job = backend.get_job(job_id)
            state.update_job(job)
            _print_results(config, backend, job, record, say)
            return 0
        action = {"show": backend.get_job, "cancel": backend.cancel_job, "pause": backend.pause_job,
                  "resume": backend.resume_job}[verb]
        job = action(job_id)
        state.update_job(job)
        if verb == "show":
            record = state.job(job_id)
            _show(job, record, say, lineage=_lineage(state, record))
            for line in _comparisons(state, job_id, config_arg):
                say(line)
        else:
            say(f"job {job.id} is now {job.status}")
        return 0


def _list_jobs(config: Config, state: FinetuneState, say: Say) -> int:
    records = state.jobs()
    if not records:
        say("no fine-tuning jobs recorded yet; start one with `python pipeline.py finetune`")
        return 0
    backends: dict[str, Backend] = {}
    for r in records:
        status, model, note = r.status, r.fine_tuned_model, ""
        if status not in TERMINAL:
            backend = backends.get(r.provider) or create_backend(config.finetune, provider=r.provider,
                                                                  output_dir=config.output_dir)
            backends[r.provider] = backend
            try:
                job = backend.get_job(r.job_id)
            except ApiError as exc:
                note = f"  (last seen; now: {exc})"
            else:
                state.update_job(job)
                status, model = job.status, job.fine_tuned_model
        say(f"{r.job_id}  {status:<16} {r.provider:<7} {r.dataset or '-'} {r.version or '-':<6} "
            f"{model or r.model}  {r.created_at[:19].replace('T', ' ')}{note}")
    return 0


def _lineage(state: FinetuneState, record: JobRecord | None) -> list[str]:
    """A continued fine-tune's chain down to its base model."""
    if record is None or not record.parent_model:
        return []
    steps, child = [record.fine_tuned_model or f"job {record.job_id}"], record
    for parent in state.ancestry(record.parent_job_id):
        steps.append(f"{child.parent_model} (job {parent.job_id}, {parent.dataset} {parent.version})")
        child = parent
    if child.parent_model:  # the chain goes on beyond what this output_dir made
        steps.append(f"{child.parent_model} (not made from this output_dir)")
    steps.append(f"{record.base_model} (base)")
    return ["  lineage: " + " → ".join(steps)]


def _comparisons(state: FinetuneState, job_id: str, config_arg: str) -> list[str]:
    """The experiments the job is part of, and the command that scores their models side by side."""
    lines = []
    for c in state.comparisons(job_id):
        lines.append(f"  comparison {c.id} ({c.kind}): " + " · ".join(
            f"{m['fraction']:g} → {m['job_id']} ({m['version']})" for m in c.members))
        lines.append(compare_command(state, c, config_arg))
    return lines


def compare_command(state: FinetuneState, c: Comparison, config_arg: str) -> str:
    """`evaluate` over the comparison's models once all of them exist; until then, the --wait run that waits."""
    members = [state.job(m["job_id"]) for m in c.members]
    models = [m.fine_tuned_model if m else None for m in members]
    if all(models):
        return (f"  compare them: python pipeline.py evaluate {' '.join(f'--model {m}' for m in models)} "
                f"--dataset {Path(c.evaluate_on).name} --config {config_arg}")
    listed = ",".join(f"{m['fraction']:g}" for m in c.members)
    return (f"  once every job succeeded, compare them: python pipeline.py finetune --compare-fractions {listed} "
            f"--wait --config {config_arg} (starts nothing new: it finds these versions and jobs)")


def _show(job: Job, record: JobRecord | None, say: Say, lineage: list[str] = ()) -> None:
    say(f"job {job.id} ({job.provider}): {job.status}")
    if record:
        say(f"  dataset: {record.dataset} {record.version} ({record.version_dir})")
    say(f"  model: {job.model}" + (f" → {job.fine_tuned_model}" if job.fine_tuned_model else ""))
    for line in lineage:
        say(line)
    say(f"  hyperparameters: {_hyper(job)}" + (f"; seed {job.seed}" if job.seed is not None else "")
        + (f"; suffix {job.suffix}" if job.suffix else ""))
    say(f"  files: training {job.training_file}" + (f", validation {job.validation_file}" if job.validation_file
                                                    else "") + (f", results {', '.join(job.result_files)}"
                                                                if job.result_files else ""))
    say(f"  created {_when(job.created_at)} · finished {_when(job.finished_at)}"
        + (f" · {job.trained_tokens:,} trained tokens" if job.trained_tokens else ""))
    if job.error:
        say(f"  error: {job.error.code or 'no code'}: {job.error.message}")
        say(f"  hint: {hint(job.error.code, job.id, record.version_dir if record else None)}")


# --------------------------------------------------------------------------------------------------
# models and evaluate


def cmd_models_delete(config: Config, *, name: str, say: Say) -> int:
    with FinetuneState(config.output_dir) as state:
        record = state.job_for_model(name)
    backend = create_backend(config.finetune, provider=record.provider if record else None,
                             output_dir=config.output_dir)
    if not backend.delete_model(name):
        raise FinetuneError(f"the API did not delete {name}")
    say(f"deleted model {name}")
    return 0


def cmd_models_merge(config: Config, *, name: str, out: Path, say: Say) -> int:
    """A local job's adapter merged into its base model, written to `out`."""
    if not name.startswith("local:"):
        raise FinetuneError(f"{name}: only a local job's model (local:<job id>) can be merged here")
    from finetune.local.backend import LocalBackend
    from finetune.local.merge import merge

    folder = merge(LocalBackend(config.finetune, config.output_dir), name, out)
    say(f"merged {name} into {folder} (load it with transformers' from_pretrained, vLLM or llama.cpp's converter)")
    return 0


def base_of(model: str) -> str | None:
    """`ft:<base>:org:suffix:id` (or a checkpoint of it) → <base>."""
    return model.split(":")[1] if model.startswith("ft:") and model.count(":") >= 2 else None


def final_model_of(model: str) -> str:
    """A checkpoint's final model (`ft:…:ckpt-step-N` and `local:<job>:checkpoint-N` lose the suffix), the name
    its job is recorded under."""
    return re.sub(r":(ckpt-step|checkpoint)-\d+$", "", model)


def _validated(settings: EvaluationConfig, changes: dict[str, str], where: Callable[[str], str]) -> EvaluationConfig:
    try:
        return settings.model_validate({**settings.model_dump(), **changes})
    except ValidationError as exc:
        err = exc.errors()[0]
        raise Refused(f"{where(str(err['loc'][0]))}: {err['msg'].removeprefix('Value error, ')}") from None


def flag(setting: str) -> str:
    return "--" + setting.replace("_", "-")


def evaluation_settings(config: Config, flags: dict[str, str]) -> EvaluationConfig:
    """`finetune.evaluation` with the sampling flags over it (CLI > file > default), checked by the same model."""
    return _validated(config.finetune.evaluation, flags, flag)


def parse_sweep(text: str, settings: EvaluationConfig, flags: dict[str, str]) -> tuple[str, list[float]]:
    """`temperature=0,0.5,1` → ("temperature", [0.0, 0.5, 1.0]), each value checked like its flag."""
    name, sep, listed = text.partition("=")
    param = name.strip().replace("-", "_")
    if not sep or param not in SamplingConfig.model_fields or not listed.strip():
        raise Refused(f"--sweep {text}: expected SETTING=VALUE,VALUE,… with SETTING one of "
                      f"{', '.join(SamplingConfig.model_fields)}; e.g. --sweep temperature=0,0.5,1")
    if param in flags:
        raise Refused(f"--sweep {param} and {flag(param)} both set the same setting: drop {flag(param)}")
    values = [getattr(_validated(settings, {param: v.strip()}, lambda _: f"--sweep {param}={v.strip()}"), param)
              for v in listed.split(",")]
    return param, list(dict.fromkeys(values))


def _job_models(backend: Backend, state: FinetuneState, job_id: str, all_checkpoints: bool) -> dict[str, str]:
    """The job's final model, after its checkpoints from the earliest step with --all-checkpoints."""
    job = backend.get_job(job_id)
    state.update_job(job)
    named: dict[str, str] = {}
    if all_checkpoints:
        named = {f"step {c.step}": c.model for c in sorted(backend.list_checkpoints(job_id), key=lambda c: c.step)}
    if job.fine_tuned_model:
        named["final"] = job.fine_tuned_model
    if not named:
        raise Refused(f"job {job_id} is {job.status} and has no model{' or checkpoint' if all_checkpoints else ''} "
                      f"to evaluate yet; wait for it: python pipeline.py jobs wait {job_id}")
    return named


def _listing(named: dict[str, str]) -> str:
    if len(named) > 2:
        return f"{len(named)} models ({', '.join(named)})"
    return " and ".join(name if label == name else f"{name} ({label})" for label, name in named.items())


def cmd_evaluate(config: Config, **options: Any) -> int:
    """One model against its base, several side by side (--model repeated, or a job's checkpoints), or any of
    these once per value of one sampling setting (--sweep). With `base_url` every model is asked at that
    OpenAI-compatible endpoint (finetune.served) instead of through the fine-tuning backend; local jobs' adapters
    are served by vLLM for the evaluation when it and a CUDA GPU are here."""
    with ExitStack() as servers:
        return _evaluate(config, servers=servers, **options)


def _evaluate(config: Config, *, servers: ExitStack, models: list[str], job: str | None, all_checkpoints: bool,
              base: str | None, dataset: str | None, flags: dict[str, str], sweep_spec: str | None, say: Say,
              question_set: str | None = None, rag: bool = False, k: int | None = None,
              save_dataset: str | None = None, every_question: bool = False, base_url: str | None = None,
              api_key_env: str | None = None) -> int:
    if models and job:
        raise Refused("evaluate takes --model or --job, not both: --model MODEL scores that model (repeat it for "
                      "several), --job ID the job's final model (with --all-checkpoints also its checkpoints)")
    if not models and not job:
        raise Refused("evaluate needs the model to score: --model MODEL (ft:…, a checkpoint ft:…:ckpt-step-N or "
                      "local:<job id>; repeat it for several) or --job ID (`python pipeline.py jobs list` shows "
                      "the jobs)")
    settings = evaluation_settings(config, flags)
    swept = parse_sweep(sweep_spec, settings, flags) if sweep_spec else None
    if all_checkpoints and not job:
        raise Refused("--all-checkpoints scores a job's checkpoints: pass --job ID instead of --model "
                      "(`python pipeline.py jobs list` shows the jobs)")
    with FinetuneState(config.output_dir) as state:
        if job:
            backend, record = _backend_for(config, state, job)
            named = _job_models(backend, state, job, all_checkpoints)
        else:
            record = next(filter(None, (state.job_for_model(final_model_of(m)) for m in models)), None)
            backend = create_backend(config.finetune, provider=record.provider if record else None,
                                     output_dir=config.output_dir)
            named = {m: m for m in models}
    if api_key_env and not base_url:
        raise Refused("--api-key-env names the key of a --base-url endpoint; add --base-url URL")
    if base_url:
        from finetune.served import served_model

        backend = served_model(base_url, api_key_env=api_key_env)
    if len(named) == 1:
        (model,) = named.values()
        local_base = config.finetune.base_model if config.finetune.provider == "local" else None
        base = base or base_of(model) or (record.model if record else None) or local_base or config.model
        named = {"base": base, "tuned": model}
    elif base:
        named = {"base": base, **named}
    if not base_url:
        from finetune.served import vllm_for

        if (served := vllm_for(backend, named, config.output_dir)) is not None:
            say("starting vLLM to serve the local adapters (vllm and a CUDA GPU are here)")
            backend = servers.enter_context(served)
    if dataset is None and record is not None and record.version_dir and Path(record.version_dir).is_dir():
        dataset = record.version_dir
    ds = resolve_dataset(config, dataset or "latest")
    runs = [settings.model_validate({**settings.model_dump(), swept[0]: v}) for v in swept[1]] if swept else [settings]
    for warning in dict.fromkeys(w for run in runs for w in sampling_warnings(run)):
        say(f"warning: {warning}")
    if not (question_set or rag or save_dataset):
        say(f"asking {_listing(named)} the test questions of {ds.label} ("
            + (f"{swept[0]} " + ", ".join(f"{v:g}" for v in swept[1]) if swept else describe(settings))
            + f", {settings.concurrency} at a time)")
    if k is not None and not 1 <= k <= 50:
        raise Refused(f"--k {k}: give 1 to 50 sections")
    if save_dataset:
        return _save_answers(config, backend, ds, named, settings, question_set or "all", save_dataset,
                             every_question, say)
    if every_question:
        raise Refused("--questions all chooses the questions --save-dataset saves answers to; add --save-dataset NAME")
    if question_set or rag:
        if swept:
            raise Refused("--sweep compares sampling settings on the test split; drop --set/--rag to use it")
        return _scorecard(config, backend, ds, named, settings, question_set or "all", rag, k, say)
    if swept:
        sw = sweep(backend, ds, named, settings, *swept)
        say(f"evaluated {len(sw.evaluations[0].rows)} questions per {swept[0]}; mean score (token F1 against the "
            "reference answer, 0–1):")
        for line in sweep_table(sw):
            say(line)
        say(f"  sweep report: {sw.html}")
        say(f"  scores: {sw.jsonl}")
        return 0
    ev = compare_models(backend, ds, named, settings)
    say(f"evaluated {len(ev.rows)} questions; mean score (token F1 against the reference answer, 0–1):")
    for line in table(ev):
        say(line)
    say(f"  report: {ev.html}")
    say(f"  answers: {ev.jsonl}")
    return 0


def _sets(ds: Any, question_set: str, say: Say) -> list[str]:
    from finetune import question_sets

    have = question_sets.available(ds)
    if question_set == "all":
        if "recall" not in have:
            say(f"note: {question_sets.no_recall_set(ds)}")
        return have
    if question_set == "recall" and "recall" not in have:
        raise Refused(question_sets.no_recall_set(ds))
    return [question_set]


def _save_answers(config: Config, backend: Backend, ds: Any, named: dict[str, str], settings: EvaluationConfig,
                  question_set: str, name: str, every_question: bool, say: Say) -> int:
    """`evaluate --save-dataset`: the subject model's answers (the last of --model, not its base) as a version."""
    from finetune.answers_dataset import save_answers

    model = list(named.values())[-1]
    sets = _sets(ds, question_set, say)
    say(f"asking {model} the {', '.join((['train'] if every_question else []) + sets)} questions of {ds.label} "
        f"({describe(settings)}, {settings.concurrency} at a time)")
    saved = save_answers(config, backend, ds, model, sets, name, settings, every_question=every_question)
    say(f"saved the answers of {model} to {', '.join((['train'] if every_question else []) + sets)} of {ds.label} "
        f"as {saved.dataset.label}: train {saved.train}, test {saved.test}"
        + (f", {saved.empty} empty answers left out" if saved.empty else ""))
    say(f"  folder: {saved.dataset.dir}")
    say(f"  fine-tune it elsewhere: python pipeline.py finetune --dataset {saved.dataset.dir}")
    return 0


def _scorecard(config: Config, backend: Backend, ds: Any, named: dict[str, str], settings: EvaluationConfig,
               question_set: str, rag: bool, k: int | None, say: Say) -> int:
    """`evaluate --set/--rag`: the columns side by side over the question sets (finetune.scorecard)."""
    from finetune import scorecard
    from finetune.judge import Judge, judge_backend

    sets = _sets(ds, question_set, say)
    k = k or settings.retrieval.k
    index = open_index(config, ds) if rag else None
    judge = None
    if settings.judge is not None:
        judge = Judge(judge_backend(settings.judge, config.finetune, config.output_dir, backend),
                      settings.judge.model, config.output_dir, max_tokens=settings.judge.max_tokens)
    say(f"asking {_listing(named)} the {', '.join(sets)} questions of {ds.label}"
        + (f", each also with the top {k} sections of its index" if rag else "")
        + (f"; {settings.judge.model} grades the answers" if settings.judge else "")
        + f" ({describe(settings)}, {settings.concurrency} at a time)")
    card = scorecard.run(backend, ds, named, sets, settings, index=index, k=k, judge=judge)
    what = "judge score" if card.headline == "judge" else "chrF"
    ungraded = sum(a.get("grade") is None for r in card.rows for a in r["answers"].values()) if judge else 0
    say(f"evaluated {len(card.rows)} questions ({', '.join(sets)}); headline: {what} (0–1, 95 % interval)"
        + (f", {card.judge_requests} judge requests" if judge else "")
        + (f"; {ungraded} answers ungraded: the judge's reply held no grade (not cached, asked again next run; "
           "the reasons are in results.jsonl)" if ungraded else ""))
    width = max(len(c) for c in card.columns)
    for set_name in sets:
        entry = card.summary["sets"][set_name]
        recall = entry.get("recall_at_k")
        say(f"  {set_name}" + (f" (retrieval recall@{recall['k']} {recall['value']:.3f})" if recall else ""))
        for col in card.columns:
            h = entry["columns"][col]["headline"]
            shown = "–" if h["mean"] is None else f"{h['mean']:.3f} [{h['low']:.3f}, {h['high']:.3f}]"
            say(f"    {col:<{width}}  {shown}")
    say(f"  {card.summary['verdict']}")
    say(f"  report: {card.html}")
    say(f"  answers: {card.jsonl}")
    return 0


def embedder_for(config: Config) -> Any:
    """The embeddings client and cache of `finetune.evaluation.retrieval.embeddings`. Its endpoint defaults to
    finetune.base_url only where that is OpenAI-compatible with OpenAI's key (provider openai, no api_key_env),
    so a key is never sent to another service's endpoint."""
    from finetune.embeddings import Embedder

    ft = config.finetune
    shared = ft.base_url if ft.provider == "openai" and ft.api_key_env is None else None
    return Embedder(ft.evaluation.retrieval.embeddings, config.output_dir, base_url=shared, timeout=ft.timeout,
                    max_retries=ft.max_retries)


def open_index(config: Config, ds: Any) -> Any:
    from finetune import retrieval

    settings = config.finetune.evaluation.retrieval
    return retrieval.open_index(ds, settings, embedder_for(config) if settings.method != "bm25" else None)


def cmd_index(config: Config, *, dataset: str, tokenizer: str | None, method: str | None = None,
              estimate: bool = False, say: Say) -> int:
    """`index`: the version's retrieval index (BM25, embeddings or both), redoing only sections not seen before;
    with `estimate`, only what embedding them would send."""
    from finetune import retrieval

    ds = resolve_dataset(config, dataset)
    settings = config.finetune.evaluation.retrieval
    method = method or settings.method
    if method != "embeddings" and not estimate:
        name = tokenizer or settings.tokenizer
        built = retrieval.build_index(ds, config.output_dir, name)
        say(f"indexed {built.sections} sections of {ds.label} ({name} tokens; {built.tokenized} tokenized, "
            f"{built.reused} unchanged): {built.path}")
    if method == "bm25":
        if estimate:
            say("bm25 sends no request: nothing to estimate (--method embeddings or hybrid)")
        return 0
    embedder = embedder_for(config)
    sections = retrieval.version_sections(ds)
    say(f"embedding {len(sections)} sections of {ds.label} with {settings.embeddings.model}: "
        f"{embedder.estimate([s.text for s in sections]).describe()}")
    if estimate:
        return 0
    from finetune import embeddings

    built = embeddings.build_index(ds, embedder)
    say(f"indexed {built.sections} sections of {ds.label} ({settings.embeddings.model} vectors, {built.dimensions} "
        f"dimensions; {built.tokenized} embedded in {built.requests} request{'s' * (built.requests != 1)}, "
        f"{built.reused} unchanged): {built.path}")
    return 0


def cmd_ask(config: Config, *, question: str, model: str | None, rag: bool, k: int | None, dataset: str,
            say: Say) -> int:
    """`ask`: one question to one model, with the retrieved sections as context when --rag; prints the sources."""
    from finetune import retrieval

    settings = config.finetune.evaluation
    if k is not None and not 1 <= k <= 50:
        raise Refused(f"--k {k}: give 1 to 50 sections")
    name = model or (config.finetune.base_model if config.finetune.provider == "local" else None) or config.model
    with FinetuneState(config.output_dir) as state:
        record = state.job_for_model(final_model_of(name))
    backend = create_backend(config.finetune, provider=record.provider if record else None,
                             output_dir=config.output_dir)
    messages: list[dict[str, Any]] = [{"role": "user", "content": question}]
    sources: list[retrieval.Section] = []
    if rag:
        ds = resolve_dataset(config, dataset)
        sources = open_index(config, ds).search(question, k or settings.retrieval.k)
        messages.insert(0, retrieval.context_message(sources))
    sampling = SamplingConfig.model_validate(settings.model_dump(include=set(SamplingConfig.model_fields)))
    reply = backend.chat(name, messages, sampling=sampling.model_copy(update={"n": 1}))[0]
    say(reply.text)
    for i, s in enumerate(sources, start=1):
        say(f"  [{i}] {s.title}{' · ' + s.section if s.section else ''} — {s.url}")
    if rag and not sources:
        say("  (no section of the index matched the question)")
    return 0
