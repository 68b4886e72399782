"""The CPU-heavy part of crawling one page: decode the body, extract the main content, find in-scope links.

It runs in a small pool of worker processes, so extraction uses every core and never stalls Scrapy's
reactor (downloads, AutoThrottle's latency measurements and the progress display keep going while pages
are being extracted). The workers are forked from the crawl process before its reactor starts, so they start
in milliseconds. Linked files (PDF, DOCX, HWPX) are read in the same pool (`crawlers.attachments`).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import re
import signal
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Callable

import lxml.html
from lxml import etree

from crawlers import attachments
from crawlers.document import Document
from crawlers.encoding import decode_html
from crawlers.links import LinkRules, attachment_links, link_words, page_links

if TYPE_CHECKING:  # the extractor itself is imported where it runs (see _warm_up)
    from crawlers.extract import Extraction

LOGGER = logging.getLogger(__name__)
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class PageContent:
    page: Extraction
    """Title, markdown text, breadcrumb, language and canonical URL (see `crawlers.extract`)."""
    links: list[str] = field(default_factory=list)
    link_share: float = 0.0
    """Share of the text's words that are words of the page's link texts: near 1 for navigation only."""
    attachments: dict[str, str] = field(default_factory=dict)
    """In-scope links to attachment files, with their link texts (see `crawlers.links.attachment_links`)."""


def process_page(
    body: bytes,
    content_type: str | None,
    url: str,
    rules: LinkRules,
    content_selector: str | None = None,
    category_selector: str | None = None,
) -> PageContent:
    """Decode `body` (see `crawlers.encoding`), extract its main content and its in-scope outlinks.

    Links are taken from our decoding of the page, not Scrapy's guess, which reads an undeclared EUC-KR
    page as something else and would follow garbled Korean URLs. Raises `UnparsablePage` for a page lxml
    cannot parse.
    """
    from crawlers.extract import extract  # see _warm_up

    html = decode_html(body, content_type)
    tree = _parse(html)
    page = extract(html, url, content_selector=content_selector, category_selector=category_selector)
    if tree is None:
        return PageContent(page)
    return PageContent(page, page_links(tree, url, rules), _link_share(page.text, link_words(tree)),
                       attachment_links(tree, url, rules))


class UnparsablePage(ValueError):
    """lxml could not parse the page, so its links are unknown: the page is dropped with this reason, not
    stored as a page without links (which would end the crawl of its part of the site there)."""

    reason = "unparsable"


def _parse(html: str) -> etree._Element | None:
    """The page's tree for its links; None for a page without markup (only whitespace or comments), which
    has no links and no text either."""
    try:
        return lxml.html.document_fromstring(html)
    except etree.ParserError:  # "Document is empty"
        return None
    except (ValueError, etree.LxmlError) as err:
        raise UnparsablePage(f"lxml cannot parse the page: {err}") from err


def _link_share(text: str, link_text: str) -> float:
    words = Counter(_WORD.findall(text.lower()))
    total = sum(words.values())
    if not total:
        return 0.0
    linked = Counter(_WORD.findall(link_text.lower()))
    return sum(min(n, linked[word]) for word, n in words.items()) / total


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _ignore_sigint() -> None:
    # Ctrl-C reaches the whole process group; the crawl process stops gracefully and still needs its
    # workers to finish the pages in flight.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _ready(_: int) -> int:
    return os.getpid()


def _warm_up() -> None:
    """Import the extractor (trafilatura, a third of a second) and load the language model it loads on first
    use (most of a second). Both wait until a page needs them: a re-crawl answered with 304s needs neither."""
    from crawlers.extract import extract

    extract("<html><body><article><p>" + "Text for the language model to load on. " * 8 + "</p></article></body></html>",
            "http://localhost/")


class PagePool:
    """Runs `process_page` in `workers` worker processes, or in the calling process with `workers=0`.

    With `warm` (a first crawl, which will extract every page) the language model is loaded here, once,
    before the workers are forked, and they share it; otherwise (a re-crawl, mostly 304s that need no
    extraction) each worker loads it only if and when it gets a page.
    """

    def __init__(self, workers: int, *, warm: bool = False):
        self.workers = workers
        self._executor: ProcessPoolExecutor | None = None
        self._warming = warm
        if warm:
            _warm_up()
        if workers > 0:
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            self._executor = ProcessPoolExecutor(workers, mp_context=context, initializer=_ignore_sigint)
            # Start every worker now, while this process has no other threads (forking later, from a
            # running reactor with its thread pool, is not safe).
            list(self._executor.map(_ready, range(workers)))

    async def process(self, *args: object) -> PageContent:
        return await self._run(process_page, *args)

    async def read_attachment(self, *args: object, **kwargs: object) -> Document:
        """`crawlers.attachments.read` in a worker: a PDF's text costs as much as a page's extraction."""
        return await self._run(partial(attachments.read, *args, **kwargs))

    async def _run(self, func: Callable[..., Any], *args: object) -> Any:
        if self._executor is None:
            return func(*args)
        try:
            future = self._executor.submit(func, *args)
            if not self._warming:
                # The first page to extract: the other workers load the language model meanwhile. Not at
                # start, so a re-crawl answered with 304s never pays for it.
                self._warming = True
                for _ in range(self.workers - 1):
                    self._executor.submit(_warm_up)
            return await asyncio.wrap_future(future)
        except BrokenProcessPool:
            # A worker died (out of memory, a crash in a C library): the crawl goes on in this process.
            LOGGER.warning("an extraction worker died; extracting in the crawl process from now on")
            broken, self._executor = self._executor, None
            if broken is not None:
                broken.shutdown(wait=False, cancel_futures=True)
            return func(*args)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
