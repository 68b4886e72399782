"""Run the crawl of every configured source, in a child process, and report what changed.

Scrapy's Twisted reactor cannot be restarted inside one process, so each crawl runs in a fresh child
process (spawned, not forked); the parent gets back one `SourceReport` per source. Documents are written to
the SQLite state as they arrive, so an interrupted crawl keeps what it fetched.

Ctrl-C (SIGINT) stops the child gracefully: pages in flight are finished, and Scrapy's JOBDIR (one per source
under `output_dir/jobs/`) keeps the queue and the fingerprints of what was fetched, so running the same
command again continues without fetching those pages again. The job folder is removed once a crawl ends any
other way, so the next crawl starts from the start URLs. Only a complete crawl (not interrupted, not cut by
`max_pages`) retires the pages it no longer reached. A worker (`crawl --worker`) crawls through the shared
frontier in Redis instead, which also keeps its place: `crawlers.frontier.apply` is the one switch (settings
that select the shared scheduler and the shared crawl's storage, `crawlers.pipelines.Storage`).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import shutil
import signal
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from scrapy.crawler import Crawler, CrawlerProcess
from scrapy.settings import Settings

from base import logs
from base.errors import Crawl2TuneError
from base.state import now, state_path
from configs import Config, CrawlConfig, SourceConfig
from crawlers import settings as default_settings
from crawlers.local_site import serve_folder
from crawlers.pages import PagePool, default_workers
from crawlers.spiders.site import SiteSpider
from crawlers import auth, frontier, render
from crawlers.store import PageStore

CHANGE_KINDS = ("new", "changed", "unchanged", "removed")
INTERRUPTED = "shutdown"  # Scrapy's finish reason after SIGINT/SIGTERM


class CrawlError(Crawl2TuneError, RuntimeError):
    """The crawl could not run."""


@dataclass
class SourceReport:
    name: str
    finish_reason: str
    pages_by_status: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    bytes_downloaded: int = 0
    changes: dict[str, list[str]] = field(default_factory=dict)  # new / changed / unchanged / removed
    requests: int = 0
    conditional_requests: int = 0
    started_at: str = ""
    finished_at: str = ""
    elapsed_seconds: float = 0.0
    resumed: bool = False
    fetched: int | None = None
    """A worker of a shared crawl: the pages it fetched and published to the other workers."""
    ingested: int | None = None
    """A worker of a shared crawl: the pages (every worker's) it stored into its state; `changes` are theirs."""
    attachments: dict[str, int] = field(default_factory=dict)
    """Linked files read into documents, by kind (pdf, docx, hwpx); a 304 is not read again."""

    @property
    def counts(self) -> dict[str, int]:
        counts = {kind: len(urls) for kind, urls in self.changes.items()}
        if self.fetched is not None:
            counts.update(fetched=self.fetched, ingested=self.ingested or 0)
        return counts

    @property
    def complete(self) -> bool:
        return self.finish_reason == "finished"

    @property
    def interrupted(self) -> bool:
        return self.finish_reason == INTERRUPTED

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "counts": self.counts}


# --- settings -------------------------------------------------------------------------------------


def project_settings(config: Config) -> Settings:
    """Our settings module with the config's `crawl:` section on top."""
    crawl: CrawlConfig = config.crawl
    settings = Settings()
    settings.setmodule(default_settings, priority="project")
    settings.setdict(
        {
            "CRAWL2TUNE_STATE": str(state_path(config.output_dir)),
            "USER_AGENT": crawl.user_agent,
            "CONCURRENT_REQUESTS_PER_DOMAIN": crawl.concurrency_per_domain,
            "CONCURRENT_REQUESTS": max(16, crawl.concurrency_per_domain),
            "AUTOTHROTTLE_ENABLED": crawl.autothrottle,
            "AUTOTHROTTLE_START_DELAY": crawl.start_delay_seconds,
            "AUTOTHROTTLE_TARGET_CONCURRENCY": float(crawl.concurrency_per_domain),
            "DOWNLOAD_TIMEOUT": crawl.timeout_seconds,
            "RETRY_TIMES": crawl.retries,
            "DOWNLOAD_MAXSIZE": crawl.max_page_bytes,
            "CRAWL2TUNE_PROGRESS": crawl.progress,
            "CRAWL2TUNE_PROGRESS_INTERVAL": crawl.progress_interval_seconds,
        },
        priority="project",
    )
    return settings


def spider_for(source: SourceConfig, jobdir: Path | None = None) -> type[SiteSpider]:
    """SiteSpider with this source's Scrapy settings (Scrapy reads per-spider settings from the class)."""
    custom: dict[str, Any] = {
        "ROBOTSTXT_OBEY": source.obey_robots,
        "CLOSESPIDER_PAGECOUNT": source.max_pages,
        "DEPTH_LIMIT": source.max_depth,
    }
    if jobdir is not None:
        custom["JOBDIR"] = str(jobdir)
    return type(f"SiteSpider_{source.name}", (SiteSpider,), {"custom_settings": custom})


