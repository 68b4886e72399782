"""The shared crawl frontier: `crawl --worker` processes crawl one source together through Redis (scrapy-redis).

scrapy-redis gives the shared request queue and the shared fingerprint set; with them any number of workers,
started at any time, fetch each page once overall. What scrapy-redis leaves open, and this module adds:

- the fingerprint is our canonical one (`crawlers.urls.CanonicalFingerprinter`, via the crawler's request
  fingerprinter), not scrapy-redis's own, so URL variants are one page as in a single-process crawl;
- a worker does not stop while another is still fetching: its pages may add links to the queue. Each worker
  keeps a heartbeat key in Redis saying `busy`, `idle` or `leaving` (`busy` is said before a request is taken
  from the queue); an idle worker closes only when one atomic look finds the queue empty and no live worker
  busy;
- every worker's state ends with every page, wherever the workers run: a worker does not store what it
  fetched, its storage (`PublishPages`, in place of `crawlers.pipelines.StoreDocument`) publishes each page's
  outcome (the whole record, `crawlers.store.document_record`) to the crawl's page stream, and every worker
  applies the stream to its own state as it goes and to its end before leaving. The position is kept in the
  state and moved in the transaction that applies the entries, so workers sharing one output_dir apply each
  entry once and a restarted worker continues where it was;
- one document per canonical URL: the first worker to claim a URL in the crawl's document set keeps it,
  later ones drop theirs as `duplicate`, as a single-process crawl does;
- the crawl is one crawl: one start time (the first worker's, which names the crawl), one page count for
  `max_pages` (`CLOSESPIDER_PAGECOUNT`, counted over every worker in place of Scrapy's CloseSpider; when it is
  reached every worker stops, and the crawl retires nothing). A worker that leaves a
  complete crawl (not interrupted, not cut by `max_pages`, no worker died) retires in its own state the
  pages no worker reached; the last one to leave clears the crawl's keys, so the next crawl starts from the
  start URLs. A crawl a worker left interrupted (Ctrl-C) keeps its keys, so starting workers again continues it.

Keys, per source: `<prefix>:<source>:requests` (queue), `:dupefilter`, `:pages` (the page stream),
`:documents`, `:pagecount`, `:started`, `:members`, `:incomplete`, `:worker:<id>`. Requests are pickled into
Redis (scrapy-redis's format): only let trusted clients reach it.
"""

from __future__ import annotations

import json
import os
import socket
import zlib
from typing import Any, Callable

import redis
from scrapy import Spider, signals
from scrapy.crawler import Crawler
from scrapy.exceptions import DontCloseSpider, NotConfigured
from scrapy.settings import Settings
from scrapy.utils.asyncio import sleep
from scrapy.utils.defer import deferred_from_coro
from scrapy_redis.dupefilter import RFPDupeFilter
from scrapy_redis.scheduler import Scheduler
from twisted.internet import task

from base.state import now
from crawlers.items import FetchedPage
from crawlers.pipelines import Storage
from crawlers.store import PageStore, document_record, dropped_record

HEARTBEAT_SECONDS = 0.25  # how often a waiting worker looks at the queue and refreshes its heartbeat
HEARTBEAT_TTL = 15  # seconds without a heartbeat after which a worker counts as dead
INGEST_EVERY = 4  # heartbeats between two takes from the page stream while crawling
INGEST_BATCH = 500  # stream entries applied in one transaction
STOPPED = "closespider_pagecount"  # the finish reason of a crawl cut by max_pages, as Scrapy names it
# Whether the queue is empty and no other live worker is busy, in one atomic look: a worker says `busy`
# before it takes a request, so a request taken from the queue is never missed in between.
QUIET = """
if redis.call('zcard', KEYS[1]) > 0 then return 0 end
for _, member in ipairs(redis.call('smembers', KEYS[2])) do
    if member ~= ARGV[1] and redis.call('get', ARGV[2] .. member) == 'busy' then return 0 end
end
return 1
"""


def worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Frontier:
    """The Redis bookkeeping of one worker in one source's shared crawl."""

    def __init__(self, url: str, prefix: str, source: str, worker: str):
        self.server = redis.Redis.from_url(url)
        self.base = f"{prefix}:{source}"
        self.source = source
        self.worker = worker
        self.crawl = ""  # the crawl's start, which names it (set by `join`)
        self.since = ""  # when this worker's state began taking the crawl's pages
        self.published = 0  # page records this worker fetched and published
        self.ingested = 0  # stream entries this worker applied to its state (every worker's)
        self.leaving = False  # set by `finish`: the worker's heartbeat no longer speaks for it
        self._quiet = self.server.register_script(QUIET)

    def key(self, name: str) -> str:
        return f"{self.base}:{name}"

    def join(self) -> str:
        """Register this worker; returns the crawl's start time (this worker's if it is the first)."""
        self.server.ping()
        self.server.set(self.key("started"), now(), nx=True)
        self.server.sadd(self.key("members"), self.worker)
        self.set_state("busy")
        self.crawl = self.server.get(self.key("started")).decode()
        return self.crawl

    def set_state(self, state: str) -> None:
        self.server.set(self.key(f"worker:{self.worker}"), state, ex=HEARTBEAT_TTL)

    def quiet(self) -> bool:
        """The queue is empty and no other live worker is busy: nothing can add a request any more."""
        return bool(self._quiet(keys=[self.key("requests"), self.key("members")],
                                args=[self.worker, self.key("worker:")]))

    # --- one crawl: its documents and its page count ----------------------------------------------

    def claim(self, url: str) -> bool:
        """Whether this worker is the first in the crawl to give the document `url`."""
        return bool(self.server.sadd(self.key("documents"), url))

    def count_page(self) -> int:
        """Count one more response of the crawl; returns the crawl's count."""
        return int(self.server.incr(self.key("pagecount")))

    def pages(self) -> int:
        return int(self.server.get(self.key("pagecount")) or 0)

    def cut(self, reason: str) -> None:
        """The crawl will not see every page (max_pages, an error): no worker retires anything."""
        self.server.set(self.key("incomplete"), reason)

    # --- the page stream ----------------------------------------------------------------------------

    def publish(self, record: dict[str, Any]) -> None:
        payload = zlib.compress(json.dumps(record, ensure_ascii=False).encode("utf-8"), 1)
        self.server.xadd(self.key("pages"), {"page": payload})
        self.published += 1

    def ingest(self, store: PageStore, changes: dict[str, list[str]]) -> int:
        """Apply the next entries of the page stream to `store` in one transaction, listing each URL under
        its change; returns how many were applied (0 at the end of the stream)."""
        with store.transaction():
            last, self.since = store.ingest_position(self.source, self.crawl)
            answer = self.server.xread({self.key("pages"): last}, count=INGEST_BATCH)
            entries = answer[0][1] if answer else []
            for _, fields in entries:
                record = json.loads(zlib.decompress(fields[b"page"]))
                change = store.apply(record)
                if change:
                    changes[change].append(record["url"])
            if entries:
                store.advance(self.source, entries[-1][0].decode())
        self.ingested += len(entries)
        return len(entries)

    async def finish(self, store: PageStore, changes: dict[str, list[str]], finish_reason: str) -> None:
        """Leave the crawl, which ended for this worker with `finish_reason`: apply the rest of the page stream
        to `store`, unregister, and if the crawl is complete retire in `store` the pages no worker reached.

        A finished crawl is quiet, so every page is in the stream already. When max_pages stopped it, every
        worker is stopping: this one waits for the others' pages in flight. An interrupted worker leaves at
        once; the pages fetched after it left reach its state with the next crawl it takes part in."""
        self.leaving = True
        self.set_state("leaving")  # fetches nothing more
        if finish_reason not in ("finished", "shutdown"):  # before the heartbeat goes: no one may miss it
            self.cut(finish_reason)
        while finish_reason == STOPPED and self.others_fetching():
            self.ingest(store, changes)
            self.set_state("leaving")
            await sleep(HEARTBEAT_SECONDS)
        while self.ingest(store, changes):
            self.set_state("leaving")  # alive while it drains, so the others do not take it for dead
        if self.leave(finish_reason):
            changes["removed"] += store.retire_unseen(self.source, since=self.since)
            changes["removed"].sort()

    def others_fetching(self) -> bool:
        """Whether another live worker has not begun to leave yet."""
        for member in self.server.smembers(self.key("members")):
            state = self.server.get(self.key(f"worker:{member.decode()}"))
            if member.decode() != self.worker and state not in (None, b"leaving"):
                return True
        return False

    def leave(self, finish_reason: str) -> bool:
        """Unregister this worker. Returns True when the crawl is complete (this worker finished, no worker
        was cut short or died); the last worker of a crawl that was not interrupted clears the crawl's keys."""
        self.server.delete(self.key(f"worker:{self.worker}"))
        with self.server.pipeline(transaction=True) as pipe:
            pipe.srem(self.key("members"), self.worker).smembers(self.key("members"))
            _, members = pipe.execute()
        alive = [m for m in members if self.server.exists(self.key(f"worker:{m.decode()}"))]
        if len(alive) < len(members):  # registered workers without a heartbeat died: their pages in flight were lost
            self.cut("worker_died")
        complete = finish_reason == "finished" and not self.server.exists(self.key("incomplete"))
        if not alive and finish_reason != "shutdown":  # interrupted: the queue stays for the workers started next
            self.clear()
        return complete

    def clear(self) -> None:
        names = ("requests", "dupefilter", "pages", "documents", "pagecount", "started", "members", "incomplete")
        self.server.delete(*(self.key(name) for name in names))


