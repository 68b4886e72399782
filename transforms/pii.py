"""Personal data in crawled pages: e-mail addresses, phone numbers (Korean and international), Korean resident
registration numbers, card numbers (Luhn-checked) and IP addresses.

`pii: redact` replaces each with a typed placeholder in the documents before they become examples (so token
counts are of the redacted text and nothing is encoded twice); `pii: drop` drops every example whose messages
contain any; `pii: off` keeps pages as crawled. One combined regex scans a text once; candidates that fail
their check (a date that is no date, a number that fails Luhn) are left alone.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from typing import Iterable, Iterator

from crawlers.document import Document
from transforms.example import Example
from transforms.stage import Stage, StageLog

KINDS = ("email", "phone", "rrn", "card", "ip")
PLACEHOLDERS = {"email": "[EMAIL]", "phone": "[PHONE]", "rrn": "[RRN]", "card": "[CARD]", "ip": "[IP]"}

_B = r"(?<![0-9A-Za-z])"  # ASCII boundaries: Hangul right next to a number must not hide it
_E = r"(?![0-9A-Za-z])"
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_PATTERNS = {
    "email": r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}(?![A-Za-z0-9-])",
    "rrn": _B + r"\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])[- ]?[1-8]\d{6}" + _E,
    "card": _B + r"(?:\d{4}[- ]?\d{4}[- ]?\d{4}[- ]?\d{1,7}|\d{4}[- ]?\d{6}[- ]?\d{5})" + _E,
    "ip": r"(?<![0-9A-Za-z.])(?:" + _OCTET + r"\.){3}" + _OCTET + r"(?![0-9A-Za-z]|\.\d)",
    "phone": _B + r"(?:(?:\+82[-. ]?\(?0?\)?|\(?0)(?:1[016789]|2|[3-6][1-5]|70|50[2-8])\)?[-. ]?\d{3,4}[-. ]?\d{4}"
             r"|\+[1-9]\d{0,2}[-. ]?\(?\d{1,4}\)?(?:[-. ]?\d{2,5}){1,4})" + _E,
}
_IPV6 = r"(?<![0-9A-Za-z:])(?:[0-9A-Fa-f]{1,4}:){1,7}(?::|(?::[0-9A-Fa-f]{1,4}){1,6}|[0-9A-Fa-f]{1,4})(?![0-9A-Za-z:])"
# Three scans, each skipped when what it looks for cannot occur: numbers (the lookahead makes every other
# position fail at once), e-mail addresses (need an @) and IPv6 addresses (every one holds a hex digit, a colon
# and a hex digit or colon: `_IP6_HINT`, which starts at the colon so the search jumps from colon to colon;
# a colon alone is in most pages).
_NUMBERS = re.compile("(?=[0-9+(])(?:" + "|".join(
    f"(?P<{kind}>{_PATTERNS[kind]})" for kind in ("rrn", "card", "ip", "phone")) + ")")
_EMAIL = re.compile(f"(?P<email>{_PATTERNS['email']})")
_IP6 = re.compile(f"(?P<ip>{_IPV6})")
_IP6_HINT = re.compile(r":(?<=[0-9A-Fa-f]:)[0-9A-Fa-f:]")
# Where a number can start: one of its first characters after no letter or digit. Starting with the character
# class lets the regex engine skip from candidate to candidate instead of trying `_NUMBERS` at every position.
_NUMBER_START = re.compile(r"[0-9+(](?<![0-9A-Za-z][0-9+(])")


def _numbers(text: str) -> Iterator[re.Match]:
    """The matches of `_NUMBERS.finditer(text)`, tried only where a number can start."""
    pos = 0
    while start := _NUMBER_START.search(text, pos):
        match = _NUMBERS.match(text, start.start())
        if match:
            yield match
            pos = match.end()
        else:
            pos = start.start() + 1


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _valid(kind: str, text: str) -> bool:
    if kind == "card":
        digits = re.sub(r"\D", "", text)
        return 13 <= len(digits) <= 19 and luhn_ok(digits)
    if kind == "ip" and ":" in text:
        if sum(1 for g in text.split(":") if g) < 2 or not any(ch.isdigit() for ch in text):
            return False
        try:
            ipaddress.IPv6Address(text)
        except ValueError:
            return False
    if kind == "phone" and text.startswith("+") and not text.startswith("+82"):
        return 8 <= sum(ch.isdigit() for ch in text) <= 15
    return True


class PiiScanner:
    """Find or replace the configured kinds of personal data, counting what it finds per kind."""

    def __init__(self, kinds: Iterable[str] = KINDS):
        self.kinds = frozenset(kinds)
        unknown = self.kinds - set(KINDS)
        if unknown:
            raise ValueError(f"unknown PII kinds {sorted(unknown)}; use {', '.join(KINDS)}")

    def _hits(self, text: str) -> list[tuple[str, re.Match]]:
        """Valid matches of the wanted kinds, in order, none overlapping (the earlier one wins)."""
        matches = list(_numbers(text))
        if "@" in text:
            matches += _EMAIL.finditer(text)
        if "ip" in self.kinds and _IP6_HINT.search(text):
            matches += _IP6.finditer(text)
        if len(matches) > 1:
            matches.sort(key=lambda m: (m.start(), -m.end()))
        hits, end = [], 0
        for match in matches:
            kind = match.lastgroup
            if match.start() >= end and kind in self.kinds and _valid(kind, match.group()):
                hits.append((kind, match))
                end = match.end()
        return hits

    def find(self, text: str) -> Counter:
        return Counter(kind for kind, _ in self._hits(text))

    def redact(self, text: str) -> tuple[str, Counter]:
        found: Counter = Counter()
        parts, last = [], 0
        for kind, match in self._hits(text):
            parts.append(text[last:match.start()])
            parts.append(PLACEHOLDERS[kind])
            last = match.end()
            found[kind] += 1
        if not found:
            return text, found
        parts.append(text[last:])
        return "".join(parts), found


class RedactPII(Stage):
    """Documents in, documents out with personal data replaced by typed placeholders (title and text)."""

    name = "pii"

    def __init__(self, scanner: PiiScanner):
        self.scanner = scanner
        self.found: Counter = Counter()
        self.documents = 0

    def __call__(self, documents: Iterable[Document], log: StageLog) -> Iterator[Document]:
        for doc in documents:
            text, found = self.scanner.redact(doc.text)
            title, in_title = self.scanner.redact(doc.title)
            if in_title:
                found += in_title
            if found:
                self.found += found
                self.documents += 1
                doc = doc.model_copy(update={"text": text, "title": title})
            yield doc

    def summary(self) -> dict:
        return {"mode": "redact", "found": dict(sorted(self.found.items())), "documents": self.documents}


class DropPII(Stage):
    """Examples in; an example with personal data anywhere in its messages is dropped, naming the kinds."""

    name = "pii"

    def __init__(self, scanner: PiiScanner):
        self.scanner = scanner
        self.found: Counter = Counter()
        self.examples = 0

    def __call__(self, examples: Iterable[Example], log: StageLog) -> Iterator[Example]:
        for example in examples:
            found: Counter = Counter()
            for message in example.messages:
                if isinstance(message.get("content"), str):
                    found += self.scanner.find(message["content"])
            if found:
                self.found += found
                self.examples += 1
                log.drop(example, "pii", ", ".join(f"{k} {n}" for k, n in sorted(found.items())),
                         kinds=dict(sorted(found.items())))
                continue
            yield example

    def summary(self) -> dict:
        return {"mode": "drop", "found": dict(sorted(self.found.items())), "examples": self.examples}
