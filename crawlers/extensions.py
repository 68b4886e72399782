"""Scrapy extensions of our own: the crawl's progress display, and AutoThrottle aware of 304s."""

from __future__ import annotations

import sys
import time
from typing import ClassVar, TextIO

from scrapy import Spider, signals
from scrapy.crawler import Crawler
from scrapy.core.downloader import Slot
from scrapy.exceptions import NotConfigured
from scrapy.extensions.throttle import AutoThrottle
from scrapy.http import Response
from twisted.internet import task

TTY_REFRESH_SECONDS = 0.5


class CrawlProgress:
    """Pages done, queued, rate and errors of every source being crawled.

    On a terminal (`CRAWL2TUNE_PROGRESS = "auto"` and stderr is a TTY) one status line is rewritten in place;
    otherwise (`"log"`, or not a terminal) a plain line is written every `CRAWL2TUNE_PROGRESS_INTERVAL`
    seconds and once at the end, which suits cron mail and CI logs. `"off"` disables it. Sources crawled together share the line.
    """

    _status: ClassVar[dict[str, str]] = {}  # every source crawled in this process, in start order
    _open: ClassVar[int] = 0

    def __init__(self, crawler: Crawler, tty: bool, interval: float, out: TextIO):
        self.crawler = crawler
        self.tty = tty
        self.interval = TTY_REFRESH_SECONDS if tty else interval
        self.out = out
        self.loop: task.LoopingCall | None = None
        self.last = (time.monotonic(), 0)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> "CrawlProgress":
        mode = crawler.settings["CRAWL2TUNE_PROGRESS"]
        if mode == "off":
            raise NotConfigured
        out = sys.stderr
        tty = mode == "auto" and out.isatty()
        extension = cls(crawler, tty, crawler.settings.getfloat("CRAWL2TUNE_PROGRESS_INTERVAL"), out)
        crawler.signals.connect(extension.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(extension.spider_closed, signal=signals.spider_closed)
        return extension

    def spider_opened(self, spider: Spider) -> None:
        CrawlProgress._open += 1
        self.last = (time.monotonic(), 0)
        self.loop = task.LoopingCall(self.tick)
        self.loop.start(self.interval, now=False)

    def spider_closed(self, spider: Spider, reason: str) -> None:
        if self.loop is not None and self.loop.running:
            self.loop.stop()
        CrawlProgress._open -= 1
        self.tick()  # the final tally, also in plain log mode (a short crawl may end before the first tick)
        if self.tty:
            if CrawlProgress._open == 0:
                self.out.write("\n")
                self.out.flush()
                CrawlProgress._status.clear()

    def status(self) -> str:
        stats = self.crawler.stats
        done = stats.get_value("response_received_count", 0)
        engine = self.crawler.engine
        queued = 0
        if engine is not None and engine.scheduler is not None:
            try:
                queued = len(engine.scheduler)  # type: ignore[arg-type]
            except TypeError:
                queued = 0
            queued += len(engine.downloader.active)
        now = time.monotonic()
        then, before = self.last
        rate = (done - before) / max(now - then, 1e-6)
        self.last = (now, done)
        errors = stats.get_value("crawl2tune/errors", 0)
        megabytes = stats.get_value("downloader/response_bytes", 0) / 1e6
        name = self.crawler.spider.name if self.crawler.spider else "crawl"
        return (f"{name}: {done} pages · {queued} queued · {rate:.1f} pages/s · {errors} errors · "
                f"{megabytes:.1f} MB")

    def tick(self) -> None:
        name = self.crawler.spider.name if self.crawler.spider else "crawl"
        line = self.status()
        if self.tty:
            CrawlProgress._status[name] = line
            self.out.write("\r\x1b[K" + " | ".join(CrawlProgress._status.values()))
        else:
            self.out.write(f"crawl {line}\n")
        self.out.flush()


class NotModifiedAwareAutoThrottle(AutoThrottle):
    """AutoThrottle that takes a 304 Not Modified as the normal answer it is.

    Scrapy's lets only a 200 lower the delay (error pages are small and fast, and would otherwise speed up
    a crawl that is failing); a re-crawl answered with 304s would stay at the start delay to the end.
    """

    def _adjust_delay(self, slot: Slot, latency: float, response: Response) -> None:
        if response.status == 304:
            response = response.replace(status=200)
        super()._adjust_delay(slot, latency, response)
