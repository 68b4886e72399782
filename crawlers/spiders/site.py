"""The one spider: crawls a configured source within its scope and yields one document per HTML page."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterator
from urllib.parse import unquote, urldefrag, urlsplit

import scrapy
from scrapy.http import HtmlResponse, Response
from scrapy.linkextractors import LinkExtractor

from configs import SourceConfig
from crawlers.document import Document, text_hash
from crawlers.encoding import decode_html
from crawlers.extract import extract

HTML_TYPES = ("text/html", "application/xhtml+xml")
HOME_CRUMBS = {"home", "홈", "메인", "main", "top", "처음"}


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


class SiteSpider(scrapy.Spider):
    name = "site"

    def __init__(self, source: SourceConfig, local_proxy: str | None = None, **kwargs: Any):
        super().__init__(name=source.name, **kwargs)
        self.source = source
        self.local_proxy = local_proxy
        self.start_urls = list(source.start_urls)
        self.allowed_domains = source.domains
        self.links = LinkExtractor(
            allow=source.include or (),
            deny=source.exclude or (),
            unique=True,
        )

    def parse(self, response: Response, **kwargs: Any) -> Iterator[Any]:
        stats = self.crawler.stats
        ctype = response.headers.get(b"Content-Type", b"").decode("latin-1").split(";")[0].strip().lower()
        if ctype and ctype not in HTML_TYPES:
            stats.inc_value("crawl2tune/dropped/not_html")
            return
        html = decode_html(response.body, response.headers.get(b"Content-Type", b"").decode("latin-1") or None)
        url = urldefrag(response.url)[0]
        page = extract(html, url, content_selector=self.source.content_selector)
        category = self.source.category or category_from(page.breadcrumb, page.title, url) or self.source.name
        text = page.text.strip()
        yield {
            "document": Document(
                url=url,
                source=self.source.name,
                title=page.title or url,
                category=category,
                text=text,
                language=page.language,
                content_hash=text_hash(text),
                fetched_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            ),
            "status": response.status,
            "etag": (response.headers.get(b"ETag") or b"").decode("latin-1") or None,
            "last_modified": (response.headers.get(b"Last-Modified") or b"").decode("latin-1") or None,
        }
        # Follow links in our decoding of the page, not Scrapy's guess (undeclared EUC-KR pages).
        decoded = HtmlResponse(response.url, body=html.encode("utf-8"), encoding="utf-8", request=response.request)
        yield from decoded.follow_all(self.links.extract_links(decoded), callback=self.parse)
