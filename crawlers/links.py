"""Which links of a page the crawl follows: a source's scope, and the in-scope links of a parsed page.

The rules are Scrapy's LinkExtractor's (`a`/`area` hrefs and `frame`/`iframe` srcs resolved against `<base>`, include/exclude regexes on
the full URL, no links to binary file types by extension, hosts and their subdomains), applied to a tree the
worker has parsed anyway. Scrapy's LinkExtractor costs about twice as much per page (it builds a `Link` with
its text for every anchor, in-scope or not), and its domain check compares host *and port*, so it rejects
every link of a site on a non-default port.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urljoin, urlsplit

from lxml import etree
from scrapy.linkextractors import IGNORED_EXTENSIONS
from w3lib.html import strip_html5_whitespace
from w3lib.url import safe_url_string

from crawlers.urls import clean_url

# Never pages; the attachment kinds a source reads (`LinkRules.attachments`) are followed by `attachment_links`.
DENIED_EXTENSIONS = frozenset(f".{ext}" for ext in IGNORED_EXTENSIONS) | {".hwp", ".hwpx"}


@dataclass(frozen=True)
class LinkRules:
    """A source's scope, in a form worker processes can receive and cache on."""

    domains: tuple[str, ...]
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    attachments: tuple[str, ...] = ()
    """Extensions of the linked files read as documents (`crawlers.attachments.extensions`)."""


@lru_cache(maxsize=32)
def _compiled(patterns: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(p) for p in patterns)


def in_domains(url: str, domains: tuple[str, ...] | list[str]) -> bool:
    """Whether `url`'s host is one of `domains` or a subdomain of one (as Scrapy's OffsiteMiddleware judges)."""
    host = (urlsplit(url).hostname or "").lower()
    return bool(host) and any(host == d or host.endswith(f".{d}") for d in (d.lower() for d in domains))


def in_scope(url: str, rules: LinkRules) -> bool:
    """Whether the crawl may follow `url` (absolute, cleaned): http(s), an allowed host, matching an include
    regex (if any) and no exclude regex, not a binary file type."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not in_domains(url, rules.domains):
        return False
    if posixpath.splitext(parts.path)[1].lower() in DENIED_EXTENSIONS:
        return False
    return _included(url, rules)


def attachment_in_scope(url: str, rules: LinkRules) -> bool:
    """Whether `url` is a file of an attachment kind the source reads, on an allowed host, within include/exclude."""
    parts = urlsplit(url)
    return (parts.scheme in ("http", "https") and posixpath.splitext(parts.path)[1].lower() in rules.attachments
            and in_domains(url, rules.domains) and _included(url, rules))


def _included(url: str, rules: LinkRules) -> bool:
    include, exclude = _compiled(rules.include), _compiled(rules.exclude)
    return (not include or any(r.search(url) for r in include)) and not any(r.search(url) for r in exclude)


def page_links(tree: etree._Element, page_url: str, rules: LinkRules) -> list[str]:
    """The in-scope links of a parsed page, cleaned (no fragment, no tracking parameters), in document
    order, each once. A frame's or an iframe's `src` is a link: a frameset's content and navigation are
    pages of their own, crawled (and judged document or navigation) like any other."""
    base = _base(tree, page_url)
    links: dict[str, None] = {}
    for element in tree.iter("a", "area", "frame", "iframe"):
        href = element.get("src" if element.tag in ("frame", "iframe") else "href")
        if not href or href.startswith("#"):
            continue
        url = urljoin(base, strip_html5_whitespace(href))
        if not in_domains(url, rules.domains):  # most links of a page lead elsewhere: judge them cheaply
            continue
        url = clean_url(safe_url_string(url, "utf-8"))
        if url not in links and in_scope(url, rules):
            links[url] = None
    return list(links)


def attachment_links(tree: etree._Element, page_url: str, rules: LinkRules) -> dict[str, str]:
    """The page's links to attachments in scope (by extension), cleaned, each once, with its link text (the
    attachment's title when the file's metadata has none)."""
    if not rules.attachments:
        return {}
    base = None
    found: dict[str, str] = {}
    for element in tree.iter("a", "area"):
        href = element.get("href")
        if not href or posixpath.splitext(urlsplit(href).path)[1].lower() not in rules.attachments:
            continue
        base = base or _base(tree, page_url)
        url = clean_url(safe_url_string(urljoin(base, strip_html5_whitespace(href)), "utf-8"))
        if url not in found and attachment_in_scope(url, rules):
            found[url] = " ".join(" ".join(element.itertext()).split()) or element.get("title") or ""
    return found


def _base(tree: etree._Element, page_url: str) -> str:
    for element in tree.iter("base"):
        if element.get("href"):
            return urljoin(page_url, strip_html5_whitespace(element.get("href")))
    return page_url


def link_words(tree: etree._Element) -> str:
    """The text of every link of the page: what navigation-only 'content' is made of."""
    return " ".join(" ".join(a.itertext()) for a in tree.iter("a"))
