"""The crawl state in SQLite under `output_dir`: every URL seen, its validators, outlinks and latest document.

The crawl writes here page by page (so an interrupted crawl keeps what it fetched); `build` reads the live
documents back in URL order and the latest crawl report of each source. Each write is its own transaction,
so the file is always consistent.

A worker of a shared crawl (`crawl --worker`) does not write its pages here directly: it publishes them as
records (`document_record`, `dropped_record`) to the crawl's page stream in Redis, and every worker applies
the whole stream to its own state (`apply`), each entry once per state, with the position kept in the
`ingest` table (see `crawlers.frontier`).

A row is one canonical URL. `live` rows are the documents of the dataset; the others are URLs that were
fetched but gave no document (`reason` says why: not_html, empty, http_404, ...). `fetched_url` is the
canonical form of the URL the page was fetched from, which differs from `url` when the page names another
URL as `rel=canonical`; the validators (ETag, Last-Modified) belong to it, and `links` are the page's
in-scope outlinks, so a page answering 304 Not Modified still leads the crawl to its children.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from base.state import connect, migrate, now
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
CREATE TABLE IF NOT EXISTS crawls (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    finish_reason TEXT NOT NULL,
    report TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS crawls_source ON crawls (source, id);
CREATE TABLE IF NOT EXISTS ingest (
    source TEXT PRIMARY KEY,
    crawl TEXT NOT NULL,
    last_id TEXT NOT NULL,
    since TEXT NOT NULL
);
"""
# Columns added after the first release; a state file written before gets them on open.
ADDED_COLUMNS = {"fetched_url": "TEXT", "reason": "TEXT", "links": "TEXT"}


def open_state(path: Path) -> sqlite3.Connection:
    """The state at `path` with the crawl's tables created and migrated."""
    db = connect(Path(path))
    migrate(db, SCHEMA, "pages", ADDED_COLUMNS)
    db.execute("CREATE INDEX IF NOT EXISTS pages_fetched ON pages (fetched_url)")
    return db


def document_record(doc: Document, *, status: int, etag: str | None, last_modified: str | None, fetched_url: str,
                    links: list[str], not_modified: bool = False) -> dict[str, Any]:
    """A fetched document as a worker publishes it: everything `PageStore.apply` needs to store it."""
    return {"kind": "document", **doc.model_dump(), "status": status, "etag": etag, "last_modified": last_modified,
            "fetched_url": fetched_url, "links": links, "not_modified": not_modified}


def dropped_record(url: str, *, source: str, status: int | None, reason: str, fetched_url: str,
                   etag: str | None = None, last_modified: str | None = None, links: list[str] | None = None,
                   keep: bool = False, not_modified: bool = False) -> dict[str, Any]:
    """A fetched page that gave no document, as a worker publishes it (the arguments of `PageStore.drop`)."""
    return {"kind": "dropped", "url": url, "source": source, "status": status, "reason": reason,
            "fetched_url": fetched_url, "etag": etag, "last_modified": last_modified, "links": links or [],
            "keep": keep, "not_modified": not_modified}


@dataclass(frozen=True)
class KnownPage:
    """What the previous crawls left for one fetched URL: enough to send a conditional request and to
    answer a 304 without the body."""

    url: str
    live: bool
    reason: str | None
    etag: str | None
    last_modified: str | None


