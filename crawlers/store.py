"""The crawl state in SQLite under `output_dir`: every URL seen, its validators and its latest document.

The crawl writes here page by page (so an interrupted crawl keeps what it fetched); `build` reads the live
documents back in URL order. Each write is its own transaction, so the file is always consistent.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from contextlib import closing
from pathlib import Path
from typing import Iterator

from crawlers.document import Document

SCHEMA = """
CREATE TABLE IF NOT EXISTS pages (
    url TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    status INTEGER,
    etag TEXT,
    last_modified TEXT,
    content_hash TEXT,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    fetched_at TEXT,
    title TEXT,
    category TEXT,
    language TEXT,
    text TEXT,
    live INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS pages_source ON pages (source, live);
"""


def now() -> str:
    """UTC timestamp with microseconds: fine enough to tell two crawls in the same second apart."""
    return datetime.now(timezone.utc).isoformat()


def state_path(output_dir: Path) -> Path:
    return Path(output_dir) / "state.sqlite"


def connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=30, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(SCHEMA)
    return db


class PageStore:
    """Read and write pages of the crawl state."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.db = connect(self.path)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "PageStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def save_document(self, doc: Document, *, status: int, etag: str | None, last_modified: str | None) -> str:
        """Store a fetched page; returns 'new', 'changed' or 'unchanged' (judged by the main text's hash)."""
        row = self.db.execute("SELECT content_hash, live FROM pages WHERE url = ?", (doc.url,)).fetchone()
        if row is None:
            change = "new"
        elif row[0] == doc.content_hash and row[1]:
            change = "unchanged"
        else:
            change = "changed"
        self.db.execute(
            """INSERT INTO pages (url, source, status, etag, last_modified, content_hash, first_seen, last_seen,
                                  fetched_at, title, category, language, text, live)
               VALUES (:url, :source, :status, :etag, :lm, :hash, :now, :now, :fetched, :title, :category, :lang, :text, 1)
               ON CONFLICT (url) DO UPDATE SET
                   source = excluded.source, status = excluded.status, etag = excluded.etag,
                   last_modified = excluded.last_modified, content_hash = excluded.content_hash,
                   last_seen = excluded.last_seen, title = excluded.title, category = excluded.category,
                   language = excluded.language, text = excluded.text, live = 1,
                   fetched_at = CASE WHEN pages.content_hash = excluded.content_hash AND pages.live
                                     THEN pages.fetched_at ELSE excluded.fetched_at END""",
            dict(url=doc.url, source=doc.source, status=status, etag=etag, lm=last_modified,
                 hash=doc.content_hash, now=now(), fetched=doc.fetched_at, title=doc.title, category=doc.category,
                 lang=doc.language, text=doc.text),
        )
        return change

    def documents(self, sources: list[str] | None = None) -> Iterator[Document]:
        """Live documents in URL order, streamed (no list of all texts is built)."""
        query = "SELECT url, source, title, category, text, language, content_hash, fetched_at FROM pages WHERE live"
        params: tuple = ()
        if sources is not None:
            query += f" AND source IN ({','.join('?' * len(sources))})"
            params = tuple(sources)
        with closing(self.db.execute(query + " ORDER BY url", params)) as cursor:
            for url, source, title, category, text, language, content_hash, fetched_at in cursor:
                yield Document(url=url, source=source, title=title, category=category, text=text,
                               language=language, content_hash=content_hash, fetched_at=fetched_at)

    def retire_unseen(self, source: str, *, since: str) -> list[str]:
        """After a complete crawl: pages of `source` not seen since `since` leave the dataset."""
        rows = self.db.execute(
            "SELECT url FROM pages WHERE source = ? AND live AND last_seen < ? ORDER BY url", (source, since)
        ).fetchall()
        self.db.execute("UPDATE pages SET live = 0 WHERE source = ? AND live AND last_seen < ?", (source, since))
        return [url for (url,) in rows]

    def count_documents(self) -> int:
        return self.db.execute("SELECT count(*) FROM pages WHERE live").fetchone()[0]
