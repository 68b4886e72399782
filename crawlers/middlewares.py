"""Downloader middlewares of our own (everything else is Scrapy's)."""

from __future__ import annotations

from urllib.parse import urlsplit

from scrapy import Request
from scrapy.crawler import Crawler


class ServeDirProxyMiddleware:
    """Route a served source's requests to its local folder server, which acts as the site's proxy."""

    def __init__(self, crawler: Crawler):
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> "ServeDirProxyMiddleware":
        return cls(crawler)

    def process_request(self, request: Request) -> None:
        proxy = getattr(self.crawler.spider, "local_proxy", None)
        if proxy and urlsplit(request.url).scheme == "http":
            request.meta["proxy"] = proxy
