"""Main-content extraction: one HTML page in, its title, markdown body and page metadata out.

Trafilatura finds the main content; a small converter of our own writes the markdown, because the
dataset needs guarantees trafilatura's markdown does not give (byte-exact code blocks with language
hints, real markdown tables with escaped pipes). The page is parsed once and that tree serves both.
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
from trafilatura import bare_extraction
from trafilatura.utils import load_html

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
    content_css = _selector(content_selector) if content_selector else None
    category_css = _selector(category_selector) if category_selector else None
    try:
        tree = _parse(html)
    except Exception:  # lxml can fail in many ways on junk bytes; such a page simply has no content
        LOGGER.debug("unparseable page %s", url, exc_info=True)
        tree = None
    if tree is None:
        return Extraction(title="", text="")

    try:
        if content_css is not None:
            roots = _outermost(content_css(tree))
            text = _Markdown(html_mode=True).render(roots)
            heading_roots: list[etree._Element] = roots
        else:
            body = _main_content(tree, url)
            heading_roots = [body] if body is not None else []
            text = _Markdown(html_mode=False, pre_blocks=_pre_blocks(tree)).render(heading_roots)
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


# --- parsing and main-content location --------------------------------------------------------


_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")


def _parse(html: str) -> HtmlElement | None:
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


def _main_content(tree: HtmlElement, url: str) -> etree._Element | None:
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
def _selector(css: str) -> CSSSelector:
    try:
        return CSSSelector(css)
    except Exception as err:  # cssselect raises its own SelectorError / ExpressionError types
        raise ValueError(f"invalid CSS selector {css!r}: {err}") from err


def _outermost(elements: list) -> list[etree._Element]:
    """Drop matches nested inside another match so no text is emitted twice."""
    chosen = {id(e) for e in elements}
    return [e for e in elements if not any(id(a) in chosen for a in e.iterancestors())]


def _safe(func, default):
    try:
        return func()
    except Exception:
        LOGGER.debug("metadata lookup failed", exc_info=True)
        return default


# --- metadata ----------------------------------------------------------------------------------

_WS = re.compile(r"\s+")
_TITLE_SUFFIX = re.compile(r"^(.+?)\s+(?:[-|–—·•»:]|::)\s+([^-|–—·•»]+)$")
_PERMALINK_MARKS = "¶§🔗"


def _text_of(el: etree._Element) -> str:
    return _WS.sub(" ", "".join(_texts(el))).strip()


def _texts(root: etree._Element) -> Iterable[str]:
    """Visible text of ``root`` in document order, skipping scripts, styles and the like (no recursion)."""
    if root.text:
        yield root.text
    stack: list[tuple[Iterable[etree._Element], str | None]] = [(iter(root), None)]
    while stack:
        children, tail = stack[-1]
        child = next(children, None)
        if child is None:
            stack.pop()
            if tail:
                yield tail
        elif isinstance(child.tag, str) and child.tag not in _SKIP_TAGS:
            if child.text:
                yield child.text
            stack.append((iter(child), child.tail))
        elif child.tail:
            yield child.tail


def _title(tree: HtmlElement, content_roots: list[etree._Element]) -> str:
    """The content's ``<h1>``; else the page's first ``<h1>`` that is not site chrome (inside nav,
    aside or footer, or just the site name, as in a logo); else og:title; else ``<title>`` without
    its " - Site" suffix."""
    for root in content_roots:
        for head in root.iter("h1", "head"):
            if head.tag == "h1" or head.get("rend") == "h1":
                text = _text_of(head).rstrip(_PERMALINK_MARKS).strip()
                if text:
                    return text
    og_title, site_name = _meta_content(tree, "og:title"), _meta_content(tree, "og:site_name")
    page_title, title_suffix = _split_title(tree)
    site_names = {name.casefold() for name in (site_name, title_suffix) if name}
    chrome_h1 = ""
    for h1 in tree.iter("h1"):
        text = _text_of(h1).rstrip(_PERMALINK_MARKS).strip()
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
        matches = _outermost(category_css(tree))
        if len(matches) == 1:
            return _crumbs(matches[0])
        return [t for t in (_clean_crumb(_text_of(m)) for m in matches) if t]
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
        texts = [_text_of(e) for e in items]
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
            segments.append(_text_of(el))
            return
        if el.text:
            current.append(el.text)
        for child in el:
            if isinstance(child.tag, str) and child.tag not in _SKIP_TAGS:
                walk(child)
            if child.tail:
                current.append(child.tail)

    if element.tag == "a":
        return [_text_of(element)]
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


# --- HTML -> markdown ------------------------------------------------------------------------

_SKIP_TAGS = frozenset(
    {"script", "style", "noscript", "template", "svg", "math", "iframe", "object", "embed", "canvas",
     "button", "input", "select", "option", "textarea", "nav", "img", "graphic", "picture", "video",
     "audio", "source", "map", "meta", "link", "title", "dialog"}
)  # fmt: skip
_BLOCK_TAGS = frozenset(
    {"p", "div", "section", "article", "main", "body", "html", "header", "footer", "aside", "figure",
     "figcaption", "details", "summary", "form", "fieldset", "address", "center", "dl", "dt", "dd",
     "hgroup", "caption", "note", "item", "li", "row", "tr", "cell", "td", "th", "legend", "ab"}
)  # fmt: skip
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_STRUCTURE_TAGS = _BLOCK_TAGS | set(_HEADINGS) | {"head", "pre", "table", "list", "ul", "ol", "blockquote"}
_BOLD = frozenset({"b", "strong"})
_ITALIC = frozenset({"i", "em", "cite", "dfn"})
_INLINE_CODE = frozenset({"code", "kbd", "samp", "tt", "var"})
_LIST_TAGS = frozenset({"ul", "ol", "list", "menu"})
_ITEM_TAGS = frozenset({"li", "item", "dt", "dd"})
_ROW_TAGS = frozenset({"tr", "row"})
_CELL_TAGS = frozenset({"td", "th", "cell"})
_TABLE_SECTIONS = frozenset({"thead", "tbody", "tfoot"})
_BREAK_TAGS = frozenset({"br", "lb"})
_LANGUAGE_CLASS = re.compile(r"(?:^|\s)(?:language|lang|highlight)-([A-Za-z0-9_+#.-]+)")
_LINE_NUMBER_CLASS = re.compile(r"line-?numbers?|linenos?|gutter", re.IGNORECASE)
_MAX_DEPTH = 150  # element nesting the converter follows; deeper text is kept flat


def _code_key(text: str) -> str:
    return "".join(text.split())


def _pre_text(pre: etree._Element) -> str:
    """The text a browser shows for a ``<pre>``: ``<br>`` as newlines, no copy buttons or line numbers."""
    parts: list[str] = []

    def walk(el: etree._Element) -> None:
        if el.text:
            parts.append(el.text)
        for child in el:
            tag = child.tag
            if isinstance(tag, str):
                if tag in _BREAK_TAGS:
                    parts.append("\n")
                elif tag not in _SKIP_TAGS and not _LINE_NUMBER_CLASS.search(child.get("class") or ""):
                    walk(child)
            if child.tail:
                parts.append(child.tail)

    walk(pre)
    text = "".join(parts)
    if pre.tag == "pre" and (pre.text or "").startswith("\n"):
        text = text[1:]  # HTML drops one newline right after <pre>
    return text


def _code_language(el: etree._Element) -> str:
    candidates = [el, *el.iter("code")]
    parent = el.getparent()
    if parent is not None:
        candidates.append(parent)
        if parent.getparent() is not None:
            candidates.append(parent.getparent())
    for node in candidates:
        for attr in ("data-lang", "data-language"):
            if node.get(attr):
                return node.get(attr).strip().split()[0].lower()
        match = _LANGUAGE_CLASS.search(node.get("class") or "")
        if match and match.group(1).lower() not in ("none", "default", "plaintext", "text", "nohighlight"):
            return match.group(1).lower()
    return ""


def _pre_blocks(tree: HtmlElement) -> dict[str, tuple[str, str]]:
    """Every ``<pre>`` of the page by whitespace-free text: trafilatura's copy is swapped for the exact original."""
    blocks: dict[str, tuple[str, str]] = {}
    for pre in tree.iter("pre"):
        text = _pre_text(pre)
        key = _code_key(text)
        if key and key not in blocks:
            blocks[key] = (text, _code_language(pre))
    return blocks