# --- resumable jobs ---------------------------------------------------------------------------------


class Job:
    """One source's JOBDIR plus what the report needs across an interruption: when the crawl started and
    the counts of the runs before. A job made with another config is discarded."""

    def __init__(self, config: Config, source: SourceConfig):
        self.dir = Path(config.output_dir) / "jobs" / source.name
        self.file = self.dir / "crawl2tune.json"
        self.fingerprint = hashlib.sha256(
            (source.model_dump_json() + config.crawl.model_dump_json(exclude={"progress", "progress_interval_seconds"}))
            .encode("utf-8")
        ).hexdigest()
        saved = self._load()
        if saved.get("config") != self.fingerprint:
            self.clear()
            saved = {}
        self.resumed = bool(saved)
        self.started: str = saved.get("started_at") or now()
        self.earlier: dict[str, Any] = saved.get("report") or {}
        self._save(self.earlier or None)  # marks the job as started, even if this run is killed outright

    def _load(self) -> dict[str, Any]:
        try:
            return json.loads(self.file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def _save(self, report: dict[str, Any] | None) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        data = {"config": self.fingerprint, "started_at": self.started, "report": report}
        self.file.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")

    def keep(self, report: SourceReport) -> None:
        self._save(report.as_dict())

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


# --- reports -----------------------------------------------------------------------------------------


def _dropped(stats: dict) -> dict[str, int]:
    """Every reason a fetched or attempted page did not become a document (counted by the spider and the
    pipelines), plus links not followed because of max_depth."""
    dropped: dict[str, int] = {}
    for key, value in stats.items():
        if key.startswith("crawl2tune/dropped/"):
            dropped[key.rsplit("/", 1)[1]] = value
    if stats.get("depth/request_ignored_count"):
        dropped["max_depth"] = stats["depth/request_ignored_count"]
    return dict(sorted(dropped.items()))


def _add(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return dict(sorted({k: a.get(k, 0) + b.get(k, 0) for k in {*a, *b}}.items()))


def _report(source: SourceConfig, stats: dict, job: Job | None, started: str) -> SourceReport:
    prefix = "downloader/response_status_count/"
    changes = {kind: list(urls) for kind, urls in (stats.get("crawl2tune/changes") or {}).items()}
    report = SourceReport(
        name=source.name,
        finish_reason=str(stats.get("finish_reason", "unknown")),
        pages_by_status={k[len(prefix):]: v for k, v in sorted(stats.items()) if k.startswith(prefix)},
        dropped=_dropped(stats),
        attachments={k.rsplit("/", 1)[1]: v for k, v in sorted(stats.items()) if k.startswith("crawl2tune/attachments/")},
        bytes_downloaded=int(stats.get("downloader/response_bytes", 0)),
        changes={kind: changes.get(kind, []) for kind in CHANGE_KINDS},
        requests=int(stats.get("downloader/request_count", 0)),
        conditional_requests=int(stats.get("crawl2tune/conditional_requests", 0)),
        started_at=started,
        finished_at=now(),
        elapsed_seconds=round(float(stats.get("elapsed_time_seconds", 0.0)), 3),
        resumed=bool(job and job.resumed),
        fetched=stats.get("crawl2tune/published"),
        ingested=stats.get("crawl2tune/ingested"),
    )
    earlier = job.earlier if job else {}
    if earlier:  # a resumed crawl reports the whole crawl, not only its last run
        report.pages_by_status = _add(earlier.get("pages_by_status", {}), report.pages_by_status)
        report.dropped = _add(earlier.get("dropped", {}), report.dropped)
        report.attachments = _add(earlier.get("attachments", {}), report.attachments)
        report.bytes_downloaded += earlier.get("bytes_downloaded", 0)
        report.requests += earlier.get("requests", 0)
        report.conditional_requests += earlier.get("conditional_requests", 0)
        report.elapsed_seconds = round(report.elapsed_seconds + earlier.get("elapsed_seconds", 0.0), 3)
        for kind in CHANGE_KINDS:
            report.changes[kind] = [*earlier.get("changes", {}).get(kind, []), *report.changes[kind]]
        if report.complete:  # with the pages this run retired (crawlers.pipelines.StoreDocument.finish)
            report.changes["removed"].sort()
    return report


# --- the crawl ---------------------------------------------------------------------------------------


_interrupted: Any = None  # the child's copy of the parent's Ctrl-C event (set by `_inherit`)


def _inherit(interrupted: Any) -> None:
    global _interrupted
    _interrupted = interrupted


def _crawl_here(config: Config, worker: bool = False) -> list[SourceReport]:
    """Runs inside the child process. A `worker` crawls through the shared Redis frontier (crawlers.frontier).

    The child starts with SIGINT ignored (see `crawl`), so Ctrl-C during its imports prints nothing. Ctrl-C
    before the crawl starts, seen by the parent or by this process, is held in the shared event until the
    crawlers are set up and then raised, so it never lands inside Scrapy's setup (where Twisted would print it
    as an unhandled error) and the parent reports it as the one `interrupted` line. Once the crawl runs,
    Scrapy's own handler stops it gracefully."""
    interrupted = _interrupted if _interrupted is not None else threading.Event()
    signal.signal(signal.SIGINT, lambda *_: interrupted.set())
    json_logs = logs.configure_child("crawl", config.output_dir)
    workers = config.crawl.extract_workers
    with PageStore(state_path(config.output_dir)) as store:
        first_crawl = any(not store.has_pages(source.name) for source in config.sources)
    # forks now, before any thread starts
    pool = PagePool(default_workers() if workers is None else workers, warm=first_crawl)
    crawlers: list[tuple[SourceConfig, Crawler | None, Job | None, str]] = []  # None: its login was refused
    try:
        with ExitStack() as stack:
            settings = project_settings(config)
            render.apply(settings, config.crawl, config.sources)
            if worker:
                frontier.apply(settings, _redis_url(config), config.crawl.redis_prefix)
            if json_logs:  # base.logs' JSON handler is on the root logger already
                settings.set("LOG_INSTALL_ROOT_HANDLER", False, priority="project")
            process = CrawlerProcess(settings)
            for source in config.sources:
                job = Job(config, source) if config.crawl.resume and not worker else None  # workers resume via Redis
                proxy = stack.enter_context(serve_folder(source.serve_dir)) if source.serve_dir else None
                started = job.started if job else now()
                try:
                    credentials = auth.credentials(source, config.crawl.timeout_seconds)
                except auth.AuthFailed:  # a refused login form: the source is not crawled, nothing is retired
                    crawlers.append((source, None, job, started))
                    continue
                spider = spider_for(source, job.dir if job else None)
                spider.custom_settings.update(credentials.settings if credentials else {})
                spider.custom_settings.update(render.through_proxy(proxy) if proxy else {})
                crawler = process.create_crawler(spider)
                process.crawl(crawler, source=source, local_proxy=proxy, pool=pool, started=started,
                              credentials=credentials)
                crawlers.append((source, crawler, job, started))
            if interrupted.is_set():
                raise KeyboardInterrupt
            process.start()
    finally:
        pool.close()
    reports = []
    with PageStore(state_path(config.output_dir)) as store:
        for source, crawler, job, started in crawlers:
            if crawler is None:
                report = SourceReport(source.name, auth.FINISH_REASON, started_at=started, finished_at=now())
                store.record_crawl(source.name, report.as_dict())
                reports.append(report)
                continue
            stats = crawler.stats.get_stats()
            if worker and not stats.get("crawl2tune/left"):
                raise CrawlError(f"the worker could not leave the shared crawl of {source.name} (see the errors "
                                 "above); what it fetched is in Redis, run the same command again")
            if crawler.spider is not None:
                started = crawler.spider.started  # a shared crawl's is the first worker's (crawlers.frontier)
            report = _report(source, stats, job, started)
            if job is not None and report.interrupted:
                job.keep(report)
            elif job is not None:
                job.clear()
            store.record_crawl(source.name, report.as_dict())
            reports.append(report)
    return reports


def _redis_url(config: Config) -> str:
    if not config.crawl.redis_url:
        raise CrawlError("crawl --worker needs crawl.redis_url in the config (e.g. redis://127.0.0.1:6379/0); "
                         "see README, Operations")
    return config.crawl.redis_url


def crawl(config: Config, *, worker: bool = False) -> list[SourceReport]:
    """Crawl every source of `config` into its state; one report per source.

    While the child crawls, Ctrl-C does not stop this process: it reaches the child too, which stops gracefully
    and returns reports whose `finish_reason` is 'shutdown'. The child starts with SIGINT ignored and gets the
    event this process sets on Ctrl-C, so an interrupt during its start-up is raised once it is set up; one
    that came too late for that and too early for Scrapy's handler is raised here when the child returns.
    """
    PageStore(state_path(config.output_dir)).close()  # fail early, in this process, if the state is unusable
    for source in config.sources:
        auth.check(source)  # a login's environment variable that is not set: a config error, before crawling
    if worker:
        _redis_url(config)
    context = multiprocessing.get_context("spawn")
    interrupted = context.Event()
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None  # the child inherits SIG_IGN
    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=_inherit,
                                 initargs=(interrupted,)) as pool:
            future = pool.submit(_crawl_here, config, worker)  # the child starts now
            if main:
                signal.signal(signal.SIGINT, lambda *_: interrupted.set())
            reports = future.result()
        if interrupted.is_set() and not any(r.interrupted for r in reports):
            raise KeyboardInterrupt  # it came before Scrapy's handler was in: the user asked to stop all the same
        return reports
    except BrokenProcessPool:
        raise CrawlError(
            "the crawl process died before it finished; what it fetched is kept, run the same command again"
        ) from None
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)
