"""HTML -> markdown: the converter that writes a page's main content as the dataset's text.

It guarantees what trafilatura's own markdown does not: byte-exact code blocks with language hints (the
page's original ``<pre>`` text, see `original_code_blocks`) and real markdown tables with escaped pipes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from lxml import etree


def to_markdown(
    roots: Iterable[etree._Element], *, html_mode: bool, pre_blocks: dict[str, tuple[str, str]] | None = None
) -> str:
    """Markdown of ``roots``: plain HTML with ``html_mode`` (hidden elements skipped), else trafilatura's XML,
    whose code blocks are swapped for the originals in ``pre_blocks`` (from `original_code_blocks`)."""
    return _Markdown(html_mode=html_mode, pre_blocks=pre_blocks).render(roots)


_WS = re.compile(r"\s+")
PERMALINK_MARKS = "¶§🔗"
SKIP_TAGS = frozenset(
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


def text_of(el: etree._Element) -> str:
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
        elif isinstance(child.tag, str) and child.tag not in SKIP_TAGS:
            if child.text:
                yield child.text
            stack.append((iter(child), child.tail))
        elif child.tail:
            yield child.tail


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
                elif tag not in SKIP_TAGS and not _LINE_NUMBER_CLASS.search(child.get("class") or ""):
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


def original_code_blocks(tree: etree._Element) -> dict[str, tuple[str, str]]:
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
            if root.tag in SKIP_TAGS:  # a selector may deliberately pick e.g. a <nav>
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
        if tag in SKIP_TAGS or (self.html_mode and _hidden(el, tag)):
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
        text = text_of(el).rstrip(PERMALINK_MARKS).strip()
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
            elif child.tag not in SKIP_TAGS:
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
            self.add("p", text_of(caption))
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
