"""Linked files read as documents: PDF (pypdf), DOCX (python-docx) and HWPX (its OWPML XML, with lxml).

One reader per kind turns the file into markdown: headings where the format has them (a PDF's outline, with
the pages each section covers, else one section per page; DOCX heading styles; HWPX outline styles), the
title from the file's metadata when it has one. A file that cannot be a document raises `Unreadable` with a
reason the crawl records like any other drop reason: `encrypted`, `corrupt`, `no_text` (an image-only file, a
scan without a text layer) or `too_large` (a zip that unpacks past `MAX_UNPACKED`). HWP 5 (the binary format)
is not read: see docs/crawling.md, Attachments.
"""

from __future__ import annotations

import posixpath
import re
import zipfile
from dataclasses import dataclass
from email.message import Message
from io import BytesIO
from typing import Callable
from urllib.parse import unquote, urlsplit

from lxml import etree

from crawlers.document import Document, text_hash

EXTENSIONS = {".pdf": "pdf", ".docx": "docx", ".hwpx": "hwpx"}
MIME_TYPES = {
    "application/pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/hwp+zip": "hwpx",
    "application/vnd.hancom.hwpx": "hwpx",
}
MAX_UNPACKED = 256 << 20  # a DOCX or HWPX unpacking past this is a zip bomb, not a document
_OLE_MAGIC = b"\xd0\xcf\x11\xe0"
_ENCRYPTED_OOXML = "EncryptedPackage".encode("utf-16-le")  # the stream a password-protected DOCX holds
_XML = etree.XMLParser(resolve_entities=False, no_network=True, remove_comments=True)


class Unreadable(ValueError):
    """The file is not a document; `reason` is recorded as its drop reason."""

    reason = "corrupt"


class Encrypted(Unreadable):
    reason = "encrypted"


class NoText(Unreadable):
    reason = "no_text"


class TooLarge(Unreadable):
    reason = "too_large"


@dataclass(frozen=True)
class Parsed:
    title: str | None
    """From the file's metadata; None when it has none."""
    text: str
    """Markdown, without the title heading."""


