"""Main-content extraction: one HTML page in, its title, markdown body and page metadata out.

`crawlers.locate` finds the main content (trafilatura, or a configured CSS selector) and `crawlers.markdown`
writes it, because the dataset needs guarantees trafilatura's markdown does not give (byte-exact code blocks
with language hints, real markdown tables with escaped pipes). The page is parsed once and that tree serves
the content, the title, the breadcrumb and the canonical URL.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from html import unescape
from urllib.parse import urljoin

from lxml import etree
from lxml.cssselect import CSSSelector
from lxml.html import HtmlElement

from crawlers.locate import css_selector, main_content, outermost, parse_html
from crawlers.markdown import PERMALINK_MARKS, SKIP_TAGS, original_code_blocks, text_of, to_markdown

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class Extraction:
    title: str
    """From the page's ``<h1>``, else ``og:title``, else ``<title>`` minus a " - Site" suffix."""
    text: str
    """Markdown of the main content; empty when nothing could be extracted."""
    breadcrumb: list[str] = field(default_factory=list)
    """Category path from ``category_selector`` or a detected breadcrumb; may be empty."""
    language: str | None = None
    """ISO 639-1 code detected from ``text``; None when the text is too short to tell."""
    canonical_url: str | None = None
    """``<link rel=canonical>`` resolved against the page URL."""


def extract(
    html: str,
    url: str,
    *,
    content_selector: str | None = None,
    category_selector: str | None = None,
) -> Extraction:
    """Extract the main content of ``html`` (already decoded, see ``crawlers.encoding``).

    With ``content_selector`` the content is exactly what that CSS selector matches (every match,
    outermost first, in document order); a page where it matches nothing gets empty text rather
    than a guess. Without it, trafilatura picks the main content and drops navigation, sidebars,
    footers and other boilerplate. A malformed page never raises: it yields empty text.
    An invalid selector is a configuration error and raises ``ValueError``.
    """
    content_css = css_selector(content_selector) if content_selector else None
    category_css = css_selector(category_selector) if category_selector else None
    try:
        tree = parse_html(html)
    except Exception:  # lxml can fail in many ways on junk bytes; such a page simply has no content
        LOGGER.debug("unparseable page %s", url, exc_info=True)
        tree = None
    if tree is None:
        return Extraction(title="", text="")

    try:
        if content_css is not None:
            roots = outermost(content_css(tree))
            text = to_markdown(roots, html_mode=True)
            heading_roots: list[etree._Element] = roots
        else:
            body = main_content(tree, url)
            heading_roots = [body] if body is not None else []
            text = to_markdown(heading_roots, html_mode=False, pre_blocks=original_code_blocks(tree))
    except Exception:  # a pathological tree (e.g. nesting deeper than the parser allows) must not stop a crawl
        LOGGER.warning("content extraction failed for %s", url, exc_info=True)
        text, heading_roots = "", []

    return Extraction(
        title=_safe(lambda: _title(tree, heading_roots), ""),
        text=text,
        breadcrumb=_safe(lambda: _breadcrumb(tree, category_css), []),
        language=_safe(lambda: detect_language(text), None),
        canonical_url=_safe(lambda: _canonical(tree, url), None),
    )


def _safe(func, default):
    try:
        return func()
    except Exception:
        LOGGER.debug("metadata lookup failed", exc_info=True)
        return default


# --- metadata ----------------------------------------------------------------------------------

_WS = re.compile(r"\s+")
_TITLE_SUFFIX = re.compile(r"^(.+?)\s+(?:[-|–—·•»:]|::)\s+([^-|–—·•»]+)$")


def _title(tree: HtmlElement, content_roots: list[etree._Element]) -> str:
    """The content's ``<h1>``; else the page's first ``<h1>`` that is not site chrome (inside nav,
    aside or footer, or just the site name, as in a logo); else og:title; else ``<title>`` without
    its " - Site" suffix."""
    for root in content_roots:
        for head in root.iter("h1", "head"):
            if head.tag == "h1" or head.get("rend") == "h1":
                text = text_of(head).rstrip(PERMALINK_MARKS).strip()
                if text:
                    return text
    og_title, site_name = _meta_content(tree, "og:title"), _meta_content(tree, "og:site_name")
    page_title, title_suffix = _split_title(tree)
    site_names = {name.casefold() for name in (site_name, title_suffix) if name}
    chrome_h1 = ""
    for h1 in tree.iter("h1"):
        text = text_of(h1).rstrip(PERMALINK_MARKS).strip()
        if not text:
            continue
        if text.casefold() in site_names or any(a.tag in ("nav", "aside", "footer") for a in h1.iterancestors()):
            chrome_h1 = chrome_h1 or text
            continue
        return text
    return og_title or page_title or chrome_h1


def _meta_content(tree: HtmlElement, key: str) -> str:
    for meta in tree.iter("meta"):
        if (meta.get("property") or meta.get("name") or "").strip().lower() == key:
            text = _WS.sub(" ", meta.get("content") or "").strip()
            if text:
                return text
    return ""


def _split_title(tree: HtmlElement) -> tuple[str, str]:
    """``<title>`` as (page title, site-name suffix): "Install - Acme Docs" -> ("Install", "Acme Docs")."""
    for title in tree.iter("title"):
        text = _WS.sub(" ", "".join(title.itertext())).strip()
        if text:
            match = _TITLE_SUFFIX.match(text)
            return (match.group(1), match.group(2)) if match else (text, "")
    return "", ""


def _canonical(tree: HtmlElement, url: str) -> str | None:
    base = url
    for base_el in tree.iter("base"):
        if base_el.get("href"):
            base = urljoin(url, base_el.get("href").strip())
            break
    for link in tree.iter("link"):
        if "canonical" in (link.get("rel") or "").lower().split() and (link.get("href") or "").strip():
            return urljoin(base, link.get("href").strip())
    return None


