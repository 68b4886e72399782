"""Pages built by scripts, rendered in the system's headless Chromium through scrapy-playwright.

Only pages that need it pay for a browser: every page is fetched as static HTML first, and one whose HTML has no
main content but script tags (`needs_rendering`) is requested again with `render_meta`, which scrapy-playwright's
download handler renders (the source's `render: always` renders every page). Playwright starts at the first page
to render, not with the crawl, and rendered pages share one download slot bounded by `crawl.render_concurrency`, so
static pages keep the per-host slots to themselves. The browser is Debian's `chromium` (`crawl.browser`), never one
downloaded by `playwright install`; without it such pages are dropped as `needs_browser`. The page's login
goes with its scripts' requests to its own origin, and to no other (`LoginHeaders`).
"""

from __future__ import annotations

import asyncio
import re
import shutil
from typing import Any
from urllib.parse import urlsplit

from scrapy import Request
from scrapy.http import Response
from scrapy.settings import Settings
from scrapy_playwright.handler import ScrapyPlaywrightDownloadHandler
from scrapy_playwright.headers import use_scrapy_headers

from configs import CrawlConfig, HeaderAuth, SourceConfig

SLOT = "crawl2tune-browser"
_SCRIPT = re.compile(rb"<script\b", re.IGNORECASE)


def browser(crawl: CrawlConfig) -> str | None:
    """The Chromium executable `crawl.browser` names (a command on PATH or a path), None when there is none."""
    return shutil.which(crawl.browser)


def apply(settings: Settings, crawl: CrawlConfig, sources: list[SourceConfig]) -> None:
    """Install the rendering download handler when a source may render and the browser is there; the spider reads
    CRAWL2TUNE_BROWSER (None: pages that need rendering are `needs_browser`)."""
    executable = browser(crawl) if any(s.render != "never" for s in sources) else None
    settings.set("CRAWL2TUNE_BROWSER", executable, priority="project")
    if executable is None:
        return
    handler = "crawlers.render.LazyPlaywrightHandler"
    settings.setdict({
        "DOWNLOAD_HANDLERS": {"http": handler, "https": handler},
        "PLAYWRIGHT_BROWSER_TYPE": "chromium",
        "PLAYWRIGHT_LAUNCH_OPTIONS": {"executable_path": executable, "headless": True},
        "PLAYWRIGHT_MAX_PAGES_PER_CONTEXT": crawl.render_concurrency,
        "PLAYWRIGHT_DEFAULT_NAVIGATION_TIMEOUT": crawl.timeout_seconds * 1000,
        "DOWNLOAD_SLOTS": {SLOT: {"concurrency": crawl.render_concurrency}},
        "PLAYWRIGHT_PROCESS_REQUEST_HEADERS": LoginHeaders(sources),
    }, priority="project")


def through_proxy(proxy: str) -> dict[str, Any]:
    """A crawler's settings that send its browser's requests through `proxy` (a `serve_dir` source's folder
    server, which answers for the site's real host)."""
    return {"PLAYWRIGHT_CONTEXTS": {"default": {"proxy": {"server": proxy}}}}


def needs_rendering(body: bytes, text: str) -> bool:
    """The static HTML has no main content but loads scripts that may build it."""
    return not text.strip() and _SCRIPT.search(body) is not None


def rendered(response: Response) -> bool:
    return bool(response.meta.get("playwright"))


def render_meta() -> dict[str, Any]:
    """Request meta that has the browser render a page, once the scripts' requests are done."""
    return {"playwright": True, "playwright_page_goto_kwargs": {"wait_until": "networkidle"}, "download_slot": SLOT,
            "playwright_page_init_callback": "crawlers.render.login_cookies"}


def render_again(response: Response) -> Request:
    """The static request of a page that needs rendering, to be sent again to the browser (past the duplicate
    filter; none of the static response's meta is carried over) at the page's own depth: the caller schedules it
    with `engine.crawl`, since a request a callback yields is counted one deeper (and dropped at max_depth)."""
    request = response.request
    return Request(request.url, callback=request.callback, errback=request.errback,
                   meta={**render_meta(), "depth": response.meta.get("depth", 0)}, dont_filter=True)


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


class LoginHeaders:
    """The headers of each request the browser makes for a page: scrapy-playwright's own choice, plus the
    login headers the page's Scrapy request carries (Authorization, a source's `auth.name`; set by the auth
    middlewares for the source's hosts only) on the requests to the page's origin, and none on any other
    (scrapy-playwright sends a page's headers on a navigation wherever it redirects, and nothing on its
    scripts' requests). Cookies go through the browser's store (`login_cookies`)."""

    def __init__(self, sources: list[SourceConfig]):
        self.names = {"authorization", "proxy-authorization", "cookie"} | {
            s.auth.name.lower() for s in sources if isinstance(s.auth, HeaderAuth)}

    async def __call__(self, *, browser_type_name: str, playwright_request: Any,
                       scrapy_request_data: dict[str, Any]) -> dict[str, str]:
        headers = {name: value for name, value in (await use_scrapy_headers(
            browser_type_name=browser_type_name, playwright_request=playwright_request,
            scrapy_request_data=scrapy_request_data)).items() if name.lower() not in self.names}
        if _origin(playwright_request.url) == _origin(scrapy_request_data["url"]):
            headers.update((name, value) for name, value in scrapy_request_data["headers"].to_unicode_dict().items()
                           if name.lower() in self.names)
        return headers


async def login_cookies(page: Any, request: Request) -> None:
    """The cookies of a page's Cookie header (a cookie or form login, set for the source's hosts only) put in the
    browser's store for the page's host, where its scripts' requests find them: Playwright drops a Cookie header
    given with a request."""
    header = request.headers.get("Cookie")
    if header:
        scheme, host = _origin(request.url)
        pairs = (part.strip().partition("=") for part in header.decode("latin-1").split(";"))
        await page.context.add_cookies([{"name": name, "value": value, "url": f"{scheme}://{host}/"}
                                        for name, _, value in pairs if name])


class LazyPlaywrightHandler(ScrapyPlaywrightDownloadHandler):
    """scrapy-playwright's handler, which starts Playwright at the first page to render instead of at the
    crawl's start: a crawl of static pages never starts it."""

    def __init__(self, crawler: Any) -> None:
        super().__init__(crawler)
        self._start_lock = asyncio.Lock()
        self._started = False  # not `browser_provider`: _launch sets it before the provider has started

    async def _maybe_launch_in_thread(self) -> None:  # connected to engine_started: not yet
        pass

    async def download_request(self, request: Request) -> Response:  # type: ignore[override]
        if request.meta.get("playwright") and not self._started:
            async with self._start_lock:
                if not self._started:
                    await self._launch()
                    self._started = True
        return await super().download_request(request)
