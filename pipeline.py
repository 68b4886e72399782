"""crawl2tune command line: crawl documentation sites, build reviewed fine-tuning datasets, validate files.

This is the one place where errors become a one-line message and exit code 1; everything below raises
typed exceptions. Secrets are masked in everything printed here.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NoReturn

from base.errors import Crawl2TuneError
from base import logs

if TYPE_CHECKING:  # each command imports what it uses in its handler: `--help` loads no config model or crawler
    from configs import Config
    from crawlers.crawl import SourceReport
    from transforms.build import BuildResult
    from configs.model_registry import ModelSpec
    from transforms.validate import Report

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "example.yaml"  # configs.DEFAULT_CONFIG (a test checks)
EXPORT_FORMATS = ("trl", "axolotl", "llama-factory", "hf-dataset")  # transforms.export.FORMATS (a test checks)
VALIDATE_FORMATS = ("chat", "preference", "prompt_completion")  # transforms.validate.FORMATS (a test checks)


def say(text: str = "") -> None:
    logs.say(text)  # a plain line, or a JSON log line with --log-format json; redacted


def _relative(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


CRAWL_URLS_SHOWN = 10
NEEDS_BROWSER = "apt-get install chromium (or set crawl.browser to its path)"
STOP_REASONS = {"closespider_pagecount": "max_pages reached"}


def print_crawl(reports: list[SourceReport]) -> None:
    for r in reports:
        counts = r.counts
        fetched = sum(r.pages_by_status.values())
        statuses = ", ".join(f"{status}: {n}" for status, n in r.pages_by_status.items())
        say(
            f"crawled {r.name}: {fetched} responses ({statuses or 'none'}), {r.bytes_downloaded:,} bytes "
            f"in {r.elapsed_seconds:.1f} s, new {counts.get('new', 0)} · changed {counts.get('changed', 0)} · "
            f"unchanged {counts.get('unchanged', 0)} · removed {counts.get('removed', 0)}"
            + (f" (stopped: {STOP_REASONS.get(r.finish_reason, r.finish_reason)})" if not r.complete else "")
            + (" (resumed)" if r.resumed else "")
            + (f"; this worker fetched {r.fetched} pages, its state took in {r.ingested} of every worker's"
               if r.fetched is not None else "")
        )
        if r.attachments:
            say("  files read: " + ", ".join(f"{kind} {n}" for kind, n in r.attachments.items()))
        if r.dropped:
            say("  not used: " + ", ".join(f"{reason} {n}" for reason, n in r.dropped.items()))
        if r.dropped.get("needs_browser"):
            say(f"  needs_browser: pages built by scripts need Chromium to render: {NEEDS_BROWSER}")
        for kind in ("new", "changed", "removed"):
            urls = r.changes.get(kind) or []
            if urls:
                more = f" … and {len(urls) - CRAWL_URLS_SHOWN} more" if len(urls) > CRAWL_URLS_SHOWN else ""
                say(f"  {kind}: " + " ".join(urls[:CRAWL_URLS_SHOWN]) + more)
        if r.interrupted:
            say("  interrupted: what was fetched is kept; run the same command again to continue "
                "(the dataset was not rebuilt)")
        elif not r.complete:
            say("  incomplete crawl: pages it did not reach stay in the dataset until a complete crawl")


def print_build(result: BuildResult) -> None:
    from transforms.version import DatasetVersion

    version = DatasetVersion(dir=result.version_dir, manifest=result.manifest)
    m, fraction = version.manifest, version.fraction
    c, t = m.counts, m.tokens
    state = ("unchanged, latest stays" if fraction == 1 else "unchanged") if result.unchanged else "built"
    say(f"{state} {version.label}: {c['documents']} documents → {c['examples']} examples "
        f"(train {c['train']}, test {c['test']})")
    say(f"  tokens {t['total']:,} (max {t['max_example']:,} per example, limit {t['limit']:,}); "
        f"{m.n_epochs} epochs; estimated training cost ${m.estimated_cost_usd:.2f} for {m.model}")
    if c["dropped"]:
        say("  dropped: " + ", ".join(f"{reason} {n}" for reason, n in c["dropped"].items()))
    if fraction < 1:
        say(f"  fraction {fraction:g}: {m.fraction['documents_kept']} documents kept; "
            f"{m.fraction['examples_outside']} examples of the other documents left out (not in dropped.jsonl)")
    if m.pii.get("found"):
        say(f"  personal data {m.pii['mode']}: " + ", ".join(f"{kind} {n}" for kind, n in m.pii["found"].items()))
    if m.review.get("stored"):
        say(f"  review decisions applied: {m.review['excluded']} excluded, {m.review['edited']} edited "
            f"({m.review['unmatched']} matched no example)")
    for warning in result.warnings:
        say(f"  warning: {warning}")
    for warning in result.quality.get("warnings", []):
        say(f"  data quality: {warning}")
    say(f"  files: {_relative(result.version_dir)}/ (train.jsonl, test.jsonl, manifest.json, …)")
    if fraction < 1:
        say(f"  a fraction version leaves `latest` as it is: fine-tune it with `python pipeline.py finetune "
            f"--dataset {version.version}`, or compare fractions with `python pipeline.py finetune --compare-fractions "
            f"{fraction:g},1`")
    if (result.version_dir / "report.html").exists():
        say(f"  review: {_relative(result.version_dir / 'report.html')}, then fill in "
            f"{_relative(result.version_dir / 'review.csv')} and run `python pipeline.py review apply FILE`")


def print_report(path: Path, report: Report, spec: ModelSpec) -> None:
    from transforms.validate import CATEGORIES

    say(f"{path}: {report.examples} examples ({report.format or 'chat'} format), "
        f"{sum(report.errors.values())} errors ({spec.name}, limit {report.limit:,} tokens per example)")
    for category, n in sorted(report.errors.items()):
        lines = ", ".join(str(line) for line in report.first_lines[category] if line)
        where = f"  lines {lines}" if lines else ""
        say(f"  {category:<34} {n:>6}{where}  — {CATEGORIES[category]}")
    s = report.token_stats()
    say(f"tokens: total {s['total']:,} · min {s['min']:,} · max {s['max']:,} · mean {s['mean']:,} · "
        f"median {s['median']:,}")
    say(f"epochs {report.n_epochs} · billed tokens {report.billed_tokens:,} · "
        f"estimated cost ${report.estimated_cost_usd:.2f}")


def _config(args: argparse.Namespace) -> Config:
    from configs import load_config

    return load_config(args.config)


def _source_names(config: Config) -> list[str]:
    return [s.name for s in config.sources]


def _crawl_stage(run: Any, config: Config, worker: bool = False) -> bool:
    """Crawl and record the counts; False when the crawl was interrupted (the run ends `interrupted`)."""
    from crawlers.crawl import crawl
    from ops.run import crawl_counts

    with logs.stage("crawl"):
        reports = crawl(config, worker=worker)
        print_crawl(reports)
    run.record("crawl", crawl_counts(reports))
    if any(r.interrupted for r in reports):
        run.status = "interrupted"
        return False
    refused = [r.name for r in reports if r.finish_reason == "auth_failed"]
    if refused:
        from crawlers.auth import AuthFailed

        raise AuthFailed(f"auth_failed: the site refused the login of {', '.join(refused)} (wrong credentials or "
                         "an expired session); nothing was retired, the previous pages stay live; check the "
                         "environment variables its auth names and run the command again")
    return True


def _build_stage(run: Any, config: Config) -> BuildResult:
    from ops.run import build_counts
    from transforms.build import build

    with logs.stage("build"):
        result = build(config)
        print_build(result)
    run.record("build", build_counts(result))
    run.set_version(result.manifest.version)
    return result


def print_generate(report: Any) -> None:
    p = report.progress
    if report.estimate:
        e = report.estimate
        exact = "exact" if e["exact"] else "estimated: the model's encoding is unknown"
        say(f"estimate: {e['requests']} requests for {report.pending} of {report.sections} sections "
            f"({report.cached} cached); input tokens {e['input_tokens']:,} ({exact}); expected output tokens "
            f"{e['expected_output_tokens']:,}; cost ${e['cost_usd']:.4f}; nothing was sent")
        return
    say(f"generated {p.done} of {report.pending} sections ({report.cached} of {report.sections} cached): "
        f"{report.pairs} pairs, {report.unparsable} generation_unparsable; {p.requests} requests, tokens in "
        f"{p.input_tokens:,} out {p.output_tokens:,}, cost ${p.cost_usd:.4f}"
        + (f"; retired {report.retired} stale sections" if report.retired else ""))
    if report.stopped:
        say(f"  stopped: {report.stopped}; raise the cap (--max-cost) and run again to continue")


def _progress_printer() -> Callable[[Any], None]:
    """A live line on a terminal (sections done/total, in flight, tokens, cost), else a line every 10 %."""
    live = sys.stderr.isatty()
    shown = {"step": -1}

    def show(p: Any) -> None:
        line = (f"generate: {p.done}/{p.total} sections, {p.in_flight} in flight, tokens {p.input_tokens:,} in "
                f"{p.output_tokens:,} out, ${p.cost_usd:.4f}")
        if live:
            sys.stderr.write("\r" + line + ("\n" if p.done == p.total and not p.in_flight else ""))
            sys.stderr.flush()
        elif (step := p.done * 10 // max(p.total, 1)) != shown["step"]:
            shown["step"] = step
            say(line)

    return show


def _generate_stage(run: Any, config: Config, *, estimate: bool = False, max_cost: float | None = None,
                    limit: int | None = None) -> Any:
    from transforms.generate import generate

    with logs.stage("generate"):
        report = generate(config, estimate=estimate, max_cost=max_cost, limit=limit, on_progress=_progress_printer())
        print_generate(report)
    if run is not None:
        run.record("generate", {"sections": report.sections, "cached": report.cached, "done": report.progress.done,
                                "requests": report.progress.requests, "cost_usd": report.progress.cost_usd})
    return report


def cmd_generate(args: argparse.Namespace) -> int:
    from configs import ConfigError

    config = _config(args)
    max_cost = None
    if args.max_cost is not None:
        try:
            max_cost = float(args.max_cost)
        except ValueError:
            max_cost = -1.0
        if not max_cost > 0:
            raise ConfigError(f"--max-cost {args.max_cost}: give the most USD to spend, a number > 0, e.g. 2.5")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit {args.limit}: give the most sections to generate, 1 or more")
    if args.estimate:
        _generate_stage(None, config, estimate=True, limit=args.limit)
        return 0
    from ops.run import recorded

    with recorded(config.output_dir, "generate", sources=_source_names(config)) as run:
        _generate_stage(run, config, max_cost=max_cost, limit=args.limit)
    return 0


def cmd_crawl(args: argparse.Namespace) -> int:
    from configs import ConfigError

    config = _config(args)
    if args.worker and not config.crawl.redis_url:
        raise ConfigError(f"{args.config}: crawl --worker needs crawl.redis_url (e.g. redis://127.0.0.1:6379/0) so "
                          "workers share one frontier; see README, Operations")
    from ops.run import recorded

    command = "worker" if args.worker else "crawl"  # workers share the output directory with each other
    with recorded(config.output_dir, command, sources=_source_names(config), shared=args.worker) as run:
        return 0 if _crawl_stage(run, config, worker=args.worker) else 130


def cmd_build(args: argparse.Namespace) -> int:
    from configs import parse_fraction, with_fraction

    config = _config(args)
    if args.fraction is not None:
        config = with_fraction(config, parse_fraction(args.fraction))
    from ops.run import recorded

    with recorded(config.output_dir, "build", sources=_source_names(config)) as run:
        _build_stage(run, config)
    return 0


def run_pipeline(config: Config, *, config_arg: str, sources: list[str] | None = None, trigger: str = "manual",
                 schedule: str | None = None, finetune: bool = False, wait: bool = False) -> int:
    """`run`, recorded in the ledger: crawl (every source, or only `sources`), then build from every source's
    documents, then (with `finetune`) launch fine-tuning. Used by `run` and by the scheduler."""
    from ops.run import recorded

    crawled = config if sources is None else config.model_copy(
        update={"sources": [s for s in config.sources if s.name in sources]})
    with recorded(config.output_dir, "run", trigger=trigger, schedule=schedule,
                  sources=_source_names(crawled)) as run:
        if not _crawl_stage(run, crawled):
            return 130  # the previous dataset stays as it is
        if config.dataset.generate.provider != "none":
            _generate_stage(run, config)
        result = _build_stage(run, config)
        if finetune:
            from finetune import cli

            with logs.stage("finetune"):
                code = cli.cmd_finetune(config, dataset=str(result.version_dir), wait=wait, force=False,
                                        config_arg=config_arg, say=say)
            _note_job(run, config, result)
            if code:
                run.status, run.error = "failed", f"fine-tuning ended with exit code {code}"
            return code
        say(f"upload skipped: fine-tuning is launched by `python pipeline.py finetune --config {config_arg}`")
        return 0


def _note_job(run: Any, config: Config, result: BuildResult) -> None:
    """The ledger's job id: the newest job of the version this run built."""
    from finetune.state import FinetuneState

    with FinetuneState(config.output_dir) as state:
        mine = Path(result.version_dir).resolve()
        jobs = [j for j in state.jobs() if j.version_dir and Path(j.version_dir).resolve() == mine]
    if jobs:
        run.set_job(max(jobs, key=lambda j: j.created_at).job_id)