def _fence(text: str, language: str) -> str:
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    body = text[:-1] if text.endswith("\n") else text
    return f"{fence}{language}\n{body}\n{fence}"


def _code_span(text: str) -> str:
    text = _WS.sub(" ", text).strip()
    if not text:
        return ""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    ticks = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


class _Markdown:
    """Walks an element tree, writing markdown blocks.

    Understands both plain HTML (content_selector) and trafilatura's XML (head, list/item,
    table/row/cell, code, quote, hi, lb, ref). Blocks are kept apart and joined with one blank
    line at the end, so tidying prose never touches a code block.
    """

    def __init__(
        self,
        *,
        html_mode: bool,
        pre_blocks: dict[str, tuple[str, str]] | None = None,
        depth: int = 0,
        in_cell: bool = False,
    ):
        self.html_mode = html_mode
        self.pre_blocks = pre_blocks or {}
        self.depth = depth
        self.in_cell = in_cell
        self.blocks: list[tuple[str, str]] = []  # (kind, markdown)
        self.line: list[str] = []

    def render(self, roots: Iterable[etree._Element]) -> str:
        for root in roots:
            self.flush()
            if root.tag in _SKIP_TAGS:  # a selector may deliberately pick e.g. a <nav>
                self.walk_children(root)
            else:
                self.walk(root)
        return self.finish()

    def finish(self) -> str:
        self.flush()
        return "\n\n".join(text for _, text in self.blocks)

    def child(self, *, in_cell: bool | None = None) -> _Markdown:
        return _Markdown(
            html_mode=self.html_mode,
            pre_blocks=self.pre_blocks,
            depth=self.depth,
            in_cell=self.in_cell if in_cell is None else in_cell,
        )

    # -- buffers

    def flush(self) -> None:
        if not self.line:
            return
        raw = "".join(self.line)
        self.line = []
        lines = [re.sub(r" {2,}", " ", line).strip() for line in raw.split("\n")]
        text = "\n".join(line for line in lines if line)
        if text:
            self.blocks.append(("p", text))

    def add(self, kind: str, text: str) -> None:
        self.flush()
        if text:
            self.blocks.append((kind, text))

    def text(self, text: str | None) -> None:
        if text:
            self.line.append(_WS.sub(" ", text))

    # -- walking

    def walk_children(self, el: etree._Element) -> None:
        self.text(el.text)
        for child in el:
            self.walk(child)
            self.text(child.tail)

    def walk(self, el: etree._Element) -> None:
        tag = el.tag
        if not isinstance(tag, str):  # comments, processing instructions
            return
        tag = tag.lower()
        if tag in _SKIP_TAGS or (self.html_mode and _hidden(el, tag)):
            return
        if self.depth > _MAX_DEPTH:  # absurd nesting: keep the words, drop the structure
            self.text(" ".join(_texts(el)))
            return
        self.depth += 1
        try:
            self.dispatch(el, tag)
        finally:
            self.depth -= 1

    def dispatch(self, el: etree._Element, tag: str) -> None:
        if tag in _HEADINGS or (tag == "head" and not self.html_mode):
            self.heading(el, _HEADINGS.get(tag) or _heading_level(el.get("rend")))
        elif tag == "pre":
            self.code_block(_pre_text(el), _code_language(el))
        elif tag in ("code", "quote") and not self.html_mode:
            self.trafilatura_code_or_quote(el)
        elif tag == "blockquote":
            self.quote(el)
        elif tag in _LIST_TAGS:
            self.list(el)
        elif tag == "table":
            self.table(el)
        elif tag in _BREAK_TAGS:
            self.line.append("\n")
        elif tag == "hr":
            self.flush()
        elif tag in _INLINE_CODE:
            if "\n" in "".join(el.itertext()).strip() and el.getparent() is not None and el.getparent().tag != "p":
                self.code_block(_pre_text(el), _code_language(el))
            else:
                self.line.append(_code_span("".join(el.itertext())))
        elif tag in _BOLD or (tag == "hi" and el.get("rend") == "#b"):
            self.emphasis(el, "**")
        elif tag in _ITALIC or (tag == "hi" and el.get("rend") == "#i"):
            self.emphasis(el, "*")
        elif tag == "hi" and el.get("rend") == "#t":
            self.line.append(_code_span("".join(el.itertext())))
        elif tag in _BLOCK_TAGS:
            self.flush()
            self.walk_children(el)
            self.flush()
        else:  # a, span, ref, sup, u, del, unknown inline tags: their text only
            self.walk_children(el)

    # -- block elements

    def heading(self, el: etree._Element, level: int) -> None:
        text = _text_of(el).rstrip(_PERMALINK_MARKS).strip()
        if text.endswith(" #"):
            text = text[:-2].rstrip()
        if text:
            self.add("h", "#" * level + " " + text)

    def code_block(self, text: str, language: str) -> None:
        if not text.strip():
            return
        if self.in_cell:
            self.line.append(_code_span(text))
        else:
            self.add("code", _fence(text, language))

    def trafilatura_code_or_quote(self, el: etree._Element) -> None:
        """Trafilatura turns ``<pre>`` into code or quote and may re-space it: restore the page's original.
        Its other ``<code>`` elements are inline code unless they span lines or stand alone in the body."""
        own_text = "".join(el.itertext())
        original = self.pre_blocks.get(_code_key(own_text))
        multiline = "\n" in own_text.strip()
        if el.tag == "quote":
            if original is not None:
                self.code_block(*original)
            else:
                self.quote(el)
        elif original is not None and (multiline or not _in_running_text(el)):
            self.code_block(*original)
        elif multiline or el.getparent() is None or el.getparent().tag in ("body", "div"):
            self.code_block(own_text.strip("\n"), _code_language(el))
        else:
            self.line.append(_code_span(own_text))

    def quote(self, el: etree._Element) -> None:
        sub = self.child()
        sub.walk_children(el)
        body = sub.finish()
        if body:
            self.add("quote", "\n".join(f"> {line}" if line else ">" for line in body.split("\n")))

    def list(self, el: etree._Element) -> None:
        ordered = el.tag == "ol" or el.get("rend") == "ol"
        try:
            number = int(el.get("start") or 1)
        except ValueError:
            number = 1
        items: list[str] = []
        self.flush()
        if el.text and el.text.strip():
            self.text(el.text)
            self.flush()
        for child in el:
            if not isinstance(child.tag, str):
                continue
            if child.tag in _ITEM_TAGS:
                body = self.list_item(child)
                if body:
                    marker = f"{number}." if ordered else "-"
                    number += 1
                    pad = " " * (len(marker) + 1)
                    lines = body.split("\n")
                    rest = (pad + line if line else "" for line in lines[1:])
                    items.append("\n".join([f"{marker} {lines[0]}", *rest]))
            elif child.tag not in _SKIP_TAGS:
                # stray content directly in the list (a nested <ul> without its <li>, text wrappers)
                sub = self.child()
                sub.walk(child)
                body = sub.finish()
                if body:
                    items.append("\n".join("  " + line if line else "" for line in body.split("\n")))
            if child.tail and child.tail.strip():
                items.append(_WS.sub(" ", child.tail).strip())
        self.add("list", "\n".join(items))

    def list_item(self, item: etree._Element) -> str:
        sub = self.child()
        sub.walk_children(item)
        sub.flush()
        out: list[str] = []
        previous_kind = ""
        for kind, text in sub.blocks:
            if out:
                out.append("\n" if "list" in (kind, previous_kind) else "\n\n")
            out.append(text)
            previous_kind = kind
        return "".join(out)

    def table(self, el: etree._Element) -> None:
        rows = list(_table_rows(el))
        width = max((sum(_colspan(c) for c in cells) for cells in rows), default=0)
        if width < 2 or next(el.iterdescendants("table"), None) is not None:
            # layout table (one column, or tables inside tables): its cells are ordinary blocks
            self.flush()
            self.walk_children(el)
            self.flush()
            return
        for caption in el.iterchildren("caption"):
            self.add("p", _text_of(caption))
        if self.holds_code_block(el):
            self.table_as_blocks(rows)
            return
        grid: list[list[str]] = []
        for cells in rows:
            line: list[str] = []
            for cell in cells:
                line.append(self.cell_text(cell))
                line.extend([""] * (_colspan(cell) - 1))
            if any(line):
                grid.append(line + [""] * (width - len(line)))
        if not grid:
            return
        if len(grid) > 1 and grid[0][0] and not any(grid[0][1:]):
            # a lone cell spanning the top row is a caption (trafilatura turns <caption> into one)
            self.add("p", grid.pop(0)[0].replace("\\|", "|"))
        header, body = grid[0], grid[1:]
        lines = [_table_line(header), "| " + " | ".join(["---"] * width) + " |"]
        lines.extend(_table_line(row) for row in body)
        self.add("table", "\n".join(lines))

    def holds_code_block(self, table: etree._Element) -> bool:
        for el in table.iter("pre", "code", "quote"):
            if el.tag == "pre":
                return True
            text = "".join(el.itertext()).strip()
            if "\n" in text and (el.tag == "code" or _code_key(text) in self.pre_blocks):
                return True
        return False

    def table_as_blocks(self, rows: list[list[etree._Element]]) -> None:
        """A table of code listings cannot be a markdown table without flattening the code:
        write each cell as blocks instead, under its column header."""
        header = [self.cell_text(c) for c in rows[0]] if rows and all(_is_header_cell(c) for c in rows[0]) else []
        for cells in rows[1:] if header else rows:
            for column, cell in enumerate(cells):
                label = header[column] if column < len(header) else ""
                if label:
                    self.add("p", label.replace("\\|", "|"))
                self.flush()
                self.walk_children(cell)
                self.flush()

    def cell_text(self, cell: etree._Element) -> str:
        sub = self.child(in_cell=True)
        sub.walk_children(cell)
        sub.flush()
        text = " ".join(text for _, text in sub.blocks)
        return _WS.sub(" ", text).strip().replace("|", "\\|")

    # -- inline elements

    def emphasis(self, el: etree._Element, marker: str) -> None:
        if any(isinstance(d.tag, str) and d.tag in _STRUCTURE_TAGS for d in el.iterdescendants()):
            self.walk_children(el)  # emphasis around blocks is not markdown; keep the content
            return
        sub = self.child()
        sub.walk_children(el)
        if sub.blocks:  # e.g. a code block restored inside it
            self.walk_children(el)
            return
        inner = "".join(sub.line)
        stripped = inner.strip()
        if not stripped:
            self.line.append(inner)
            return
        lead = " " if inner[0].isspace() else ""
        trail = " " if inner[-1].isspace() else ""
        self.line.append(f"{lead}{marker}{stripped}{marker}{trail}")


