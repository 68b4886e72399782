"""The item a crawl yields for every fetched page, document or not, so every outcome is stored and counted."""

from __future__ import annotations

from dataclasses import dataclass, field

from crawlers.document import Document


@dataclass
class FetchedPage:
    source: str
    url: str
    """Canonical URL of the page's document (its `rel=canonical` when it names one in scope)."""
    fetched_url: str
    """Canonical form of the URL the page was fetched from (after redirects)."""
    status: int
    document: Document | None = None
    reason: str | None = None
    """Why the page cannot be a document (not_html, binary, ...); the pipelines drop it with this reason."""
    not_modified: bool = False
    """The server answered 304: the stored document (or the stored reason) stands, nothing was extracted."""
    etag: str | None = None
    last_modified: str | None = None
    links: list[str] = field(default_factory=list)
    """In-scope outlinks, kept in the state so a later 304 still leads to them."""
    link_share: float = 0.0
    """Share of the text's words that are link words (see `crawlers.pages.PageContent`)."""
