"""Item pipelines: each returns the item or drops it with a reason counted in the crawl stats.

Every fetched page reaches the state through the crawl's `Storage`: documents as items, dropped pages through the
`item_dropped` signal, with their reason, validators and outlinks (a 304 next time keeps the reason).
"""

from __future__ import annotations

from typing import Any

from scrapy import signals
from scrapy.crawler import Crawler
from scrapy.exceptions import DropItem, NotConfigured

from crawlers.items import FetchedPage


BOILERPLATE_LINK_SHARE = 0.8


class _Component:
    def __init__(self, crawler: Crawler):
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> "_Component":
        return cls(crawler)

    def drop(self, reason: str, url: str) -> DropItem:
        self.crawler.stats.inc_value(f"crawl2tune/dropped/{reason}")
        return PageDropped(reason, url)


class PageDropped(DropItem):
    def __init__(self, reason: str, url: str):
        super().__init__(f"{reason}: {url}")
        self.reason = reason


class RequireDocument(_Component):
    """Pages that are not HTML, binary, empty, or whose extracted text is mostly the words of the page's
    links (navigation, a list of links) never become documents."""

    def process_item(self, item: FetchedPage) -> FetchedPage:
        if item.reason:
            raise self.drop(item.reason, item.url)
        if not item.not_modified and (item.document is None or not item.document.text.strip()):
            raise self.drop("empty", item.url)
        if item.link_share >= BOILERPLATE_LINK_SHARE:
            raise self.drop("boilerplate", item.url)
        return item


class Storage(_Component):
    """Where a crawl's pages go: the one seam between a crawl of its own and a worker of a shared crawl.

    `StoreDocument` writes every page to this process's state; `crawlers.frontier.PublishPages` publishes it to
    the shared crawl's page stream, which every worker applies to its own state. Both are configured in
    `crawlers.settings` and exactly one is used: the other raises NotConfigured, by the `CRAWL2TUNE_WORKER`
    setting (set for `crawl --worker`). The spider reaches the one in use with `crawler.get_item_pipeline(Storage)`.

    One document per canonical URL per crawl: a second fetched URL naming the same `rel=canonical` is a
    duplicate (its links were still followed).
    """

    shared = False  # whether this storage serves a worker of a shared crawl

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> "Storage":
        if bool(crawler.settings.get("CRAWL2TUNE_WORKER")) != cls.shared:
            raise NotConfigured
        pipeline = cls(crawler)
        crawler.signals.connect(pipeline.item_dropped, signal=signals.item_dropped)
        return pipeline

    @property
    def spider(self) -> Any:
        return self.crawler.spider

    def process_item(self, item: FetchedPage) -> FetchedPage:
        if self.duplicate(item):
            raise self.drop("duplicate", item.url)
        self.store(item)
        return item

    def item_dropped(self, item: FetchedPage, exception: BaseException) -> None:
        reason = getattr(exception, "reason", "dropped")
        if reason != "duplicate":  # a duplicate is another URL's document
            self.dropped(item, reason)

    def duplicate(self, item: FetchedPage) -> bool:
        raise NotImplementedError

    def store(self, item: FetchedPage) -> None:
        """Store a page that is a document (or a 304 of one)."""
        raise NotImplementedError

    def dropped(self, item: FetchedPage, reason: str) -> None:
        """Record a fetched page that gave no document, and why."""
        raise NotImplementedError

    def failed(self, url: str, *, status: int | None, reason: str, fetched_url: str, keep: bool) -> None:
        """Record a request that gave no response to use (`keep`: a transient failure keeps the document)."""
        raise NotImplementedError

    async def finish(self, reason: str) -> None:
        """The crawl ended with `reason`: whatever the storage still owes the state (the spider closes it after)."""
        raise NotImplementedError


class StoreDocument(Storage):
    """Write each page to the SQLite state as it arrives, and list it as new/changed/unchanged/removed; a
    complete crawl (not interrupted, not cut by max_pages) then retires the pages it no longer reached."""

    def duplicate(self, item: FetchedPage) -> bool:
        spider = self.spider
        return not item.not_modified and spider.store.seen_since(item.url, spider.started, fetched_url=item.fetched_url)

    def store(self, item: FetchedPage) -> None:
        spider = self.spider
        if item.not_modified:
            change = spider.store.not_modified(item.url)
        else:
            assert item.document is not None
            change = spider.store.save_document(
                item.document, status=item.status, etag=item.etag, last_modified=item.last_modified,
                fetched_url=item.fetched_url, links=item.links,
            )
        spider.changes[change].append(item.url)

    def dropped(self, item: FetchedPage, reason: str) -> None:
        spider = self.spider
        if item.not_modified:
            spider.store.not_modified(item.url, document=False)
            return
        removed = spider.store.drop(
            item.url, source=item.source, status=item.status, reason=reason, fetched_url=item.fetched_url,
            etag=item.etag, last_modified=item.last_modified, links=item.links,
        )
        if removed:
            spider.changes["removed"].append(item.url)

    def failed(self, url: str, *, status: int | None, reason: str, fetched_url: str, keep: bool) -> None:
        spider = self.spider
        if spider.store.drop(url, source=spider.source.name, status=status, reason=reason, fetched_url=fetched_url,
                             keep=keep):
            spider.changes["removed"].append(url)

    async def finish(self, reason: str) -> None:
        if reason == "finished":
            spider = self.spider
            spider.changes["removed"] += spider.store.retire_unseen(spider.source.name, since=spider.started)
            spider.changes["removed"].sort()
