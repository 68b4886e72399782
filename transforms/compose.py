"""Documents → chat examples: fill the templates, and split a page that is over the token limit.

Every example's count is exact. A page that fits is encoded once (in a threaded batch with its neighbours);
only a page over the limit is cut into blocks and counted again piece by piece.
"""

from __future__ import annotations

import hashlib
from itertools import islice
from typing import Iterable, Iterator

from crawlers.document import Document
from transforms.chunk import Chunker
from transforms.example import Example
from transforms.stage import Stage, StageLog
from transforms.tokens import TokenCounter, chat_tokens

BATCH = 256
SECTION_ALLOWANCE = 64  # tokens reserved for a section name in the question of a split page


def _stable_int(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("\x00".join(parts).encode("utf-8")).digest()[:8], "big")


class ComposeExamples(Stage):
    name = "compose"

    def __init__(self, counter: TokenCounter, system_prompt: str, user_templates: list[str], limit: int):
        self.counter = counter
        self.system_prompt = system_prompt
        self.user_templates = user_templates
        self.limit = limit

    def __call__(self, documents: Iterable[Document], log: StageLog) -> Iterator[Example]:
        docs = iter(documents)
        while batch := list(islice(docs, BATCH)):
            for doc, n in zip(batch, self.counter.texts([d.text for d in batch])):
                if not doc.text.strip():
                    log.drop(doc, "empty_document", doc.url)
                    continue
                example = self._example(doc, doc.text, None, 0, n)
                if example.tokens <= self.limit:
                    yield example
                else:
                    yield from self._split(doc, log)

    def _split(self, doc: Document, log: StageLog) -> Iterator[Example]:
        overhead = self._example(doc, "", None, 0, 0).tokens
        chunker = Chunker(self.counter.texts, self.limit - overhead - SECTION_ALLOWANCE)
        pieces, too_big = chunker.split(doc.text)
        for excerpt in too_big:
            log.drop(doc, "block_over_limit", f"{doc.url}: {excerpt[:80]}")
        ordinal: dict[str | None, int] = {}
        for piece, n in zip(pieces, self.counter.texts([p.text for p in pieces])):
            ordinal[piece.section] = ordinal.get(piece.section, -1) + 1
            example = self._example(doc, piece.text, piece.section, ordinal[piece.section], n)
            if example.tokens <= self.limit:
                yield example
            else:
                log.drop(example, "over_limit", f"{doc.url} ({example.tokens} tokens)")

    def _example(self, doc: Document, answer: str, section: str | None, ordinal: int, answer_tokens: int) -> Example:
        template = self.user_templates[_stable_int(doc.url, section or "") % len(self.user_templates)]
        title = doc.title if not section or "{section}" in template else f"{doc.title} - {section}"
        fields = {"title": title, "category": doc.category, "section": section or doc.title, "url": doc.url}
        system = self.system_prompt.format_map(fields)
        user = template.format_map(fields)
        messages = [
            {"role": "system", "content": system},
            {"role": "user", "content": user},
            {"role": "assistant", "content": answer},
        ]
        cached = self.counter.cached
        values = cached("system") + cached(system) + cached("user") + cached(user) + cached("assistant")
        tokens = chat_tokens(len(messages), values + answer_tokens)
        key = f"{doc.url}\x00{section or ''}\x00{ordinal}\x00{template}"
        return Example(
            example_id=hashlib.sha256(key.encode("utf-8")).hexdigest()[:16],
            document_id=doc.id,
            url=doc.url,
            source=doc.source,
            category=doc.category,
            title=doc.title,
            section=section,
            messages=messages,
            tokens=tokens,
        )
