"""Downloader middlewares of our own (everything else is Scrapy's)."""

from __future__ import annotations

from urllib.parse import urldefrag, urlsplit

from scrapy import Request
from scrapy.crawler import Crawler
from scrapy.downloadermiddlewares.redirect import RedirectMiddleware
from scrapy.exceptions import IgnoreRequest
from scrapy.http import Response

from crawlers.urls import canonical_url


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


class ConditionalRequestMiddleware:
    """Send If-None-Match / If-Modified-Since with the validators the previous crawl stored for a URL, so
    an unchanged page costs a 304 without a body (the spider then keeps the stored document)."""

    def __init__(self, crawler: Crawler):
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> "ConditionalRequestMiddleware":
        return cls(crawler)

    def process_request(self, request: Request) -> None:
        known = getattr(self.crawler.spider, "known", None)
        if not known or request.meta.get("sitemap") or request.meta.get("playwright"):  # the browser needs the body
            return
        page = known.get(canonical_url(request.url))
        if page is None:
            return
        sent = False
        if page.etag and b"If-None-Match" not in request.headers:
            request.headers[b"If-None-Match"] = page.etag
            sent = True
        if page.last_modified and b"If-Modified-Since" not in request.headers:
            request.headers[b"If-Modified-Since"] = page.last_modified
            sent = True
        if sent:
            self.crawler.stats.inc_value("crawl2tune/conditional_requests")


class RedirectLoop(IgnoreRequest):
    """A redirect leads back to a URL already in its own chain."""


class CanonicalRedirectMiddleware(RedirectMiddleware):
    """Scrapy's redirects, aware of canonical URLs and of loops.

    A redirect between two variants of one canonical URL (`/guide` -> `/guide/`) would be dropped by the
    duplicate filter, which sees both as one page; it is let through. A redirect back to a URL already
    visited in the same chain is a loop and fails at once with `RedirectLoop` (a reason of its own),
    instead of running to REDIRECT_MAX_TIMES.
    """

    def process_response(self, request: Request, response: Response, spider: object = None) -> Request | Response:
        result = super().process_response(request, response)
        if isinstance(result, Request) and result is not request:
            chain = result.meta.get("redirect_urls") or [request.url]
            target = urldefrag(result.url)[0]
            if target in {urldefrag(url)[0] for url in chain}:
                raise RedirectLoop(f"redirect loop: {' -> '.join([*chain, result.url])}")
            if canonical_url(result.url) == canonical_url(request.url):
                result.dont_filter = True
        return result