def cmd_run(args: argparse.Namespace) -> int:
    return run_pipeline(_config(args), config_arg=args.config, finetune=args.finetune, wait=args.wait)


def cmd_runs(args: argparse.Namespace) -> int:
    from configs import ConfigError
    from ops.ledger import Ledger

    config = _config(args)
    with Ledger(config.output_dir) as ledger:
        if args.verb == "show":
            if args.id is None:
                raise ConfigError("which run? pass its id: python pipeline.py runs show ID (ids: python pipeline.py runs)")
            record = ledger.get(args.id)
            if record is None:
                raise ConfigError(f"no run {args.id} in {config.output_dir}; list them: python pipeline.py runs "
                                  f"--config {args.config}")
            print_run(record)
            return 0
        if args.verb is not None or args.id is not None:
            raise ConfigError("use `python pipeline.py runs [--limit N]` or `python pipeline.py runs show ID`")
        records = ledger.list(args.limit)
    if not records:
        say(f"no runs recorded in {config.output_dir} yet")
    for r in records:
        duration = _duration(r.started_at, r.finished_at)
        say(f"{r.id:>5}  {r.status:<11} {r.trigger:<8} {r.command:<6} {r.started_at[:19].replace('T', ' ')}  "
            f"{duration:>8}  {r.dataset_version or '-':<6} {r.job_id or '-'}"
            + (f"  {r.error.splitlines()[0][:100]}" if r.error else ""))
    return 0