def extensions(kinds: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The link extensions of `kinds` (what `crawlers.links` follows as attachments)."""
    return tuple(ext for ext, kind in EXTENSIONS.items() if kind in kinds)


def kind_of(url: str, body: bytes, content_type: str | None, disposition: str | None) -> str | None:
    """The attachment kind of a non-HTML response: by its Content-Type, the file name in its
    Content-Disposition, its URL's extension, or a PDF's signature; None for anything else."""
    mime = (content_type or "").split(";")[0].strip().lower()
    if mime in MIME_TYPES:
        return MIME_TYPES[mime]
    names = [urlsplit(url).path]
    if disposition:
        message = Message()
        message["Content-Disposition"] = disposition
        names.insert(0, message.get_filename() or "")
    for name in names:
        kind = EXTENSIONS.get(posixpath.splitext(name)[1].lower())
        if kind:
            return kind
    return "pdf" if body.startswith(b"%PDF") else None


def file_name(url: str) -> str:
    """The last segment of the URL's path: the title of last resort."""
    return unquote(posixpath.basename(urlsplit(url).path)) or url


def read(body: bytes, kind: str, *, url: str, source: str, title: str, category: str, fetched_at: str) -> Document:
    """The document of an attachment; `title` is used when the file's metadata has none. Raises `Unreadable`."""
    from crawlers.extract import detect_language  # imported where it runs, as pages.process_page does

    try:
        parsed = READERS[kind](body)
    except Unreadable:
        raise
    except Exception as err:  # a broken file fails in as many ways as its parser has
        raise Unreadable(f"cannot read the {kind} file: {err}") from err
    if not parsed.text.strip():
        raise NoText(f"the {kind} file has no text (images only?)")
    name = parsed.title or title
    text = f"# {name}\n\n{parsed.text.strip()}"
    return Document(url=url, source=source, title=name, category=category, text=text,
                    language=detect_language(text), content_hash=text_hash(text), fetched_at=fetched_at)


def _plain(text: str) -> str:
    """Extracted text as markdown paragraphs: no line read as a heading or a table, at most one blank line."""
    text = re.sub(r"^([ \t]*)([#|])", r"\1\\\2", text.strip(), flags=re.MULTILINE)
    return re.sub(r"\n\s*\n\s*", "\n\n", text)


def _heading(level: int, text: str) -> str:
    """A heading of the file's level 1 is `##`: the title is the document's only `#`."""
    return "#" * min(level + 1, 6) + " " + " ".join(text.split())


# --- PDF -------------------------------------------------------------------------------------------


def read_pdf(body: bytes) -> Parsed:
    """Sections from the outline (bookmarks), each with the pages it covers; else one section per page. An
    encrypted PDF is read when it opens with the empty password (permissions only), else refused."""
    from pypdf import PdfReader
    from pypdf.errors import DependencyError

    reader = PdfReader(BytesIO(body))
    if reader.is_encrypted:
        try:
            opened = reader.decrypt("")
        except DependencyError as err:
            raise Encrypted(f"the PDF is encrypted with a cipher pypdf cannot open here: {err}") from err
        if not opened:
            raise Encrypted("the PDF needs a password")
    pages = [_plain(page.extract_text() or "") for page in reader.pages]
    metadata = reader.metadata
    title = (metadata.title or "").strip() if metadata else ""
    if not any(pages):
        return Parsed(title or None, "")
    return Parsed(title or None, _pdf_sections(pages, _outline(reader)))


def _outline(reader) -> list[tuple[int, int, str]]:
    """(page index, depth, title) of every outline entry that points at a page, in outline order."""
    entries: list[tuple[int, int, str]] = []

    def walk(items: list, depth: int) -> None:
        for item in items:
            if isinstance(item, list):  # the children of the entry before it
                walk(item, depth + 1)
                continue
            page = reader.get_destination_page_number(item)
            if page is not None and (item.title or "").strip():
                entries.append((page, depth, item.title))

    try:
        walk(reader.outline, 1)
    except Exception:  # a broken outline: the pages still have their text
        return []
    return entries


def _pages(first: int, end: int) -> str:
    return f"p. {first + 1}" if end - first == 1 else f"pp. {first + 1}–{end}"


def _pdf_sections(pages: list[str], outline: list[tuple[int, int, str]]) -> str:
    if not outline:
        return "\n\n".join(f"## p. {i + 1}\n\n{text}" for i, text in enumerate(pages) if text)
    starts = sorted({page for page, _, _ in outline})
    parts = []
    if starts[0] > 0:  # what comes before the first bookmark (a cover, a table of contents)
        parts += [_pages(0, starts[0]), *(text for text in pages[: starts[0]] if text)]
    for start, end in zip(starts, [*starts[1:], len(pages)]):
        parts += [_heading(depth, title) for page, depth, title in outline if page == start]
        parts += [_pages(start, end), *(text for text in pages[start:end] if text)]
    return "\n\n".join(parts)


# --- DOCX ------------------------------------------------------------------------------------------

_DOCX_HEADING = re.compile(r"^(?:heading|제목)\s*([1-9])$", re.IGNORECASE)


def read_docx(body: bytes) -> Parsed:
    """Paragraphs and tables in order; `Heading N` styles (Korean Word's `제목 N` too) are headings, `List`
    styles list items, the `Title` style the title when the core properties have none."""
    import docx

    if body.startswith(_OLE_MAGIC):
        if _ENCRYPTED_OOXML in body:
            raise Encrypted("the DOCX is password-protected")
        raise Unreadable("not a DOCX (an OLE file: a Word 97-2003 .doc?)")
    _check_unpacked(body)
    document = docx.Document(BytesIO(body))
    title = (document.core_properties.title or "").strip() or None
    parts: list[str] = []
    for block in document.iter_inner_content():
        if isinstance(block, docx.table.Table):
            parts.append(_markdown_table([[cell.text for cell in row.cells] for row in block.rows]))
            continue
        text = block.text.strip()
        if not text:
            continue
        style = block.style.name if block.style is not None else ""
        heading = _DOCX_HEADING.match(style or "")
        if heading:
            parts.append(_heading(int(heading.group(1)), text))
        elif style == "Title":
            title = title or text
        elif (style or "").startswith("List"):
            parts.append("- " + _plain(text))
        else:
            parts.append(_plain(text))
    return Parsed(title, "\n\n".join(part for part in parts if part))


def _markdown_table(rows: list[list[str]]) -> str:
    rows = [[" ".join(cell.split()).replace("|", "\\|") for cell in row] for row in rows if any(c.strip() for c in row)]
    if not rows:
        return ""
    width = max(len(row) for row in rows)
    lines = ["| " + " | ".join(row + [""] * (width - len(row))) + " |" for row in rows]
    return "\n".join([lines[0], "| " + " | ".join(["---"] * width) + " |", *lines[1:]])


def _check_unpacked(body: bytes) -> None:
    with zipfile.ZipFile(BytesIO(body)) as archive:
        if sum(info.file_size for info in archive.infolist()) > MAX_UNPACKED:
            raise TooLarge(f"the file unpacks to more than {MAX_UNPACKED >> 20} MiB")


# --- HWPX ------------------------------------------------------------------------------------------

_SECTION = re.compile(r"^Contents/section(\d+)\.xml$")
_HWPX_HEADING = re.compile(r"^(?:개요|outline|heading|제목)\s*([1-9])$", re.IGNORECASE)


def _local(element: etree._Element) -> str:
    return etree.QName(element).localname if isinstance(element.tag, str) else ""


def read_hwpx(body: bytes) -> Parsed:
    """The paragraphs of `Contents/section*.xml` in order, a table as a markdown table where its paragraph
    holds it; a paragraph in an outline style (`개요 N` / `Outline N`) or with an outline heading is a heading;
    the title from `Contents/content.hpf`. Elements are matched by local name, so every OWPML namespace
    version reads."""
    _check_unpacked(body)
    with zipfile.ZipFile(BytesIO(body)) as archive:
        names = archive.namelist()
        if "META-INF/manifest.xml" in names and b"encryption-data" in archive.read("META-INF/manifest.xml"):
            raise Encrypted("the HWPX is password-protected")
        sections = sorted((n for n in names if _SECTION.match(n)), key=lambda n: int(_SECTION.match(n).group(1)))
        if not sections:
            raise Unreadable("not an HWPX file: no Contents/section*.xml")
        styles, outlines = _hwpx_levels(archive.read("Contents/header.xml")) if "Contents/header.xml" in names \
            else ({}, {})
        title = _hwpx_title(archive.read("Contents/content.hpf")) if "Contents/content.hpf" in names else None
        parts = []
        for name in sections:
            for element in etree.fromstring(archive.read(name), _XML).iter():
                if _local(element) != "p" or any(_local(up) == "tbl" for up in element.iterancestors()):
                    continue  # a cell's paragraphs are read with their table
                text = _hwpx_text(element)
                if text:
                    level = styles.get(element.get("styleIDRef")) or outlines.get(element.get("paraPrIDRef"))
                    parts.append(_heading(level, text) if level else _plain(text))
                parts += [_markdown_table(_hwpx_rows(table)) for run in element if _local(run) == "run"
                          for table in run if _local(table) == "tbl"]
    return Parsed(title, "\n\n".join(part for part in parts if part))


def _hwpx_text(paragraph: etree._Element) -> str:
    """The text of a paragraph's own runs (not of a table or text box it holds)."""
    return "".join("".join(t.itertext()) for run in paragraph if _local(run) == "run"
                   for t in run if _local(t) == "t").strip()


def _hwpx_rows(table: etree._Element) -> list[list[str]]:
    """A table's rows of cell texts, a cell's paragraphs (a nested table's too) joined by spaces."""
    return [[" ".join(filter(None, (_hwpx_text(p) for p in cell.iter() if _local(p) == "p")))
             for cell in row if _local(cell) == "tc"]
            for row in table if _local(row) == "tr"]


def _hwpx_levels(header: bytes) -> tuple[dict[str, int], dict[str, int]]:
    """Heading levels by style id (outline styles) and by paragraph-shape id (an outline heading)."""
    styles, outlines = {}, {}
    for element in etree.fromstring(header, _XML).iter():
        local = _local(element)
        if local == "style":
            for name in (element.get("name"), element.get("engName")):
                match = _HWPX_HEADING.match((name or "").strip())
                if match:
                    styles[element.get("id")] = int(match.group(1))
                    break
        elif local == "heading" and element.get("type") == "OUTLINE":
            shape = element.getparent()
            if shape is not None and _local(shape) == "paraPr":
                outlines[shape.get("id")] = int(element.get("level") or 0) + 1
    return styles, outlines


def _hwpx_title(package: bytes) -> str | None:
    for element in etree.fromstring(package, _XML).iter():
        if _local(element) == "title" and (element.text or "").strip():
            return element.text.strip()
    return None


READERS: dict[str, Callable[[bytes], Parsed]] = {"pdf": read_pdf, "docx": read_docx, "hwpx": read_hwpx}
