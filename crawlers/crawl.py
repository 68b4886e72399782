"""Run the crawl of every configured source, in a child process, and report what changed.

Scrapy's Twisted reactor cannot be restarted inside one process, so each crawl runs in a fresh child
process (spawned, not forked); the parent gets back one `SourceReport` per source. Documents are written to
the SQLite state as they arrive, so an interrupted crawl keeps what it fetched.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field

from scrapy.crawler import Crawler, CrawlerProcess
from scrapy.settings import Settings

from configs import Config, SourceConfig
from crawlers import settings as default_settings
from crawlers.local_site import serve_folder
from crawlers.spiders.site import SiteSpider
from crawlers.store import PageStore, now, state_path


class CrawlError(RuntimeError):
    """The crawl could not run."""


@dataclass
class SourceReport:
    name: str
    finish_reason: str
    pages_by_status: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    bytes_downloaded: int = 0
    changes: dict[str, list[str]] = field(default_factory=dict)  # new / changed / unchanged / removed

    @property
    def counts(self) -> dict[str, int]:
        return {kind: len(urls) for kind, urls in self.changes.items()}


def project_settings(config: Config) -> Settings:
    settings = Settings()
    settings.setmodule(default_settings, priority="project")
    settings.set("CRAWL2TUNE_STATE", str(state_path(config.output_dir)), priority="project")
    return settings


def spider_for(source: SourceConfig) -> type[SiteSpider]:
    """SiteSpider with this source's Scrapy settings (Scrapy reads per-spider settings from the class)."""
    custom = {"ROBOTSTXT_OBEY": source.obey_robots, "CLOSESPIDER_PAGECOUNT": source.max_pages}
    return type(f"SiteSpider_{source.name}", (SiteSpider,), {"custom_settings": custom})


def _dropped(stats: dict) -> dict[str, int]:
    """Every reason a fetched or attempted page did not become a document, from Scrapy's stats and ours."""
    dropped: dict[str, int] = {}
    for key, value in stats.items():
        if key.startswith("crawl2tune/dropped/"):
            dropped[key.rsplit("/", 1)[1]] = value
        elif key.startswith("httperror/response_ignored_status_count/"):
            dropped[f"http_{key.rsplit('/', 1)[1]}"] = value
        elif key == "robotstxt/forbidden":
            dropped["robots_txt"] = value
        elif key.startswith("downloader/exception_type_count/"):
            dropped[key.rsplit("/", 1)[1].rsplit(".", 1)[-1]] = value
    return dict(sorted(dropped.items()))


def _report(source: SourceConfig, stats: dict, removed: list[str]) -> SourceReport:
    prefix = "downloader/response_status_count/"
    changes = dict(stats.get("crawl2tune/changes") or {"new": [], "changed": [], "unchanged": []})
    changes["removed"] = removed
    return SourceReport(
        name=source.name,
        finish_reason=str(stats.get("finish_reason", "unknown")),
        pages_by_status={k[len(prefix):]: v for k, v in sorted(stats.items()) if k.startswith(prefix)},
        dropped=_dropped(stats),
        bytes_downloaded=int(stats.get("downloader/response_bytes", 0)),
        changes={kind: sorted(urls) for kind, urls in changes.items()},
    )


def _crawl_here(config: Config) -> list[SourceReport]:
    """Runs inside the child process."""
    started = now()
    with ExitStack() as stack:
        crawlers: list[tuple[SourceConfig, Crawler]] = []
        process = CrawlerProcess(project_settings(config))
        for source in config.sources:
            proxy = stack.enter_context(serve_folder(source.serve_dir)) if source.serve_dir else None
            crawler = process.create_crawler(spider_for(source))
            process.crawl(crawler, source=source, local_proxy=proxy)
            crawlers.append((source, crawler))
        process.start()
    reports = []
    with PageStore(state_path(config.output_dir)) as store:
        for source, crawler in crawlers:
            stats = crawler.stats.get_stats()
            complete = stats.get("finish_reason") == "finished"
            removed = store.retire_unseen(source.name, since=started) if complete else []
            reports.append(_report(source, stats, removed))
    return reports


def crawl(config: Config) -> list[SourceReport]:
    """Crawl every source of `config` into its state; one report per source."""
    PageStore(state_path(config.output_dir)).close()  # fail early, in this process, if the state is unusable
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_crawl_here, config).result()
