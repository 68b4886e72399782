"""Item pipelines: each returns the item or drops it with a reason counted in the crawl stats."""

from __future__ import annotations

from typing import Any

from scrapy.crawler import Crawler
from scrapy.exceptions import DropItem

from crawlers.store import PageStore


class _Component:
    def __init__(self, crawler: Crawler):
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> "_Component":
        return cls(crawler)

    def drop(self, reason: str, url: str) -> DropItem:
        self.crawler.stats.inc_value(f"crawl2tune/dropped/{reason}")
        return DropItem(f"{reason}: {url}")


class RequireContent(_Component):
    """Pages whose main content is empty never reach the state."""

    def process_item(self, item: dict[str, Any]) -> dict[str, Any]:
        doc = item["document"]
        if not doc.text.strip():
            raise self.drop("empty", doc.url)
        return item


class StoreDocument(_Component):
    """Write each document to the SQLite state as it arrives, and count new/changed/unchanged pages."""

    def open_spider(self) -> None:
        self.store = PageStore(self.crawler.settings["CRAWL2TUNE_STATE"])
        self.changes: dict[str, list[str]] = {"new": [], "changed": [], "unchanged": []}

    def process_item(self, item: dict[str, Any]) -> dict[str, Any]:
        doc = item["document"]
        change = self.store.save_document(
            doc, status=item["status"], etag=item["etag"], last_modified=item["last_modified"]
        )
        self.changes[change].append(doc.url)
        return item

    def close_spider(self) -> None:
        self.crawler.stats.set_value("crawl2tune/changes", self.changes)
        self.store.close()