def _duration(start: str, end: str | None) -> str:
    from datetime import datetime

    if not end:
        return "-"
    seconds = (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def print_run(r: Any) -> None:
    say(f"run {r.id}: {r.status} ({r.command}, {r.trigger}" + (f" on {r.schedule}" if r.schedule else "") + ")")
    say(f"  started {r.started_at}, finished {r.finished_at or '-'} ({_duration(r.started_at, r.finished_at)}), "
        f"pid {r.pid} on {r.host}")
    say(f"  sources: {', '.join(r.sources) or '-'}")
    say(f"  dataset version: {r.dataset_version or '-'}; fine-tuning job: {r.job_id or '-'}")
    if r.error:
        say(f"  error: {r.error}")
    for source, c in (r.counts.get("crawl") or {}).items():
        say(f"  crawl {source}: {c.get('responses', 0)} responses, new {c.get('new', 0)} · changed "
            f"{c.get('changed', 0)} · unchanged {c.get('unchanged', 0)} · removed {c.get('removed', 0)} "
            f"({c.get('finish_reason')})"
            + (f"; this worker fetched {c['fetched']} pages, its state took in {c['ingested']} of every worker's"
               if "fetched" in c else ""))
    b = r.counts.get("build")
    if b:
        say(f"  build {b['version']}{' (unchanged)' if b.get('unchanged') else ''}: {b.get('documents')} documents → "
            f"{b.get('examples')} examples (train {b.get('train')}, test {b.get('test')}), {b.get('tokens'):,} tokens")
        for name, stage in (b.get("stages") or {}).items():
            say(f"    {name}: {json.dumps(stage, ensure_ascii=False, sort_keys=True)}")


def cmd_schedule(args: argparse.Namespace) -> int:
    from ops.schedule import Scheduler, ScheduleError, plan

    config = _config(args)
    jobs = plan(config)
    if not jobs:
        raise ScheduleError(f"{args.config} schedules nothing; add `schedule: \"0 3 * * *\"` at the top level (every "
                            "source) or to a source, then run this command again")

    def runner(job: Any) -> int:
        return run_pipeline(config, config_arg=args.config, sources=list(job.sources), trigger="schedule",
                            schedule=job.expression)

    scheduler = Scheduler(jobs, runner, config.output_dir)
    return scheduler.run_due() if args.once else scheduler.serve()


def cmd_finetune(args: argparse.Namespace) -> int:
    from configs import ConfigError, load_config, parse_fractions
    from finetune import cli

    config = load_config(args.config, model=args.model)
    if args.compare_fractions is not None:
        if args.dataset != "latest":
            raise ConfigError("--compare-fractions builds the versions it compares; leave out --dataset")
        from ops.compare import cmd_compare_fractions

        return cmd_compare_fractions(config, fractions=parse_fractions(args.compare_fractions), wait=args.wait,
                                     force=args.force, config_arg=args.config, say=say)
    return cli.cmd_finetune(config, dataset=args.dataset, wait=args.wait, force=args.force,
                            config_arg=args.config, say=say)


def cmd_jobs(args: argparse.Namespace) -> int:
    from finetune import cli

    return cli.cmd_jobs(_config(args), verb=args.verb, job_id=getattr(args, "id", None), config_arg=args.config,
                        say=say)


def cmd_models(args: argparse.Namespace) -> int:
    from finetune import cli

    if args.verb == "merge":
        return cli.cmd_models_merge(_config(args), name=args.name, out=Path(args.out), say=say)
    return cli.cmd_models_delete(_config(args), name=args.name, say=say)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from configs import SamplingConfig
    from finetune import cli

    flags = {k: getattr(args, k) for k in SamplingConfig.model_fields if getattr(args, k) is not None}
    return cli.cmd_evaluate(_config(args), models=args.model or [], job=args.job, all_checkpoints=args.all_checkpoints,
                            base=args.base, dataset=args.dataset, flags=flags, sweep_spec=args.sweep, say=say,
                            question_set=args.set, rag=args.rag, k=args.k, save_dataset=args.save_dataset,
                            every_question=args.questions == "all", base_url=args.base_url,
                            api_key_env=args.api_key_env)


def cmd_index(args: argparse.Namespace) -> int:
    from finetune import cli

    return cli.cmd_index(_config(args), dataset=args.dataset, tokenizer=args.tokenizer, method=args.method,
                         estimate=args.estimate, say=say)


def cmd_ask(args: argparse.Namespace) -> int:
    from finetune import cli

    return cli.cmd_ask(_config(args), question=args.question, model=args.model, rag=args.rag, k=args.k,
                       dataset=args.dataset, say=say)


def cmd_export(args: argparse.Namespace) -> int:
    from transforms.export import export

    config = _config(args)
    done = export(config, args.format, dataset=args.dataset, out=Path(args.out) if args.out else None)
    say(f"exported {done.source.dataset.name} {done.source.dataset.version} for {args.format}: train {done.count('train')}, test "
        f"{done.count('test')} examples → {_relative(done.dir)}/ ({', '.join(done.files)})")
    say(f"  trained: {done.trained}; round trip checked: read back as {args.format} reads it, every conversation "
        "and its trained turns match the version")
    for line in done.usage:
        say(f"  {line}")
    return 0


def cmd_review(args: argparse.Namespace) -> int:
    from base.state import state_path
    from transforms.approval import ReviewError, resolve
    from transforms.decisions import apply_review

    config = _config(args)
    known = None
    try:
        latest = resolve(config, "latest").dir
        with open(latest / "metadata.jsonl", "rb") as f:
            known = [json.loads(line)["example_id"] for line in f]
    except ReviewError:
        latest = None
    applied = apply_review(state_path(config.output_dir), config.dataset.name, Path(args.file), known)
    say(f"stored review decisions for {config.dataset.name}: {applied.excluded} excluded, {applied.edited} edited, "
        f"{applied.cleared} cleared")
    if applied.unknown_ids:
        say(f"  warning: {len(applied.unknown_ids)} example_ids are not in {latest.name if latest else 'any version'} "
            f"(stored anyway), e.g. {', '.join(applied.unknown_ids[:3])}")
    say(f"  the next build applies them: python pipeline.py build --config {args.config}")
    return 0


def cmd_review_serve(args: argparse.Namespace) -> int:
    from base.state import state_path
    from transforms.review_app.app import serve

    config = _config(args)
    serve(config, state_path(config.output_dir), args.host, args.port, announce=logs.say)
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    from base.state import state_path
    from transforms.approval import approve, resolve

    config = _config(args)
    version = resolve(config, args.version)
    record = approve(state_path(config.output_dir), version.dir)
    c = version.manifest.counts
    say(f"approved {record['dataset']} {record['version']}: {c['train']} train / {c['test']} test examples, "
        f"manifest sha256 {record['manifest_sha256'][:12]}… (by {record['approved_by'] or 'unknown'})")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from configs import ConfigError, load_config, model_registry
    from transforms.tokens import TokenCounter
    from transforms.validate import validate_file

    path = Path(args.file)
    if not path.is_file():
        raise ConfigError(f"{path} is not a file; pass the JSONL file to check")
    config = load_config(args.config) if Path(args.config).exists() else None
    model = args.model or (config.model if config else None)
    spec, warnings = model_registry.check(model or model_registry.DEFAULT_MODEL,
                                          named=config.finetune.model_specs if config else ())
    report = validate_file(path, spec, TokenCounter(spec.encoding), fmt=args.format)
    if args.json:
        say(json.dumps({"file": str(path), "model": spec.name, **report.as_dict(), "warnings": warnings},
                       ensure_ascii=False))
    else:
        print_report(path, report, spec)
        for warning in warnings:
            say(f"warning: {warning}")
    return 0 if report.ok else 1


class _OneLine(argparse.ArgumentParser):
    """A parser whose usage error is one line and exit code 1, like every other bad input."""

    def error(self, message: str) -> NoReturn:
        self.exit(1, f"error: {self.prog}: {message}; see {self.prog} --help\n")


class _Parser(_OneLine):
    """A command's parser whose `extend` adds options that need a heavy import (evaluate's sampling flags come
    from the config model) only when that command is parsed or its help shown, so `--help` stays fast."""

    extend: Callable[[argparse.ArgumentParser], None] | None = None

    def _extended(self) -> None:
        extend, self.extend = self.extend, None
        if extend:
            extend(self)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        self._extended()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self._extended()
        return super().format_help()


def _sampling_flags(e: argparse.ArgumentParser) -> None:
    from configs import SamplingConfig

    for name, field in SamplingConfig.model_fields.items():
        e.add_argument("--" + name.replace("_", "-"), dest=name, metavar="VALUE",
                       help=f"{field.description} (default: finetune.evaluation.{name})".replace("%", "%%"))


def parser() -> argparse.ArgumentParser:
    top = _OneLine(prog="pipeline.py", description=__doc__.splitlines()[0])
    log_help = "text: human-readable lines (default); json: one JSON object per line, for unattended runs"
    top.add_argument("--log-format", choices=logs.FORMATS, default="text", help=log_help)
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    def command(name: str, handler: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--config", default=str(_relative(DEFAULT_CONFIG)), help="YAML config (default: %(default)s)")
        p.add_argument("--log-format", choices=logs.FORMATS, default=argparse.SUPPRESS, help=log_help)
        p.set_defaults(handler=handler)
        return p

    r = command("run", cmd_run, "crawl every source, (with dataset.generate.provider) generate pairs, then build a "
                "new dataset version (and fine-tune it)")
    r.add_argument("--finetune", action="store_true", help="then launch fine-tuning on the new version")
    r.add_argument("--wait", action="store_true", help="with --finetune: watch the job until it ends")
    cr = command("crawl", cmd_crawl, "crawl every source into the state under output_dir")
    cr.add_argument("--worker", action="store_true",
                    help="crawl together with every other worker through the Redis at crawl.redis_url: shared "
                    "frontier and URL dedup, each page fetched once overall")
    g = command("generate", cmd_generate, "generate grounded question-answer pairs for every section with "
                "dataset.generate's model, cached in the state")
    g.add_argument("--estimate", action="store_true",
                   help="print the requests, input tokens, expected output tokens and cost; send nothing")
    g.add_argument("--max-cost", metavar="USD",
                   help="stop before a request that could take the spend past this (default: "
                   "dataset.generate.max_cost_usd)")
    g.add_argument("--limit", type=int, metavar="N", help="generate at most N sections in this run")
    b = command("build", cmd_build, "turn the stored documents into a new dataset version")
    b.add_argument("--fraction", metavar="F",
                   help="build only this share of the documents (0 < F <= 1), a subset fixed by URL and "
                   "dataset.seed, for scaling experiments; a version of F < 1 does not become `latest`")
    rn = command("runs", cmd_runs, "list recorded runs, newest first (`runs show ID`: one run's details)")
    rn.add_argument("verb", nargs="?", choices=["show"], help="show: the details of one run")
    rn.add_argument("id", nargs="?", type=int, help="with show: the run's id")
    rn.add_argument("--limit", type=int, default=20, help="how many runs to list (default: %(default)s; 0: all)")
    sc = command("schedule", cmd_schedule, "run the pipeline on the config's cron schedules until stopped")
    sc.add_argument("--once", action="store_true", help="run what is due now, then exit (for cron or a systemd timer)")
    v = command("validate", cmd_validate, "check a chat JSONL file as the fine-tuning API will")
    v.add_argument("file", help="the .jsonl file to check")
    v.add_argument("--model", help="model whose format and limits apply (default: the config's)")
    v.add_argument("--json", action="store_true", help="print one JSON object instead of the text report")
    v.add_argument("--format", choices=VALIDATE_FORMATS,
                   help="line format (default: the model's for babbage/davinci, else detected from the first line)")
    rv = sub.add_parser("review", help="feed a reviewer's decisions back into later builds",
                        description="feed a reviewer's decisions back into later builds")
    rv.set_defaults(handler=cmd_review)
    rv_verbs = rv.add_subparsers(dest="verb", required=True, metavar="VERB")
    ra = rv_verbs.add_parser("apply", help="store the decisions (exclude, keep or an edited answer) of a review.csv",
                             description="store the decisions (exclude, keep or an edited answer) of a review.csv")
    ra.add_argument("file", help="a review.csv with the decision column filled in")
    ra.add_argument("--config", default=str(_relative(DEFAULT_CONFIG)), help="YAML config (default: %(default)s)")
    rs = rv_verbs.add_parser("serve", help="a local web app to read, filter, edit, exclude and approve versions",
                             description="a local web app to read, filter, edit, exclude and approve versions")
    rs.set_defaults(handler=cmd_review_serve)
    rs.add_argument("--config", default=str(_relative(DEFAULT_CONFIG)), help="YAML config (default: %(default)s)")
    rs.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default: %(default)s); any other than loopback needs the URL's token")
    from transforms.review_app import PORT

    rs.add_argument("--port", type=int, default=PORT,
                    help="port (default: %(default)s, where report.html links its examples; 0: a free one)")
    ap = command("approve", cmd_approve, "mark a dataset version approved for fine-tuning")
    ap.add_argument("version", help="version name (v0003), latest, or the version's folder")
    f = command("finetune", cmd_finetune, "check a dataset version, upload it once and start a fine-tuning job")
    f.add_argument("--dataset", default="latest", help="version folder, version name or latest (default)")
    f.add_argument("--wait", action="store_true", help="watch the job until it ends; Ctrl-C leaves it running")
    f.add_argument("--force", action="store_true",
                   help="start a job even when one from the same files and settings is running or done")
    f.add_argument("--model", help="model to fine-tune instead of the config's `model`; ft:… continues that "
                   "fine-tuned model")
    f.add_argument("--compare-fractions", metavar="F,F,…",
                   help="scaling experiment: build these shares of the documents (e.g. 0.5,1), start one job "
                   "each and (with --wait) score the models side by side on the full version's test split")

    def verbs(name: str, handler: Callable[[argparse.Namespace], int], help: str,
              actions: dict[str, tuple[str | None, str]]) -> dict[str, argparse.ArgumentParser]:
        group = sub.add_parser(name, help=help, description=help)
        group.set_defaults(handler=handler)
        inner = group.add_subparsers(dest="verb", required=True, metavar="VERB")
        parsers = {}
        for verb, (arg, text) in actions.items():
            v = inner.add_parser(verb, help=text, description=text)
            if arg:
                v.add_argument(arg, help=f"{'job id' if arg == 'id' else 'model name'}")
            v.add_argument("--config", default=str(_relative(DEFAULT_CONFIG)),
                           help="YAML config (default: %(default)s)")
            parsers[verb] = v
        return parsers

    verbs("jobs", cmd_jobs, "list, watch and control fine-tuning jobs", {
        "list": (None, "every job started from this output_dir, with its current status"),
        "show": ("id", "one job's status, model, hyperparameters, files and error"),
        "events": ("id", "the job's log, oldest first"),
        "wait": ("id", "watch the job until it ends, then save its results"),
        "cancel": ("id", "cancel the job"),
        "pause": ("id", "pause a running job"),
        "resume": ("id", "resume a paused job"),
        "checkpoints": ("id", "the job's checkpoints with their metrics"),
        "results": ("id", "save the result CSV and a loss/accuracy plot beside the dataset version"),
    })
    models = verbs("models", cmd_models, "manage fine-tuned models", {
        "delete": ("name", "delete a fine-tuned model"),
        "merge": ("name", "write a local job's model (local:<job id>) with its LoRA adapter merged in, as a model "
                          "folder other servers load")})
    models["merge"].add_argument("--out", required=True, help="folder to write the merged model to")
    e = command("evaluate", cmd_evaluate, "ask models the test questions and score them side by side; write a report")
    e.add_argument("--model", action="append",  # --model or --job: cli.cmd_evaluate refuses both or neither
                   help="a tuned model (ft:…, a checkpoint ft:…:ckpt-step-N, local:<job id>[:checkpoint-N]), "
                   "scored against its base; repeated: these models side by side")
    e.add_argument("--job", help="the model of this fine-tuning job, scored against its base")
    e.add_argument("--all-checkpoints", action="store_true",
                   help="with --job: the final model and every checkpoint side by side by step, the best marked")
    e.add_argument("--base", help="model to compare with (default: the tuned model's base; with several models: "
                   "none unless given)")
    e.add_argument("--dataset", help="version folder, version name or latest (default: the model's job's version)")
    e.extend = _sampling_flags
    e.add_argument("--sweep", metavar="SETTING=V1,V2,…",
                   help="one evaluation per value of one sampling setting, e.g. temperature=0,0.5,1; the scores side "
                   "by side and in a sweep report")
    e.add_argument("--set", choices=["heldout", "recall", "refusal", "all"],
                   help="ask these question sets side by side and score chrF, token F1 and the judge's grades: "
                   "heldout (the test split), recall (eval_recall.jsonl), refusal (questions to decline), all "
                   "(every set the version has; the default with --rag)")
    e.add_argument("--rag", action="store_true", help="also ask each model with the top-k sections of the "
                   "version's index as context (columns base+RAG, tuned+RAG); build it first with `index`")
    e.add_argument("--k", type=int, help="sections given as context with --rag (default: "
                   "finetune.evaluation.retrieval.k)")
    e.add_argument("--save-dataset", metavar="NAME",
                   help="save the model's answers to the --set questions (default: all sets) as the next version "
                   "of dataset NAME, split like the source version, for fine-tuning another model on them")
    e.add_argument("--questions", choices=["all"],
                   help="with --save-dataset: the train split's questions too (every question of the version)")
    e.add_argument("--base-url", help="ask the models at this OpenAI-compatible endpoint instead of the "
                   "fine-tuning backend (a deployed vLLM, Ollama, llama.cpp's server)")
    e.add_argument("--api-key-env", metavar="VAR",
                   help="with --base-url: the environment variable holding its key (default: none is sent)")
    ix = command("index", cmd_index, "build the retrieval index of a version's sections, BM25 or embeddings (only "
                 "changed sections are tokenized or embedded again)")
    ix.add_argument("--dataset", default="latest", help="version folder, version name or latest (default)")
    ix.add_argument("--tokenizer", choices=["bigram", "kiwi"],
                    help="bigram or kiwi (default: finetune.evaluation.retrieval.tokenizer)")
    ix.add_argument("--method", choices=["bm25", "embeddings", "hybrid"],
                    help="which index to build (default: finetune.evaluation.retrieval.method)")
    ix.add_argument("--estimate", action="store_true",
                    help="only count the tokens and cost of the embedding requests; send nothing")
    ak = command("ask", cmd_ask, "answer one question with one model (and the retrieved sections it was given)")
    ak.add_argument("question", help="the question")
    ak.add_argument("--model", help="model to ask (default: the config's model)")
    ak.add_argument("--rag", action="store_true", help="give the model the top-k sections of the index as context")
    ak.add_argument("--k", type=int, help="sections with --rag (default: finetune.evaluation.retrieval.k)")
    ak.add_argument("--dataset", default="latest", help="the version whose index --rag searches (default: latest)")
    x = command("export", cmd_export, "write a dataset version in the form a trainer loads directly, checked by "
                "reading it back")
    x.add_argument("--format", required=True, choices=EXPORT_FORMATS, help="the trainer to export for")
    x.add_argument("--dataset", default="latest", help="version folder, version name or latest (default)")
    x.add_argument("--out", help="folder to write (default: <version>/exports/<format>/)")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logs.configure(args.log_format)
    try:
        return args.handler(args)
    except Crawl2TuneError as exc:
        logs.error(f"error: {exc}")
    except OSError as exc:  # the system refused (disk full, permission, a missing path): the user acts, not us
        logs.error(f"error: {exc}")
    except KeyboardInterrupt:
        logs.error("interrupted: nothing half-written was kept, the previous dataset is intact; run the same "
                   "command again to continue")
        return 130
    except Exception:  # a bug, not bad input: the traceback goes to a file, the user gets one line
        logs.error(f"error: unexpected failure ({sys.exc_info()[1].__class__.__name__}); the traceback is "
                   f"in {_write_traceback(args)} — please report it with that file")
    return 1


def _write_traceback(args: argparse.Namespace) -> Path:
    """The current exception's traceback (a crawl child's included), in <output_dir>/logs/ when the config
    names a usable one, else in the temp directory."""
    output_dir = None
    try:
        from configs import load_config

        output_dir = load_config(getattr(args, "config", None) or DEFAULT_CONFIG).output_dir
    except Exception:  # noqa: BLE001 - no usable config: the temp directory it is
        pass
    path = logs.traceback_file(getattr(args, "command", "pipeline"), output_dir)
    logs.append_traceback(path, traceback.format_exc())
    return path


if __name__ == "__main__":
    sys.exit(main())
