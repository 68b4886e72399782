"""Turn a fetched HTML body into text, picking the encoding the way a browser would.

Precedence: byte-order mark, charset in the HTTP Content-Type header, ``<meta>`` / XML declaration,
then detection. Labels go through w3lib, which maps them to the WHATWG supersets real pages need
(EUC-KR -> CP949, GB2312 -> GB18030, ISO-8859-1 -> windows-1252, Shift_JIS -> CP932, ...).
The text comes without the XML declaration of an XHTML page: it names the bytes' encoding, which the text no
longer has, and lxml refuses to parse a str that declares one.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator

import charset_normalizer
from w3lib.encoding import (
    html_body_declared_encoding,
    http_content_type_encoding,
    read_bom,
    resolve_encoding,
)

# Single-byte code pages decode any byte string without error, so a wrong one never fails loudly;
# valid non-ASCII UTF-8 declared as one of them is a UTF-8 page behind a server's default header.
_SINGLE_BYTE_PREFIXES = ("cp125", "iso8859", "latin", "mac_", "koi8", "cp874", "ascii")
_NEAR_TIE = 0.1  # difference in charset-normalizer's "chaos" (mess) ratio
_XML_DECLARATION = re.compile(r"\A\s*<\?xml\s[^>]*>")


def decode_html(body: bytes, content_type: str | None) -> str:
    """Decode ``body`` (an HTML document) using ``content_type`` (the raw HTTP header, may be None).

    A declared encoding that cannot decode the body strictly is ignored rather than trusted, so a
    page never comes out full of U+FFFD because of a wrong label: the next declaration is tried, then
    UTF-8, then charset-normalizer's guess. One exception to declaration order: a body declared as a
    single-byte code page (often just a server's ISO-8859-1 default) that is valid non-ASCII UTF-8 is
    read as UTF-8. Undecodable bytes are replaced only when every strict attempt has failed.
    A leading XML declaration is removed (see the module's docstring).
    """
    return _XML_DECLARATION.sub("", _decode(body, content_type), count=1)


def _decode(body: bytes, content_type: str | None) -> str:
    if not body:
        return ""
    bom_encoding, bom = read_bom(body)
    if bom_encoding is not None:
        text = _strict(body[len(bom):], bom_encoding)
        if text is not None:
            return text

    for encoding in _declared_encodings(body, content_type):
        if _is_single_byte(encoding) and not body.isascii():
            text = _strict(body, "utf-8")
            if text is not None:
                return text
        text = _strict(body, encoding)
        if text is not None:
            return text

    text = _strict(body, "utf-8")
    if text is not None:
        return text
    return _detect(body)


def _declared_encodings(body: bytes, content_type: str | None) -> Iterator[str]:
    """Codec names declared by the header, then by the document; the document is only scanned if needed."""
    header = http_content_type_encoding(content_type) if content_type else None
    if header:
        yield header
    meta = html_body_declared_encoding(body)
    if meta and meta.startswith(("utf-16", "utf-32")):
        meta = "utf-8"  # a document cannot declare UTF-16 in ASCII bytes; browsers read such pages as UTF-8
    if meta and meta != header:
        yield meta


def _detect(body: bytes) -> str:
    matches = charset_normalizer.from_bytes(body)
    best = matches.best()
    if best is None:
        return body.decode("utf-8", errors="replace")
    if _is_single_byte(best.encoding):
        # short pages leave single-byte code pages nearly tied; windows-1252, the web's legacy
        # default, wins a near tie (French text otherwise comes out as Baltic cp1257)
        for match in matches:
            if match.encoding == "cp1252" and match.chaos <= best.chaos + _NEAR_TIE:
                best = match
                break
    text = _strict(body, resolve_encoding(best.encoding) or best.encoding)
    return text if text is not None else str(best)


def _strict(body: bytes, encoding: str) -> str | None:
    """``body`` decoded without replacement characters, or None. Labels come from the page, and
    "charset=zlib" names a codec too, so non-text codecs count as unknown."""
    try:
        if not getattr(codecs.lookup(encoding), "_is_text_encoding", True):
            return None
        return body.decode(encoding)
    except (UnicodeError, LookupError):
        return None


def _is_single_byte(encoding: str) -> bool:
    return encoding.replace("-", "").startswith(_SINGLE_BYTE_PREFIXES)