def apply(settings: Settings, redis_url: str, prefix: str) -> Settings:
    """Make a crawl one worker of the shared crawl, on top of `crawlers.settings`: scrapy-redis's scheduler and
    dupefilter, and `CRAWL2TUNE_WORKER`, which configures `PublishPages` and `WorkerPresence` (and leaves out
    `StoreDocument`). `WorkerPresence` counts `max_pages` over every worker, so Scrapy's CloseSpider is left out."""
    settings.setdict(worker_settings(redis_url, prefix), priority="project")
    extensions = dict(settings.getdict("EXTENSIONS"))
    extensions["scrapy.extensions.closespider.CloseSpider"] = None
    settings.set("EXTENSIONS", extensions, priority="project")
    return settings


def worker_settings(redis_url: str, prefix: str) -> dict[str, Any]:
    return {
        "SCHEDULER": "crawlers.frontier.SharedScheduler",
        "DUPEFILTER_CLASS": "crawlers.frontier.CanonicalRedisDupeFilter",
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
    """scrapy-redis's scheduler whose worker says `busy` in Redis before it takes a request from the queue."""

    presence: "WorkerPresence | None" = None

    def next_request(self) -> Any:
        if self.presence is None:
            return super().next_request()
        return self.presence.take(super().next_request)


class PublishPages(Storage):
    """The storage of a shared crawl's worker: every page's outcome goes to the crawl's page stream (which every
    worker, this one included, applies to its own state), and the crawl's document set says which worker keeps a
    URL's document."""

    shared = True

    def __init__(self, crawler: Crawler):
        super().__init__(crawler)
        settings = crawler.settings
        self.frontier = Frontier(settings["REDIS_URL"], settings["CRAWL2TUNE_REDIS_PREFIX"], crawler.spider.name,
                                 settings["CRAWL2TUNE_WORKER"])

    def open_spider(self) -> None:
        self.spider.started = self.frontier.join()  # one crawl, one start, whichever worker came first

    def duplicate(self, item: FetchedPage) -> bool:
        # the other workers' documents are not all in this state yet; a 304 claims its document too, as storing
        # it would
        first = self.frontier.claim(item.url)
        return not first and not item.not_modified

    def store(self, item: FetchedPage) -> None:
        if item.not_modified:  # the other workers' states may not hold it: send the whole stored document
            record = self.spider.store.stored_document(item.url)
        else:
            assert item.document is not None
            record = document_record(item.document, status=item.status, etag=item.etag,
                                     last_modified=item.last_modified, fetched_url=item.fetched_url, links=item.links)
        self.frontier.publish(record)

    def dropped(self, item: FetchedPage, reason: str) -> None:
        self.frontier.publish(dropped_record(
            item.url, source=item.source, status=item.status, reason=reason, fetched_url=item.fetched_url,
            etag=item.etag, last_modified=item.last_modified, links=item.links, not_modified=item.not_modified,
        ))

    def failed(self, url: str, *, status: int | None, reason: str, fetched_url: str, keep: bool) -> None:
        self.frontier.publish(dropped_record(url, source=self.spider.source.name, status=status, reason=reason,
                                             fetched_url=fetched_url, keep=keep))

    async def finish(self, reason: str) -> None:
        """Leave the shared crawl (`Frontier.finish`); `crawl2tune/left` in the stats says the worker did, with
        its state complete."""
        stats = self.crawler.stats
        try:
            await self.frontier.finish(self.spider.store, self.spider.changes, reason)
            stats.set_value("crawl2tune/left", True)
        finally:
            stats.set_value("crawl2tune/published", self.frontier.published)
            stats.set_value("crawl2tune/ingested", self.frontier.ingested)


class WorkerPresence:
    """Scrapy extension of a shared crawl's worker: heartbeat, no closing while other workers are busy, the
    page stream applied to this worker's state as the crawl goes, and the crawl's shared `max_pages`."""

    def __init__(self, crawler: Crawler):
        self.crawler = crawler
        self.max_pages = crawler.settings.getint("CLOSESPIDER_PAGECOUNT")
        self.frontier: Frontier | None = None
        self.state = ""
        self.waiting = False
        self.stopping = False
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
        crawler.signals.connect(extension.response_received, signal=signals.response_received)
        return extension

    def spider_opened(self, spider: Spider) -> None:
        storage = self.crawler.get_item_pipeline(PublishPages)
        assert storage is not None  # configured by the same setting
        self.frontier = storage.frontier
        scheduler = self.crawler.engine.scheduler if self.crawler.engine else None
        if isinstance(scheduler, SharedScheduler):
            scheduler.presence = self
        self._set("busy")
        self.loop = task.LoopingCall(self.heartbeat)
        self.loop.start(HEARTBEAT_SECONDS, now=False)

    def _set(self, state: str) -> None:
        if self.frontier is not None:
            self.frontier.set_state(state)
        self.state = state

    def take(self, pop: Callable[[], Any]) -> Any:
        """Pop a request from the shared queue, saying `busy` first; an idle worker that found nothing is
        idle again."""
        before = self.state
        if before != "busy":
            self._set("busy")
        request = pop()
        if request is not None:
            self.waiting = False
        elif before == "idle":
            self._set("idle")
        return request

    def heartbeat(self) -> None:
        assert self.frontier is not None
        if self.frontier.leaving:
            return  # closing: `Frontier.finish` says `leaving` and takes the rest of the stream
        self.beats += 1
        if self.beats % int(2 / HEARTBEAT_SECONDS) == 0:  # refresh the TTL every 2 s
            self._set(self.state or "busy")
        if self.beats % INGEST_EVERY == 0:
            spider = self.crawler.spider
            self.frontier.ingest(spider.store, spider.changes)
        if self.max_pages and self.frontier.pages() >= self.max_pages:
            self.stop()  # another worker's response reached the crawl's max_pages
        if self.waiting:
            # wake the engine now rather than at its own 5-second heartbeat: it pulls from the queue, or
            # finds itself idle again and asks spider_idle whether to close
            slot = getattr(self.crawler.engine, "_slot", None)
            if slot is not None:
                slot.nextcall.schedule()

    def response_received(self, response: Any, request: Any, spider: Spider) -> None:
        """Every response counts towards the crawl's `max_pages`, as with Scrapy's CLOSESPIDER_PAGECOUNT."""
        if self.max_pages and self.frontier is not None and self.frontier.count_page() >= self.max_pages:
            self.stop()

    def stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        assert self.frontier is not None
        self.frontier.cut(STOPPED)
        deferred_from_coro(self.crawler.engine.close_spider_async(reason=STOPPED))

    def spider_idle(self, spider: Spider) -> None:
        if self.state != "idle":
            self._set("idle")
        assert self.frontier is not None
        if not self.frontier.quiet():
            self.waiting = True
            raise DontCloseSpider  # another worker's pages may still add links to the queue

    def spider_closed(self, spider: Spider, reason: str) -> None:
        if self.loop is not None and self.loop.running:
            self.loop.stop()