# One cheap XPath finds candidates; Python keeps those whose class / aria-label / itemtype really
# names a breadcrumb (nav.breadcrumb, ol.breadcrumb, [aria-label=breadcrumb], schema.org BreadcrumbList).
_BREADCRUMB_CANDIDATES = etree.XPath(
    "//@class[contains(., 'readcrumb')]/.. | //@aria-label[contains(., 'readcrumb') or contains(., 'READCRUMB')]/.."
    " | //@itemtype[contains(., 'BreadcrumbList')]/.."
)


def _is_breadcrumb(el: etree._Element) -> bool:
    classes = (el.get("class") or "").lower().split()
    return (
        "breadcrumb" in classes
        or "breadcrumbs" in classes
        or (el.get("aria-label") or "").strip().lower() in ("breadcrumb", "breadcrumbs")
        or (el.get("itemtype") or "").endswith("schema.org/BreadcrumbList")
    )


_CRUMB_SEPARATORS = "/>»›|→·•\\:-–— \u00a0\t\n"


def _breadcrumb(tree: HtmlElement, category_css: CSSSelector | None) -> list[str]:
    if category_css is not None:
        matches = outermost(category_css(tree))
        if len(matches) == 1:
            return _crumbs(matches[0])
        return [t for t in (_clean_crumb(text_of(m)) for m in matches) if t]
    for element in _BREADCRUMB_CANDIDATES(tree):
        if not _is_breadcrumb(element):
            continue
        crumbs = _crumbs(element)
        if crumbs:
            return crumbs
    return _json_ld_breadcrumb(tree)


def _crumbs(element: etree._Element) -> list[str]:
    """Split one breadcrumb container into its items (list items, schema.org names, or links)."""
    items = [li for li in element.iter("li") if not _inside(li, "li", element)]
    if not items:
        items = [e for e in element.iter() if e.get("itemprop") == "name"]
    if items:
        texts = [text_of(e) for e in items]
    else:
        texts = _link_segments(element)
    return [t for t in (_clean_crumb(t) for t in texts) if t]


def _inside(el: etree._Element, tag: str, stop: etree._Element) -> bool:
    """Whether ``el`` has a ``tag`` ancestor below ``stop``."""
    for ancestor in el.iterancestors():
        if ancestor is stop:
            return False
        if ancestor.tag == tag:
            return True
    return False


def _link_segments(element: etree._Element) -> list[str]:
    """``<a>Home</a> / <a>Docs</a> / Install``: each link, plus the text runs between links."""
    segments: list[str] = []
    current: list[str] = []

    def close() -> None:
        if current:
            segments.append("".join(current))
            current.clear()

    def walk(el: etree._Element) -> None:
        if el.tag == "a":
            close()
            segments.append(text_of(el))
            return
        if el.text:
            current.append(el.text)
        for child in el:
            if isinstance(child.tag, str) and child.tag not in SKIP_TAGS:
                walk(child)
            if child.tail:
                current.append(child.tail)

    if element.tag == "a":
        return [text_of(element)]
    walk(element)
    close()
    return segments


def _clean_crumb(text: str) -> str:
    return _WS.sub(" ", text).strip(_CRUMB_SEPARATORS)


def _json_ld_breadcrumb(tree: HtmlElement) -> list[str]:
    for script in tree.iter("script"):
        if (script.get("type") or "").strip().lower() != "application/ld+json" or not script.text:
            continue
        if "BreadcrumbList" not in script.text:
            continue
        try:
            data = json.loads(script.text)
        except ValueError:
            continue
        for node in _json_nodes(data):
            if node.get("@type") == "BreadcrumbList":
                items = sorted(
                    (i for i in node.get("itemListElement") or [] if isinstance(i, dict)),
                    key=lambda i: i.get("position") if isinstance(i.get("position"), int) else 0,
                )
                names = []
                for item in items:
                    name = item.get("name")
                    if not name and isinstance(item.get("item"), dict):
                        name = item["item"].get("name")
                    if isinstance(name, str) and _clean_crumb(unescape(name)):
                        names.append(_clean_crumb(unescape(name)))
                if names:
                    return names
    return []


def _json_nodes(data) -> Iterable[dict]:
    if isinstance(data, list):
        for item in data:
            yield from _json_nodes(item)
    elif isinstance(data, dict):
        yield data
        if isinstance(data.get("@graph"), list):
            yield from _json_nodes(data["@graph"])


# --- language ----------------------------------------------------------------------------------

_FENCED = re.compile(r"^([ \t>]*)(`{3,})[^\n]*\n.*?^\1\2[ \t]*$", re.MULTILINE | re.DOTALL)
_NOT_LETTERS = re.compile(r"[\W\d_]+")
_MIN_LANGUAGE_LETTERS = 20
_MIN_LANGUAGE_CONFIDENCE = 0.5
_LANGUAGE_SAMPLE = 1000  # characters; plenty for a confident guess, and langid's cost grows with it


@lru_cache(maxsize=1)
def _language_identifier():
    # the model takes most of a second to load: once per process, and only when first needed
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def detect_language(text: str) -> str | None:
    """ISO 639-1 code of the prose in ``text`` (code blocks ignored), or None if too short or unclear."""
    head = text[:8000]
    prose = (_FENCED.sub(" ", head) if "```" in head else head)[:_LANGUAGE_SAMPLE]
    if len(_NOT_LETTERS.sub("", prose)) < _MIN_LANGUAGE_LETTERS:
        return None
    code, confidence = _language_identifier().classify(prose)
    return code if confidence >= _MIN_LANGUAGE_CONFIDENCE else None
