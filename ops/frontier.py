"""The shared crawl frontier: `crawl --worker` processes crawl one source together through Redis (scrapy-redis).

scrapy-redis gives the shared request queue and the shared fingerprint set; with them any number of workers,
started at any time, fetch each page once overall. What scrapy-redis leaves open, and this module adds:

- the fingerprint is our canonical one (`crawlers.urls.CanonicalFingerprinter`, via the crawler's request
  fingerprinter), not scrapy-redis's own, so URL variants are one page as in a single-process crawl;
- a worker does not stop while another is still fetching: its pages may add links to the queue. Each worker
  keeps a heartbeat key in Redis saying `busy` or `idle`; an idle worker closes only when the queue is empty
  and no live worker is busy;
- the crawl is one crawl: it has one start time (the first worker's, kept in Redis), which the state uses to
  tell pages seen in this crawl from older ones; only the last worker to leave a complete crawl retires the
  pages no worker reached, and then clears the crawl's keys so the next crawl starts from the start URLs.
  A crawl a worker left interrupted (Ctrl-C) keeps its keys, so starting workers again continues it; a crawl
  during which a worker died (its heartbeat expired) or one cut by `max_pages` retires nothing.

Keys, per source: `<prefix>:<source>:requests` (queue), `:dupefilter`, `:started`, `:members`, `:incomplete`,
`:worker:<id>`. Requests are pickled into Redis (scrapy-redis's format): only let trusted clients reach it.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import redis
from scrapy import Spider, signals
from scrapy.crawler import Crawler
from scrapy.exceptions import DontCloseSpider, NotConfigured
from scrapy.settings import Settings
from scrapy_redis.dupefilter import RFPDupeFilter
from scrapy_redis.scheduler import Scheduler
from twisted.internet import task

from crawlers.store import now

HEARTBEAT_SECONDS = 0.25  # how often a waiting worker looks at the queue and refreshes its heartbeat
HEARTBEAT_TTL = 15  # seconds without a heartbeat after which a worker counts as dead


def worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Frontier:
    """The Redis bookkeeping of one source's shared crawl."""

    def __init__(self, url: str, prefix: str, source: str):
        self.server = redis.Redis.from_url(url)
        self.base = f"{prefix}:{source}"

    def key(self, name: str) -> str:
        return f"{self.base}:{name}"

    def join(self, worker: str) -> str:
        """Register `worker`; returns the crawl's start time (this worker's if it is the first)."""
        self.server.ping()
        self.server.set(self.key("started"), now(), nx=True)
        self.server.sadd(self.key("members"), worker)
        self.set_state(worker, "busy")
        return self.server.get(self.key("started")).decode()

    def set_state(self, worker: str, state: str) -> None:
        self.server.set(self.key(f"worker:{worker}"), state, ex=HEARTBEAT_TTL)

    def pending(self) -> int:
        return int(self.server.zcard(self.key("requests")))

    def others_busy(self, worker: str) -> bool:
        for member in self.server.smembers(self.key("members")):
            other = member.decode()
            if other != worker and self.server.get(self.key(f"worker:{other}")) == b"busy":
                return True
        return False

    def leave(self, worker: str, finish_reason: str) -> bool:
        """Unregister `worker` after its crawl ended with `finish_reason`. Returns True when it was the last
        worker of a complete crawl (the caller then retires unreached pages); the last worker of a crawl that
        was not interrupted clears the crawl's keys."""
        self.server.delete(self.key(f"worker:{worker}"))
        if finish_reason not in ("finished", "shutdown"):  # cut short (max_pages, an error): not every page seen
            self.server.set(self.key("incomplete"), finish_reason)
        with self.server.pipeline(transaction=True) as pipe:
            pipe.srem(self.key("members"), worker).smembers(self.key("members"))
            _, members = pipe.execute()
        alive = [m for m in members if self.server.exists(self.key(f"worker:{m.decode()}"))]
        if alive:
            return False
        if members:  # registered workers without a heartbeat died mid-crawl: their pages in flight were lost
            self.server.set(self.key("incomplete"), "worker_died")
        if finish_reason == "shutdown":
            return False  # interrupted: the queue stays for the workers started next
        complete = self.server.get(self.key("incomplete")) is None
        self.clear()
        return complete

    def clear(self) -> None:
        names = ("requests", "dupefilter", "started", "members", "incomplete")
        self.server.delete(*(self.key(name) for name in names))

    def started(self) -> str | None:
        value = self.server.get(self.key("started"))
        return value.decode() if value else None


