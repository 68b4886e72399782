"""URL canonical form: one page, one URL, whatever variant a link used; and the request fingerprint built on it.

`clean_url` is what the crawler requests (fragment and tracking parameters dropped); `canonical_url` is the
page's identity (also `index.html` and trailing-slash variants folded, query sorted), used as the document
URL, the key of the crawl state and Scrapy's duplicate filter.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from weakref import WeakKeyDictionary

from scrapy import Request
from scrapy.crawler import Crawler
from w3lib.url import canonicalize_url

# Query parameters that say where a visitor came from, never which page it is.
TRACKING_PARAMS = frozenset({
    "gclid", "gclsrc", "dclid", "gbraid", "wbraid", "fbclid", "msclkid", "yclid", "twclid", "igshid",
    "mc_cid", "mc_eid", "_ga", "_gl", "_hsenc", "_hsmi", "mkt_tok", "ref_src", "ref_url", "spm",
    "jsessionid", "phpsessid",
})
TRACKING_PREFIXES = ("utm_", "pk_", "hsa_", "vero_")
INDEX_PAGE = re.compile(r"/(?:index|default)\.(?:html?|php|aspx?|jsp)$", re.IGNORECASE)
PATH_SESSION = re.compile(r";(?:jsessionid|phpsessid|sid)=[^/?#]*", re.IGNORECASE)
DEFAULT_PORTS = {"http": 80, "https": 443}


def is_tracking(name: str) -> bool:
    name = name.lower()
    return name in TRACKING_PARAMS or name.startswith(TRACKING_PREFIXES)


def clean_url(url: str) -> str:
    """`url` without its fragment and tracking parameters (works on relative URLs too)."""
    parts = urlsplit(url.strip())
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        kept = [(k, v) for k, v in pairs if not is_tracking(k)]
        if len(kept) != len(pairs):
            query = urlencode(kept)
    path = PATH_SESSION.sub("", parts.path)
    return urlunsplit((parts.scheme, parts.netloc, path, query, ""))


@lru_cache(maxsize=65536)  # every request's URL is canonicalised several times (fingerprint, state, parse)
def canonical_url(url: str) -> str:
    """The one URL of a page: clean, query sorted, host lower-case without default port, no
    `index.html`, no trailing slash (except the root)."""
    parts = urlsplit(canonicalize_url(clean_url(url)))
    scheme = parts.scheme.lower()
    netloc = (parts.hostname or "").lower()
    if parts.port and parts.port != DEFAULT_PORTS.get(scheme):
        netloc += f":{parts.port}"
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    path = INDEX_PAGE.sub("/", parts.path) or "/"
    if len(path) > 1:
        path = path.rstrip("/") or "/"
    return urlunsplit((scheme, netloc, path, parts.query, ""))


class CanonicalFingerprinter:
    """Scrapy's request fingerprint over `canonical_url`: the duplicate filter (and JOBDIR's seen set)
    treats `/a/`, `/a/index.html`, `/a?utm_source=x` and `/a#top` as one request."""

    def __init__(self, crawler: Crawler | None = None):
        self._cache: WeakKeyDictionary[Request, bytes] = WeakKeyDictionary()

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> "CanonicalFingerprinter":
        return cls(crawler)

    def fingerprint(self, request: Request) -> bytes:
        fp = self._cache.get(request)
        if fp is None:
            key = b"\n".join([request.method.encode(), canonical_url(request.url).encode("utf-8"), request.body])
            fp = self._cache[request] = hashlib.sha1(key).digest()
        return fp
