"""Drop examples whose answer repeats one already kept (another URL serving the same page, copied pages)."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Iterable, Iterator

from transforms.example import Example
from transforms.stage import Stage, StageLog

_SPACE = re.compile(r"\s+")


def normalised(text: str) -> str:
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


class ExactDedup(Stage):
    """Exact duplicates by normalised answer; the questions of one document never count as duplicates."""

    name = "dedup"

    def __call__(self, examples: Iterable[Example], log: StageLog) -> Iterator[Example]:
        first: dict[bytes, Example] = {}
        for example in examples:
            key = hashlib.sha256(normalised(example.answer).encode("utf-8")).digest()
            kept = first.setdefault(key, example)
            if kept is not example and kept.document_id != example.document_id:
                log.drop(example, "duplicate", f"duplicate of {kept.example_id} ({kept.url})")
                continue
            yield example
