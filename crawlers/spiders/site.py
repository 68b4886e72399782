"""The one spider: crawls a configured source within its scope and yields one item per fetched page.

Scope, bounds and politeness are Scrapy's own (allowed_domains, LinkExtractor allow/deny, DEPTH_LIMIT,
CLOSESPIDER_PAGECOUNT, robots.txt, AutoThrottle; see `crawlers.settings` and `crawlers.crawl`). The spider
decides what a response is: a document, a linked file read as one (`crawlers.attachments`), a page that
cannot be one (with a reason), a 304 that keeps the stored document, or a failure that is recorded and, when
transient, keeps the stored document too.
"""

from __future__ import annotations

import codecs
import re
from datetime import datetime, timezone
from typing import Any, AsyncIterator, Iterable, Iterator
from urllib.parse import unquote, urlsplit

import scrapy
from scrapy import Request
from scrapy.crawler import Crawler
from scrapy.exceptions import (
    CannotResolveHostError,
    DownloadCancelledError,
    DownloadConnectionRefusedError,
    DownloadTimeoutError,
    IgnoreRequest,
)
from scrapy.http import Response
from scrapy.spidermiddlewares.httperror import HttpError
from scrapy.utils.gz import gunzip, gzip_magic_number
from scrapy.utils.sitemap import Sitemap, sitemap_urls_from_robots
from twisted.internet.error import TimeoutError as TwistedTimeoutError
from twisted.python.failure import Failure

from base.state import now
from configs import SourceConfig
from crawlers import attachments
from crawlers.document import Document, text_hash
from crawlers.items import FetchedPage
from crawlers.middlewares import RedirectLoop
from crawlers.links import LinkRules, attachment_in_scope, in_domains, in_scope
from crawlers.pages import PagePool
from crawlers.pipelines import Storage
from crawlers import render
from crawlers.store import PageStore
from crawlers.urls import canonical_url, clean_url

