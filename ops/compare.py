"""`finetune --compare-fractions 0.5,1`: the fine-tuning guide's scaling experiment as one command.

Each fraction's dataset version is built (or found unchanged) from the same stored documents, one job is
launched per fraction, and the jobs are recorded as one comparison. Every model is then scored on the test
split of the full version: a fraction version holds the full build's examples of its documents on the same
sides (see transforms.split.FractionSubset), so no model is tested on what it trained on, and all of them
answer the same questions. It orchestrates builds (each under the output lock and in the ledger, like `build`)
and fine-tuning jobs, so it lives in ops/, above both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from configs import Config, ConfigError, with_fraction
from finetune import cli
from finetune.evaluate import compare_models, table
from finetune.launch import Launched, launch, resolve_dataset
from finetune.providers import create_backend
from finetune.state import Comparison, FinetuneState
from ops.run import build_counts, recorded
from transforms.build import build
from transforms.version import DatasetVersion

Say = Callable[[str], None]


@dataclass(frozen=True)
class FractionRun:
    evaluate_on: DatasetVersion  # the full version: its test split scores every model
    launched: dict[float, Launched]
    comparison: Comparison


def build_fraction(config: Config, fraction: float, say: Say) -> Path:
    """The version of `fraction` of the documents: built under the output lock and recorded in the ledger."""
    with recorded(config.output_dir, "build", sources=[s.name for s in config.sources]) as run:
        result = build(with_fraction(config, fraction))
        run.record("build", build_counts(result))
        run.set_version(result.manifest.version)
    m, c = result.manifest, result.manifest.counts
    label = f"{m.dataset} {m.version}" + (f" (fraction {fraction:g})" if fraction < 1 else "")
    say(f"{'unchanged' if result.unchanged else 'built'} {label}: {c['documents']} documents → train "
        f"{c['train']}, test {c['test']} examples")
    for warning in result.warnings:
        say(f"  warning: {warning}")
    return result.version_dir


def launch_fractions(config: Config, fractions: list[float], *, force: bool = False,
                     say: Say = lambda _: None) -> FractionRun:
    """Build every fraction's version (the full one last, so it stays `latest`), then launch one job each."""
    wanted = sorted(set(fractions))
    if len(wanted) < 2:
        raise ConfigError(f"--compare-fractions needs at least two different fractions, got {len(wanted)}; "
                          "e.g. --compare-fractions 0.5,1")
    versions = {f: build_fraction(config, f, say) for f in [f for f in wanted if f < 1] + [1.0]}
    full = resolve_dataset(config, str(versions[1.0]))
    launched = {f: launch(config, dataset=str(versions[f]), force=force, say=say) for f in wanted}
    members = [{"fraction": f, "version": run.dataset.version, "version_dir": str(run.dataset.dir),
                "job_id": run.job.id} for f, run in launched.items()]
    with FinetuneState(config.output_dir) as state:
        comparison = state.record_comparison("fractions", dataset=full.name, evaluate_on=full.dir, members=members)
    return FractionRun(full, launched, comparison)


def cmd_compare_fractions(config: Config, *, fractions: list[float], wait: bool, force: bool, config_arg: str,
                          say: Say) -> int:
    """`finetune --compare-fractions`: one job per fraction of the documents, scored side by side on the full
    version's test split."""
    run = launch_fractions(config, fractions, force=force, say=say)
    for launched in run.launched.values():
        cli.say_launched(launched, say)
    say(f"comparison {run.comparison.id}: " + " · ".join(
        f"fraction {f:g} → job {launched.job.id} ({launched.dataset.version})" for f, launched in run.launched.items())
        + f"; scored on the test split of {run.evaluate_on.label}")
    if not wait:
        with FinetuneState(config.output_dir) as state:
            say(cli.compare_command(state, run.comparison, config_arg))
        return 0
    models = {}
    for fraction, launched in run.launched.items():
        job = launched.job
        backend = create_backend(config.finetune, provider=job.provider, output_dir=config.output_dir)
        code = cli.wait_for_job(config, backend, job.id, config_arg=config_arg, say=say)
        if code:
            return code
        with FinetuneState(config.output_dir) as state:
            record = state.job(job.id)
        models[f"fraction {fraction:g}"] = record.fine_tuned_model if record else job.fine_tuned_model
    say(f"asking {len(models)} models the test questions of {run.evaluate_on.label}")
    ev = compare_models(backend, run.evaluate_on, models, config.finetune.evaluation)
    say(f"evaluated {len(ev.rows)} questions; mean score (token F1 against the reference answer):")
    for line in table(ev):
        say(line)
    say(f"  report: {ev.html}")
    return 0
