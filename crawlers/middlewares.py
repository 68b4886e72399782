"""Downloader middlewares of our own (everything else is Scrapy's)."""

from __future__ import annotations

from urllib.parse import urldefrag, urljoin, urlsplit

from scrapy import Request
from scrapy.crawler import Crawler
from scrapy.downloadermiddlewares.redirect import RedirectMiddleware
from scrapy.exceptions import IgnoreRequest
from scrapy.http import Response
from scrapy.utils.defer import deferred_from_coro
from scrapy.utils.httpobj import urlparse_cached

from crawlers.auth import FINISH_REASON, AuthFailed

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


class AuthMiddleware:
    """A source's login (`crawlers.auth.Credentials`, the spider's `credentials`): its headers go with requests for
    the source's hosts and never with any other; a refused request (401, 403, a redirect to the login page) stops
    the source's crawl as `auth_failed`, which retires nothing."""

    def __init__(self, crawler: Crawler):
        self.crawler = crawler
        self.stopping = False

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> "AuthMiddleware":
        return cls(crawler)

    def process_request(self, request: Request) -> None:
        credentials = getattr(self.crawler.spider, "credentials", None)
        if credentials is None:
            return
        ours = credentials.covers(urlparse_cached(request).hostname)
        for name, value in credentials.headers.items():
            if ours:
                request.headers[name] = value
            else:
                request.headers.pop(name, None)

    def process_response(self, request: Request, response: Response) -> Response:
        credentials = getattr(self.crawler.spider, "credentials", None)
        if credentials is None or not credentials.covers(urlparse_cached(request).hostname):
            return response
        if request.meta.get("dont_obey_robotstxt"):  # robots.txt: refused or not, the pages' answers decide
            return response
        location = response.headers.get(b"Location", b"").decode("latin-1")
        to_login = credentials.login_path is not None and 300 <= response.status < 400 and location and \
            urlsplit(urljoin(request.url, location)).path == credentials.login_path
        if response.status in (401, 403) or to_login:
            if not self.stopping:
                self.stopping = True
                deferred_from_coro(self.crawler.engine.close_spider_async(reason=FINISH_REASON))
            raise AuthFailed(f"the site refused the login: {response.status} for {request.url}")
        return response