HTML_TYPES = ("text/html", "application/xhtml+xml")
HOME_CRUMBS = {"home", "홈", "메인", "main", "top", "처음"}
# Signatures of formats that are never HTML, whatever the Content-Type says.
BINARY_MAGIC = (
    b"%PDF", b"\x89PNG", b"GIF8", b"\xff\xd8\xff", b"PK\x03\x04", b"\x1f\x8b", b"\x7fELF", b"MZ", b"Rar!",
    b"7z\xbc\xaf", b"OggS", b"ID3", b"RIFF", b"wOFF", b"wOF2", b"\x00\x00\x01\x00", b"\xd0\xcf\x11\xe0",
)
UNICODE_BOMS = (codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
GONE = {404, 410}


def category_from(breadcrumb: list[str], title: str, url: str) -> str | None:
    """The breadcrumb trail between 'Home' and the page itself, else the first URL path segment."""
    crumbs = [c.strip() for c in breadcrumb if c.strip()]
    if crumbs and crumbs[0].lower() in HOME_CRUMBS:
        crumbs = crumbs[1:]
    if crumbs and (len(crumbs) > 1 or crumbs[-1] in title):
        crumbs = crumbs[:-1]  # the last crumb is the page itself
    if crumbs:
        return " > ".join(crumbs)
    segments = [s for s in urlsplit(url).path.split("/") if s]
    if len(segments) > 1:
        return unquote(segments[0])
    return None


def looks_binary(body: bytes) -> bool:
    head = body[:1024]
    if head.startswith(UNICODE_BOMS):
        return False
    return head.startswith(BINARY_MAGIC) or b"\x00" in head


def failure_reason(failure: Failure) -> tuple[str, int | None]:
    """A short reason for a request that produced no usable response, and the HTTP status if there was one."""
    exc = failure.value
    if isinstance(exc, HttpError):
        return f"http_{exc.response.status}", exc.response.status
    if isinstance(exc, RedirectLoop):
        return "redirect_loop", None
    if isinstance(exc, (DownloadTimeoutError, TwistedTimeoutError, TimeoutError)):
        return "timeout", None
    if isinstance(exc, DownloadCancelledError):
        return "too_large", None
    if isinstance(exc, DownloadConnectionRefusedError):
        return "connection_refused", None
    if isinstance(exc, CannotResolveHostError):
        return "dns_error", None
    if isinstance(exc, IgnoreRequest):
        message = str(exc).lower()
        for needle, reason in (("robots.txt", "robots_txt"), ("max redirections", "too_many_redirects"),
                               ("offsite", "offsite"), ("max_size", "too_large"), ("maxsize", "too_large")):
            if needle in message:
                return reason, None
        return "ignored", None
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower(), None


def _header(response: Response, name: bytes) -> str | None:
    value = response.headers.get(name)
    return value.decode("latin-1") if value else None


class SiteSpider(scrapy.Spider):
    name = "site"
    handle_httpstatus_list = [304]  # answers to our conditional requests reach `parse`

    def __init__(
        self,
        source: SourceConfig,
        local_proxy: str | None = None,
        pool: PagePool | None = None,
        started: str | None = None,
        **kwargs: Any,
    ):
        super().__init__(name=source.name, **kwargs)
        self.source = source
        self.local_proxy = local_proxy
        self.pool = pool or PagePool(0)
        self.started = started or now()  # the crawl's start; a resumed crawl keeps the first run's (and see Storage)
        self.start_urls = list(source.start_urls)
        self.allowed_domains = source.domains
        self.rules = LinkRules(tuple(source.domains), tuple(source.include), tuple(source.exclude),
                               attachments.extensions(source.attachments))
        self.changes: dict[str, list[str]] = {"new": [], "changed": [], "unchanged": [], "removed": []}

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> "SiteSpider":
        spider = super().from_crawler(crawler, *args, **kwargs)
        spider.store = PageStore(crawler.settings["CRAWL2TUNE_STATE"])
        spider.known = spider.store.known(spider.source.name)
        spider.max_depth = crawler.settings.getint("DEPTH_LIMIT")
        spider.browser = crawler.settings.get("CRAWL2TUNE_BROWSER")
        return spider

    @property
    def storage(self) -> Storage:
        """Where the pages go (`crawlers.pipelines.Storage`: this state, or a shared crawl's page stream)."""
        storage = self.crawler.get_item_pipeline(Storage)
        assert storage is not None, "crawlers.settings configures a Storage pipeline"
        return storage

    async def closed(self, reason: str) -> None:
        try:
            await self.storage.finish(reason)
        finally:
            self.crawler.stats.set_value("crawl2tune/changes", self.changes)
            self.store.close()

    # --- requests -------------------------------------------------------------------------------

    def page_request(self, url: str, **meta: Any) -> Request:
        if self.source.render == "always" and self.browser:
            meta.update(render.render_meta())
        return Request(url, callback=self.parse, errback=self.failed, meta=meta)

    async def start(self) -> AsyncIterator[Request]:
        # Unlike Scrapy's default, start requests go through the duplicate filter: `/` and `/index.html`
        # are one page, and a resumed crawl does not fetch its start pages again.
        for url in self.start_urls:
            yield self.page_request(clean_url(url))
        for url in self.source.sitemap_urls:
            yield Request(url, callback=self.parse_sitemap, errback=self.failed, meta={"sitemap": True})

    def follow(self, links: Iterable[str]) -> Iterator[Request]:
        for link in links:
            yield self.page_request(link)

    # --- responses ------------------------------------------------------------------------------

    async def parse(self, response: Response, **kwargs: Any) -> AsyncIterator[Any]:
        fetched = canonical_url(response.url)
        if response.status == 304:
            for output in self.not_modified(response, fetched):
                yield output
            return
        validators = dict(etag=_header(response, b"ETag"), last_modified=_header(response, b"Last-Modified"))
        content_type = _header(response, b"Content-Type")
        mime = (content_type or "").split(";")[0].strip().lower()
        if mime not in HTML_TYPES:
            kind = attachments.kind_of(response.url, response.body, content_type,
                                       _header(response, b"Content-Disposition"))
            if kind in self.source.attachments:
                yield await self.attachment(response, kind, fetched, validators)
                return
        reason = "not_html" if mime and mime not in HTML_TYPES else "binary" if looks_binary(response.body) else None
        if reason:
            yield FetchedPage(self.source.name, fetched, fetched, response.status, reason=reason, **validators)
            return

        try:
            content = await self.pool.process(
                response.body, content_type, response.url, self.rules,
                self.source.content_selector, self.source.category_selector,
            )
        except Exception as err:  # a page the extractor cannot handle is one dropped page, not a failed crawl
            self.logger.warning("extraction failed for %s", response.url, exc_info=True)
            yield FetchedPage(self.source.name, fetched, fetched, response.status,
                              reason=getattr(err, "reason", "extraction_error"), **validators)
            return
        url = self.document_url(content.page.canonical_url, fetched)
        title = content.page.title or url
        text = content.page.text.strip()
        static = self.source.render != "never" and not render.rendered(response)
        if static and render.needs_rendering(response.body, text):
            if self.browser:  # the static HTML is a shell its scripts fill in: the browser's turn
                self.crawler.engine.crawl(render.render_again(response))
            else:  # no validators kept: once a browser is installed, the next crawl fetches it in full
                yield FetchedPage(self.source.name, fetched, fetched, response.status, reason="needs_browser")
            return
        document = Document(
            url=url,
            source=self.source.name,
            title=title,
            category=self.source.category or category_from(content.page.breadcrumb, title, url) or self.source.name,
            text=text,
            language=content.page.language,
            content_hash=text_hash(text),
            fetched_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        yield FetchedPage(self.source.name, url, fetched, response.status, document=document,
                          links=[*content.links, *content.attachments], link_share=content.link_share, **validators)
        for request in self.follow(content.links):
            yield request
        for link, text in content.attachments.items():
            yield self.page_request(link, link_text=text, link_category=document.category)

    async def attachment(self, response: Response, kind: str, fetched: str, validators: dict) -> FetchedPage:
        """A linked file as a document: its title from its metadata, else the link's text (else the title it
        had before, when reached through a page that answered 304, else its file name); the category of the
        page linking it."""
        meta = response.meta
        stored = self.store.labels(fetched) if "link_category" not in meta else None
        title = meta.get("link_text") or (stored and stored[0]) or attachments.file_name(fetched)
        category = (self.source.category or meta.get("link_category") or (stored and stored[1])
                    or category_from([], title, fetched) or self.source.name)
        try:
            document = await self.pool.read_attachment(
                response.body, kind, url=fetched, source=self.source.name, title=title, category=category,
                fetched_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            )
        except Exception as err:  # an unreadable file is one dropped page, not a failed crawl
            self.logger.info("no document from %s: %s", response.url, err)
            return FetchedPage(self.source.name, fetched, fetched, response.status,
                               reason=getattr(err, "reason", "extraction_error"), **validators)
        self.crawler.stats.inc_value(f"crawl2tune/attachments/{kind}")
        return FetchedPage(self.source.name, fetched, fetched, response.status, document=document, **validators)

    def document_url(self, declared: str | None, fetched: str) -> str:
        """The page's `rel=canonical` if it names an http(s) URL on an allowed domain, else where it was fetched."""
        if declared and urlsplit(declared).scheme in ("http", "https") and in_domains(declared, self.rules.domains):
            return canonical_url(declared)
        return fetched

    def not_modified(self, response: Response, fetched: str) -> Iterator[Any]:
        """304: nothing to extract; the stored document (or the stored reason it is none) stands and the
        stored outlinks are followed."""
        known = self.known.get(fetched)
        if known is None:  # a 304 to a request we did not make conditional
            yield FetchedPage(self.source.name, fetched, fetched, 304, reason="unexpected_304")
            return
        self.crawler.stats.inc_value("crawl2tune/not_modified")
        links = self.stored_links(known.url)
        reason = None if known.reason == "unreached" else known.reason  # linked again: the document is back
        yield FetchedPage(self.source.name, known.url, fetched, 304, reason=reason, not_modified=True,
                          etag=known.etag, last_modified=known.last_modified, links=links)
        yield from self.follow(links)

    def failed(self, failure: Failure) -> Iterator[Request]:
        """Errback of every request: record why it gave nothing; a transient failure keeps the stored
        document and follows its stored links, 404/410 takes it out of the dataset."""
        request: Request = failure.request
        reason, status = failure_reason(failure)
        self.crawler.stats.inc_value(f"crawl2tune/dropped/{reason}")
        self.logger.info("no document from %s: %s", request.url, reason)
        if reason in ("robots_txt", "offsite"):
            return
        self.crawler.stats.inc_value("crawl2tune/errors")
        if request.meta.get("sitemap"):
            return
        fetched = canonical_url(request.url)
        known = self.known.get(fetched)
        url = known.url if known else fetched
        transient = status not in GONE and reason != "too_large"
        self.storage.failed(url, status=status, reason=reason, fetched_url=fetched, keep=transient)
        depth = request.meta.get("depth", 0) + 1
        if transient and known is not None and known.live and not (self.max_depth and depth > self.max_depth):
            yield from (self.page_request(link, depth=depth) for link in self.stored_links(url))

    def stored_links(self, url: str) -> list[str]:
        """The stored outlinks of `url` the crawl still follows: pages in scope and the attachments it reads."""
        return [link for link in self.store.links(url)
                if in_scope(link, self.rules) or attachment_in_scope(link, self.rules)]

    # --- sitemaps -------------------------------------------------------------------------------

    def parse_sitemap(self, response: Response) -> Iterator[Request]:
        """Pages listed in a sitemap (or sitemap index, or robots.txt `Sitemap:` lines) that are in scope;
        they count as start pages for `max_depth`."""
        if response.url.endswith("/robots.txt"):
            for url in sitemap_urls_from_robots(response.body, base_url=response.url):
                yield Request(url, callback=self.parse_sitemap, errback=self.failed, meta={"sitemap": True})
            return
        body = response.body
        if gzip_magic_number(response):
            try:
                body = gunzip(body, max_size=self.settings.getint("DOWNLOAD_MAXSIZE"))
            except Exception:
                body = b""
        try:
            sitemap = Sitemap(body)
        except Exception:
            sitemap = None
        if sitemap is None or sitemap.type not in ("sitemapindex", "urlset"):
            self.crawler.stats.inc_value("crawl2tune/dropped/bad_sitemap")
            return
        for entry in sitemap:
            loc = entry.get("loc")
            if not loc:
                continue
            if sitemap.type == "sitemapindex":
                yield Request(loc, callback=self.parse_sitemap, errback=self.failed, meta={"sitemap": True})
            elif in_scope(clean_url(loc), self.rules):
                yield self.page_request(clean_url(loc), depth_reset=True)