def apply(settings: Settings, redis_url: str, prefix: str) -> Settings:
    """Make a crawl one worker of the shared crawl: scrapy-redis's scheduler and dupefilter, and our presence
    extension, on top of `crawlers.settings`."""
    settings.setdict(worker_settings(redis_url, prefix), priority="project")
    extensions = dict(settings.getdict("EXTENSIONS"))
    extensions["ops.frontier.WorkerPresence"] = 600
    settings.set("EXTENSIONS", extensions, priority="project")
    return settings


def worker_settings(redis_url: str, prefix: str) -> dict[str, Any]:
    return {
        "SCHEDULER": "ops.frontier.SharedScheduler",
        "DUPEFILTER_CLASS": "ops.frontier.CanonicalRedisDupeFilter",
        "SCHEDULER_QUEUE_CLASS": "scrapy_redis.queue.PriorityQueue",  # keeps DEPTH_PRIORITY's breadth-first order
        "SCHEDULER_QUEUE_KEY": f"{prefix}:%(spider)s:requests",
        "SCHEDULER_DUPEFILTER_KEY": f"{prefix}:%(spider)s:dupefilter",
        "SCHEDULER_PERSIST": True,  # one worker leaving must not empty the others' queue
        "REDIS_URL": redis_url,
        "CRAWL2TUNE_REDIS_PREFIX": prefix,
        "CRAWL2TUNE_WORKER": worker_id(),
    }


class CanonicalRedisDupeFilter(RFPDupeFilter):
    """scrapy-redis's shared fingerprint set, with the crawler's fingerprint (ours: canonical URLs)."""

    fingerprinter: Any = None

    @classmethod
    def from_spider(cls, spider: Spider) -> "CanonicalRedisDupeFilter":
        dupefilter = super().from_spider(spider)
        dupefilter.fingerprinter = spider.crawler.request_fingerprinter
        return dupefilter

    def request_fingerprint(self, request: Any) -> str:
        if self.fingerprinter is None:
            return super().request_fingerprint(request)
        return self.fingerprinter.fingerprint(request).hex()


class SharedScheduler(Scheduler):
    """scrapy-redis's scheduler that says `busy` in Redis as soon as it hands a request to this worker."""

    presence: "WorkerPresence | None" = None

    def next_request(self) -> Any:
        request = super().next_request()
        if request is not None and self.presence is not None:
            self.presence.busy()
        return request


class WorkerPresence:
    """Scrapy extension of a shared crawl's worker: heartbeat, and no closing while other workers are busy."""

    def __init__(self, crawler: Crawler):
        self.crawler = crawler
        settings = crawler.settings
        self.worker = settings["CRAWL2TUNE_WORKER"]
        self.prefix = settings["CRAWL2TUNE_REDIS_PREFIX"]
        self.frontier: Frontier | None = None
        self.state = ""
        self.waiting = False
        self.loop: task.LoopingCall | None = None
        self.beats = 0

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> "WorkerPresence":
        if not crawler.settings.get("CRAWL2TUNE_WORKER"):
            raise NotConfigured
        extension = cls(crawler)
        crawler.signals.connect(extension.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(extension.spider_idle, signal=signals.spider_idle)
        crawler.signals.connect(extension.spider_closed, signal=signals.spider_closed)
        return extension

    def spider_opened(self, spider: Spider) -> None:
        self.frontier = Frontier(self.crawler.settings["REDIS_URL"], self.prefix, spider.name)
        scheduler = self.crawler.engine.scheduler if self.crawler.engine else None
        if isinstance(scheduler, SharedScheduler):
            scheduler.presence = self
        self.busy()
        self.loop = task.LoopingCall(self.heartbeat)
        self.loop.start(HEARTBEAT_SECONDS, now=False)

    def _set(self, state: str) -> None:
        if self.frontier is not None:
            self.frontier.set_state(self.worker, state)
        self.state = state

    def busy(self) -> None:
        self.waiting = False
        if self.state != "busy":
            self._set("busy")

    def heartbeat(self) -> None:
        self.beats += 1
        if self.beats % int(2 / HEARTBEAT_SECONDS) == 0:  # refresh the TTL every 2 s
            self._set(self.state or "busy")
        if self.waiting:
            # wake the engine now rather than at its own 5-second heartbeat: it pulls from the queue, or
            # finds itself idle again and asks spider_idle whether to close
            slot = getattr(self.crawler.engine, "_slot", None)
            if slot is not None:
                slot.nextcall.schedule()

    def spider_idle(self, spider: Spider) -> None:
        if self.state != "idle":
            self._set("idle")
        assert self.frontier is not None
        if self.frontier.pending() or self.frontier.others_busy(self.worker):
            self.waiting = True
            raise DontCloseSpider  # another worker's pages may still add links to the queue

    def spider_closed(self, spider: Spider, reason: str) -> None:
        if self.loop is not None and self.loop.running:
            self.loop.stop()
