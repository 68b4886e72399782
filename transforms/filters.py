"""Quality filters: documents in the wrong language, and examples too thin or only boilerplate to teach anything.

Every drop names its reason (`language`, `too_short`, `boilerplate_only`) so the manifest and the report
explain what a filter took out. Nothing here encodes text again: the assistant token count comes from compose.
"""

from __future__ import annotations

import re
from typing import Iterable, Iterator

from crawlers.document import Document
from transforms.example import Example
from transforms.stage import Stage, StageLog

_HEADING = re.compile(r"^\s{0,3}#{1,6}\s")
_LINK = re.compile(r"!?\[[^\]]*\]\([^)]*\)")
_ONLY_SEPARATORS = re.compile(r"^[\s|>»·•*/\-–—:,.]*$")
_SAMPLE = 2000  # characters looked at to guess a language from its script


def script_language(text: str) -> str | None:
    """ISO 639-1 code guessed from the writing system: enough to tell Korean pages from English ones."""
    hangul = latin = kana = han = 0
    for ch in text[:_SAMPLE]:
        o = ord(ch)
        if 0xAC00 <= o <= 0xD7A3 or 0x1100 <= o <= 0x11FF or 0x3130 <= o <= 0x318F:
            hangul += 1
        elif ch.isascii() and ch.isalpha():
            latin += 1
        elif 0x3040 <= o <= 0x30FF:
            kana += 1
        elif 0x4E00 <= o <= 0x9FFF:
            han += 1
    letters = hangul + latin + kana + han
    if not letters:
        return None
    if hangul >= 0.15 * letters:
        return "ko"
    if kana >= 0.1 * letters:
        return "ja"
    if han >= 0.3 * letters:
        return "zh"
    return "en" if latin >= 0.5 * letters else None


def language_of(doc: Document) -> str | None:
    """The crawler's language (primary subtag), else the one the script suggests."""
    if doc.language:
        return doc.language.split("-")[0].split("_")[0].lower()
    return script_language(doc.text)


class LanguageFilter(Stage):
    """Keep documents in the configured languages; a document whose language cannot be told is kept."""

    name = "language"

    def __init__(self, languages: Iterable[str]):
        self.languages = frozenset(code.lower() for code in languages)

    def __call__(self, documents: Iterable[Document], log: StageLog) -> Iterator[Document]:
        for doc in documents:
            language = language_of(doc)
            if language is not None and language not in self.languages:
                log.drop(doc, "language", f"{doc.url}: {language}", language=language)
                continue
            yield doc


class QualityFilter(Stage):
    """Drop examples whose answers are shorter than `min_tokens`, or consist only of boilerplate lines."""

    name = "quality"

    def __init__(self, min_tokens: int, boilerplate: Iterable[str] | None):
        self.min_tokens = min_tokens
        self.patterns = [re.compile(p) for p in boilerplate] if boilerplate is not None else None

    def __call__(self, examples: Iterable[Example], log: StageLog) -> Iterator[Example]:
        for example in examples:
            if example.answer_tokens < self.min_tokens:
                log.drop(example, "too_short", f"{example.url}: {example.answer_tokens} answer tokens")
            elif self.patterns is not None and self.boilerplate_only(example.answers):
                log.drop(example, "boilerplate_only", f"{example.url}: {example.answers[:80]!r}")
            else:
                yield example

    def boilerplate_only(self, text: str) -> bool:
        """True when no line says anything: headings, link lists, separators and boilerplate patterns only."""
        for line in text.split("\n"):
            if not line.strip() or _HEADING.match(line):
                continue
            if len(line) > 200:
                return False  # a long line is content; stop early, most answers end here
            if _ONLY_SEPARATORS.match(_LINK.sub("", line)):
                continue
            if any(p.search(line) for p in self.patterns):
                continue
            return False
        return True
