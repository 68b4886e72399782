"""Find a page's main content: exactly what a CSS selector matches, or trafilatura's pick of it."""

from __future__ import annotations

import re
from functools import lru_cache

from lxml import etree
from lxml.cssselect import CSSSelector
from lxml.html import HtmlElement
from trafilatura import bare_extraction
from trafilatura.utils import load_html


_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")


def parse_html(html: str) -> HtmlElement | None:
    """``html`` as one document tree, or None for an empty page or binary data."""
    if not html or not html.strip():
        return None
    sample = html[:2048]
    if len(_CONTROL_CHARS.findall(sample)) > max(8, len(sample) // 100):
        return None  # binary data (an image or archive served as text/html), not a page
    # load_html repairs what libxml2 chokes on (control characters, odd doctypes, encoding
    # declarations in str input) but rejects a bare fragment, which parses fine once wrapped
    tree = load_html(html)
    if tree is None:
        tree = load_html(f"<html><body>{html}</body></html>")
    if tree is None or not isinstance(tree, HtmlElement):
        return None
    # for fragment-like input lxml hands back the lone element; extraction needs the whole document
    return tree.getroottree().getroot()


_CALLOUT_CLASS = re.compile(
    r"(?<![a-z])(?:note|tip|hint|warning|caution|danger|important|admonition|callout)(?![a-z])", re.IGNORECASE
)


def _protect_doc_structures(tree: HtmlElement) -> None:
    """Keep documentation structures that trafilatura's cleaning would delete wholesale.

    Trafilatura drops every ``<figure>`` and ``<aside>``; documentation puts code listings in
    figures and notes/warnings in asides. Line-number gutters beside code are removed so a
    highlighted listing is one code block, not a two-column table.
    """
    for el in tree.iter("figure", "aside"):
        if el.tag == "figure":
            if el.find(".//pre") is not None:
                el.tag = "div"
        elif _CALLOUT_CLASS.search(f"{el.get('class', '')} {el.get('aria-label', '')}"):
            el.tag = "div"
    for cell in tree.xpath("//td[contains(@class, 'lineno') or contains(@class, 'gutter')][../../descendant::pre]"):
        cell.getparent().remove(cell)


def main_content(tree: HtmlElement, url: str) -> etree._Element | None:
    """Trafilatura's main-content tree (its own XML vocabulary: head, p, list/item, table/row/cell, code...)."""
    _protect_doc_structures(tree)
    document = bare_extraction(
        tree,  # copied inside: our tree goes on serving the title, breadcrumb and code-block lookups
        url=url or None,
        include_comments=False,
        include_tables=True,
        include_formatting=True,
        include_links=False,
        include_images=False,
        with_metadata=False,
        deduplicate=False,
        output_format="xml",  # only the tree is used; "python" would also render it as text
        # skips the readability/justext comparison: a third faster, and on the article benchmark
        # and a few hundred mdBook pages no worse (baseline rescue for short results still runs)
        fast=True,
    )
    if document is None:
        return None
    return document.body


@lru_cache(maxsize=64)
def css_selector(css: str) -> CSSSelector:
    try:
        return CSSSelector(css)
    except Exception as err:  # cssselect raises its own SelectorError / ExpressionError types
        raise ValueError(f"invalid CSS selector {css!r}: {err}") from err


def outermost(elements: list) -> list[etree._Element]:
    """Drop matches nested inside another match so no text is emitted twice."""
    chosen = {id(e) for e in elements}
    return [e for e in elements if not any(id(a) in chosen for a in e.iterancestors())]
