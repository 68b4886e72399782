"""The record a crawl produces and a build consumes: one page's main content, with where it came from."""

from __future__ import annotations

import hashlib

from pydantic import BaseModel, ConfigDict


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Document(BaseModel):
    model_config = ConfigDict(frozen=True)

    url: str  # canonical URL: one page, one document
    source: str
    title: str
    category: str
    text: str  # markdown of the main content
    language: str | None = None
    content_hash: str
    fetched_at: str  # ISO 8601, UTC

    @property
    def id(self) -> str:
        """Stable across re-crawls: derived from the canonical URL only."""
        return hashlib.sha256(self.url.encode("utf-8")).hexdigest()[:16]