def _hidden(el: etree._Element, tag: str) -> bool:
    if tag == "head" or el.get("hidden") is not None or el.get("aria-hidden") == "true":
        return True
    style = el.get("style")
    return bool(style) and "display:none" in style.replace(" ", "").lower()


def _heading_level(rend: str | None) -> int:
    if rend and len(rend) == 2 and rend[0] == "h" and rend[1] in "123456":
        return int(rend[1])
    return 3


def _in_running_text(el: etree._Element) -> bool:
    """Whether a trafilatura <code> sits inside running text (``run <code>ls</code> now``)."""
    parent = el.getparent()
    if parent is None:
        return False
    if parent.tag in ("hi", "ref", "head", "del"):
        return True
    if parent.tag in ("p", "item", "cell", "quote"):
        return bool((parent.text or "").strip() or (el.tail or "").strip() or len(parent) > 1)
    return False


def _table_rows(table: etree._Element) -> Iterable[list[etree._Element]]:
    """Cells of each row of this table, not of tables nested in it."""
    for child in table:
        if not isinstance(child.tag, str):
            continue
        if child.tag in _ROW_TAGS:
            yield [c for c in child if isinstance(c.tag, str) and c.tag in _CELL_TAGS]
        elif child.tag in _TABLE_SECTIONS:
            yield from _table_rows(child)


def _is_header_cell(cell: etree._Element) -> bool:
    return cell.tag == "th" or cell.get("role") == "head"


def _colspan(cell: etree._Element) -> int:
    try:
        return max(1, min(int(cell.get("colspan") or 1), 20))
    except ValueError:
        return 1


def _table_line(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"