class PageStore:
    """Read and write pages of the crawl state."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.db = open_state(self.path)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "PageStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- what the crawl reads -------------------------------------------------------------------

    def known(self, source: str) -> dict[str, KnownPage]:
        """Every URL of `source` fetched before, by the canonical URL it was fetched from."""
        rows = self.db.execute(
            "SELECT coalesce(fetched_url, url), url, live, reason, etag, last_modified FROM pages WHERE source = ?",
            (source,),
        )
        return {key: KnownPage(url, bool(live), reason, etag, lm) for key, url, live, reason, etag, lm in rows}

    def has_pages(self, source: str) -> bool:
        return self.db.execute("SELECT 1 FROM pages WHERE source = ? LIMIT 1", (source,)).fetchone() is not None

    def links(self, url: str) -> list[str]:
        row = self.db.execute("SELECT links FROM pages WHERE url = ?", (url,)).fetchone()
        return json.loads(row[0]) if row and row[0] else []

    def labels(self, url: str) -> tuple[str | None, str | None] | None:
        """The stored title and category of `url`'s document (None when it never had a row)."""
        row = self.db.execute("SELECT title, category FROM pages WHERE url = ?", (url,)).fetchone()
        return (row[0], row[1]) if row else None

    def seen_since(self, url: str, since: str, *, fetched_url: str) -> bool:
        """Whether another fetched URL already gave the document `url` in the crawl started at `since`."""
        row = self.db.execute(
            "SELECT 1 FROM pages WHERE url = ? AND live AND last_seen >= ? AND coalesce(fetched_url, url) != ?",
            (url, since, fetched_url),
        ).fetchone()
        return row is not None

    # --- what the crawl writes ------------------------------------------------------------------

    def save_document(
        self,
        doc: Document,
        *,
        status: int,
        etag: str | None,
        last_modified: str | None,
        fetched_url: str | None = None,
        links: list[str] | None = None,
    ) -> str:
        """Store a fetched page; returns 'new', 'changed' or 'unchanged' (judged by the main text's hash)."""
        row = self.db.execute("SELECT content_hash, live FROM pages WHERE url = ?", (doc.url,)).fetchone()
        if row is None:
            change = "new"
        elif row[0] == doc.content_hash and row[1]:
            change = "unchanged"
        elif row[1]:
            change = "changed"
        else:
            change = "new"  # back in the dataset after it had left
        self.db.execute(
            """INSERT INTO pages (url, source, status, etag, last_modified, content_hash, first_seen, last_seen,
                                  fetched_at, title, category, language, text, live, fetched_url, reason, links)
               VALUES (:url, :source, :status, :etag, :lm, :hash, :now, :now, :fetched, :title, :category, :lang,
                       :text, 1, :fetched_url, NULL, :links)
               ON CONFLICT (url) DO UPDATE SET
                   source = excluded.source, status = excluded.status, etag = excluded.etag,
                   last_modified = excluded.last_modified, content_hash = excluded.content_hash,
                   last_seen = excluded.last_seen, title = excluded.title, category = excluded.category,
                   language = excluded.language, text = excluded.text, live = 1,
                   fetched_url = excluded.fetched_url, reason = NULL, links = excluded.links,
                   fetched_at = CASE WHEN pages.content_hash = excluded.content_hash AND pages.live
                                     THEN pages.fetched_at ELSE excluded.fetched_at END""",
            dict(url=doc.url, source=doc.source, status=status, etag=etag, lm=last_modified,
                 hash=doc.content_hash, now=now(), fetched=doc.fetched_at, title=doc.title, category=doc.category,
                 lang=doc.language, text=doc.text, fetched_url=fetched_url or doc.url,
                 links=json.dumps(links or [], ensure_ascii=False)),
        )
        return change

    def not_modified(self, url: str, *, status: int = 304, document: bool = True) -> str:
        """The server says the page is as we stored it: it was seen, and (with `document`) its stored
        document is live again if it had left only because it was no longer linked. Returns 'unchanged'
        or 'new'."""
        row = self.db.execute("SELECT live, content_hash FROM pages WHERE url = ?", (url,)).fetchone()
        revive = document and row is not None and not row[0] and row[1] is not None
        self.db.execute(
            "UPDATE pages SET last_seen = ?, status = ?, live = live OR ?, reason = CASE WHEN ? THEN NULL ELSE reason END"
            " WHERE url = ?",
            (now(), status, revive, revive, url),
        )
        return "new" if revive else "unchanged"

    def drop(
        self,
        url: str,
        *,
        source: str,
        status: int | None,
        reason: str,
        fetched_url: str | None = None,
        etag: str | None = None,
        last_modified: str | None = None,
        links: list[str] | None = None,
        keep: bool = False,
    ) -> bool:
        """Record that `url` gave no document this time, and why.

        With `keep` (a transient failure: 5xx, timeout, connection error) a live document stays in the
        dataset and counts as seen; otherwise (404/410, not HTML, empty, too large...) it leaves the
        dataset. Returns True when a live document left.
        """
        row = self.db.execute("SELECT live FROM pages WHERE url = ?", (url,)).fetchone()
        was_live = bool(row and row[0])
        stamp = now()
        if row is None:
            self.db.execute(
                """INSERT INTO pages (url, source, status, etag, last_modified, first_seen, last_seen, live,
                                      fetched_url, reason, links)
                   VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?)""",
                (url, source, status, etag, last_modified, stamp, stamp, fetched_url or url, reason,
                 json.dumps(links or [], ensure_ascii=False)),
            )
        elif keep:
            self.db.execute(
                "UPDATE pages SET status = ?, reason = ?, last_seen = ? WHERE url = ?", (status, reason, stamp, url)
            )
        else:
            self.db.execute(
                """UPDATE pages SET status = ?, reason = ?, last_seen = ?, live = 0, etag = ?, last_modified = ?,
                                    fetched_url = ?, links = ? WHERE url = ?""",
                (status, reason, stamp, etag, last_modified, fetched_url or url,
                 json.dumps(links or [], ensure_ascii=False), url),
            )
        return was_live and not keep

    def retire_unseen(self, source: str, *, since: str) -> list[str]:
        """After a complete crawl: pages of `source` not seen since `since` leave the dataset."""
        rows = self.db.execute(
            "SELECT url FROM pages WHERE source = ? AND live AND last_seen < ? ORDER BY url", (source, since)
        ).fetchall()
        self.db.execute(
            "UPDATE pages SET live = 0, reason = 'unreached' WHERE source = ? AND live AND last_seen < ?",
            (source, since),
        )
        return [url for (url,) in rows]

    # --- a shared crawl's pages (crawlers.frontier) ----------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction, taken at once (BEGIN IMMEDIATE), so workers sharing this state take turns."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def ingest_position(self, source: str, crawl: str) -> tuple[str, str]:
        """Where this state is in the page stream of the shared crawl `crawl` (its start, which names it): the
        last entry applied, and when this state began taking the crawl's pages (what `retire_unseen` compares
        with, on this machine's clock). Another crawl than the one recorded starts from the stream's start."""
        self.db.execute(
            """INSERT INTO ingest (source, crawl, last_id, since) VALUES (?, ?, '0-0', ?)
               ON CONFLICT (source) DO UPDATE SET crawl = excluded.crawl, last_id = '0-0', since = excluded.since
               WHERE ingest.crawl != excluded.crawl""",
            (source, crawl, now()),
        )
        last_id, since = self.db.execute("SELECT last_id, since FROM ingest WHERE source = ?", (source,)).fetchone()
        return last_id, since

    def advance(self, source: str, last_id: str) -> None:
        self.db.execute("UPDATE ingest SET last_id = ? WHERE source = ?", (last_id, source))

    def stored_document(self, url: str) -> dict[str, Any]:
        """The stored document of `url` as a record, for a worker that got 304 Not Modified: the other workers'
        states may not hold it."""
        row = self.db.execute(
            "SELECT url, source, title, category, text, language, content_hash, fetched_at, etag, last_modified,"
            " coalesce(fetched_url, url), links FROM pages WHERE url = ?",
            (url,),
        ).fetchone()
        assert row is not None, url  # a 304 answers a request made from this state's validators; rows stay
        url, source, title, category, text, language, content_hash, fetched_at, etag, lm, fetched_url, links = row
        doc = Document(url=url, source=source, title=title, category=category, text=text, language=language,
                       content_hash=content_hash, fetched_at=fetched_at)
        return document_record(doc, status=304, etag=etag, last_modified=lm, fetched_url=fetched_url,
                               links=json.loads(links or "[]"), not_modified=True)

    def apply(self, record: dict[str, Any]) -> str | None:
        """Store a record a worker published, as the worker's own crawl would have stored it here: a 304 of a
        page this state holds only counts it as seen, anything else is stored in full. Returns the change:
        'new', 'changed', 'unchanged', 'removed' or None."""
        url = record["url"]
        fields = {name: record[name] for name in ("status", "etag", "last_modified", "fetched_url", "links")}
        if record["kind"] == "document":
            if record["not_modified"] and self._holds(url, record["content_hash"]):
                return self.not_modified(url)
            doc = Document(**{name: record[name] for name in Document.model_fields})
            return self.save_document(doc, **fields)
        if record["not_modified"] and self._holds(url):
            self.not_modified(url, document=False)
            return None
        removed = self.drop(url, source=record["source"], reason=record["reason"], keep=record["keep"], **fields)
        return "removed" if removed else None

    def _holds(self, url: str, content_hash: str | None = None) -> bool:
        row = self.db.execute("SELECT content_hash FROM pages WHERE url = ?", (url,)).fetchone()
        return row is not None and (content_hash is None or row[0] == content_hash)

    # --- crawl reports ---------------------------------------------------------------------------

    def record_crawl(self, source: str, report: dict[str, Any]) -> None:
        self.db.execute(
            "INSERT INTO crawls (source, started_at, finished_at, finish_reason, report) VALUES (?, ?, ?, ?, ?)",
            (source, report["started_at"], report["finished_at"], report["finish_reason"],
             json.dumps(report, ensure_ascii=False, sort_keys=True)),
        )

    def latest_crawls(self, sources: list[str] | None = None) -> dict[str, dict[str, Any]]:
        """The report of the latest crawl of each source (of `sources`, if given), by source name."""
        rows = self.db.execute(
            "SELECT source, report FROM crawls WHERE id IN (SELECT max(id) FROM crawls GROUP BY source) ORDER BY source"
        )
        return {name: json.loads(report) for name, report in rows if sources is None or name in sources}

    # --- what the build reads --------------------------------------------------------------------

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
