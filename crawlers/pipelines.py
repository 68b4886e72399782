"""Item pipelines: each returns the item or drops it with a reason counted in the crawl stats.

Every fetched page reaches the state: documents through `StoreDocument`, dropped pages through the
`item_dropped` signal, with their reason, validators and outlinks (a 304 next time keeps the reason). A worker
of a shared crawl publishes them to every worker's state instead (`ops.frontier`).
"""

from __future__ import annotations

from scrapy import signals
from scrapy.crawler import Crawler
from scrapy.exceptions import DropItem

from crawlers.items import FetchedPage
from crawlers.store import document_record, dropped_record


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


class DropDuplicates(_Component):
    """One document per canonical URL per crawl: a second fetched URL naming the same `rel=canonical`
    is a duplicate (its links were still followed)."""

    def process_item(self, item: FetchedPage) -> FetchedPage:
        spider = self.crawler.spider
        if spider.frontier is not None:  # the other workers' documents are not all in this state yet
            first = spider.frontier.claim(item.url)  # a 304 claims its document too, as storing it would
            duplicate = not first and not item.not_modified
        else:
            duplicate = not item.not_modified and spider.store.seen_since(
                item.url, spider.started, fetched_url=item.fetched_url)
        if duplicate:
            raise self.drop("duplicate", item.url)
        return item


class StoreDocument(_Component):
    """Write each page to the SQLite state as it arrives, and list it as new/changed/unchanged/removed."""

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> "StoreDocument":
        pipeline = cls(crawler)
        crawler.signals.connect(pipeline.item_dropped, signal=signals.item_dropped)
        return pipeline

    def process_item(self, item: FetchedPage) -> FetchedPage:
        spider = self.crawler.spider
        if spider.frontier is not None:
            if item.not_modified:  # the other workers' states may not hold it: send the whole stored document
                record = spider.store.stored_document(item.url)
            else:
                assert item.document is not None
                record = document_record(item.document, status=item.status, etag=item.etag,
                                         last_modified=item.last_modified, fetched_url=item.fetched_url,
                                         links=item.links)
            spider.frontier.publish(record)
            return item
        if item.not_modified:
            change = spider.store.not_modified(item.url)
        else:
            assert item.document is not None
            change = spider.store.save_document(
                item.document, status=item.status, etag=item.etag, last_modified=item.last_modified,
                fetched_url=item.fetched_url, links=item.links,
            )
        spider.changes[change].append(item.url)
        return item

    def item_dropped(self, item: FetchedPage, exception: BaseException) -> None:
        spider = self.crawler.spider
        reason = getattr(exception, "reason", "dropped")
        if reason == "duplicate":
            return  # the page is another URL's document
        if spider.frontier is not None:
            spider.frontier.publish(dropped_record(
                item.url, source=item.source, status=item.status, reason=reason, fetched_url=item.fetched_url,
                etag=item.etag, last_modified=item.last_modified, links=item.links, not_modified=item.not_modified,
            ))
            return
        if item.not_modified:
            spider.store.not_modified(item.url, document=False)
            return
        removed = spider.store.drop(
            item.url, source=item.source, status=item.status, reason=reason, fetched_url=item.fetched_url,
            etag=item.etag, last_modified=item.last_modified, links=item.links,
        )
        if removed:
            spider.changes["removed"].append(item.url)
