"""Helpers for the operations tests: a documentation site of any size with distinct pages, its config, the CLI
in a child process, a page held back until a condition holds, and the run ledger read straight from SQLite."""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from sites import Page, Site, html_page, write_config

PIPELINE = Path(__file__).resolve().parents[1] / "pipeline.py"
VOCABULARY = (
    "adapter batch channel client config daemon endpoint error field gateway header index interface job key latency "
    "message node offset partner payload queue record relay request response retry route schema server session "
    "signature socket status stream table tenant thread timeout token topic trace transaction upload user version "
    "window worker archive audit backup buffer cache cluster cursor digest export filter format handler journal "
    "limit mirror monitor parser policy proxy replica rollback segment shard snapshot storage template transfer"
).split()


def words(seed: int, paragraphs: int = 3) -> str:
    """Paragraphs of text no other seed shares, so deduplication keeps every page."""
    rng = random.Random(seed)
    return "".join("<p>" + " ".join(rng.choice(VOCABULARY) for _ in range(40)).capitalize() + ".</p>"
                   for _ in range(paragraphs))


def docs_site(sections: int = 3, leaves: int = 4, *, version: int = 1, delay: float = 0.0) -> dict[str, Page]:
    """`/` links to every section, each section to its leaves and back; leaves link to their siblings, so most
    pages are linked from several others (the URL dedup matters). 1 + sections × (1 + leaves) pages."""
    pages = {"/": Page(html_page("Home", words(version * 100_000), [f"/s{s}/" for s in range(sections)]))}
    for s in range(sections):
        children = [f"/s{s}/p{i}.html" for i in range(leaves)]
        pages[f"/s{s}/"] = Page(html_page(f"Section {s}", words(version * 100_000 + 1000 * (s + 1)), ["/", *children]),
                                delay=delay)
        for i, path in enumerate(children):
            title = f"Topic {s}.{i}" + (f" v{version}" if version > 1 else "")
            pages[path] = Page(html_page(title, words(version * 100_000 + 1000 * (s + 1) + i + 1),
                                         [f"/s{s}/", *children]), delay=delay)
    return pages


@contextmanager
def held(site: Site, path: str, until: Callable[[], object]) -> Iterator[None]:
    """The page at `path` is answered only once `until()` has been true (e.g. once every crawler has started);
    from then on at once."""
    page = site.pages[path]
    opened = threading.Event()

    def gated(_: str) -> Page:
        if not opened.is_set():
            wait_for(until, what=f"the condition holding {path}")
            opened.set()
        return page

    site.pages[path] = gated
    try:
        yield
    finally:
        site.pages[path] = page


def config(folder: Path, base_url: str, *, crawl: str = "", extra: str = "", source: str = "",
           progress: str = "off") -> Path:
    return write_config(folder, f'  - name: docs\n    start_urls: ["{base_url}/"]\n{source}',
                        crawl=crawl + f'\n  progress: "{progress}"\n  progress_interval_seconds: 0.1',
                        extra=extra or "dataset: {test_fraction: 0.2}")


def pipeline(config_path: Path, *args: str, log_format: str | None = None) -> subprocess.Popen:
    """The CLI in its own process (and process group), as cron or a shell would start it."""
    top = ["--log-format", log_format] if log_format else []
    return subprocess.Popen([sys.executable, str(PIPELINE), *top, *args, "--config", str(config_path)],
                            cwd=config_path.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def runs(output_dir: Path) -> list[dict]:
    """Every ledger row, oldest first."""
    path = output_dir / "state.sqlite"
    if not path.exists():
        return []
    with sqlite3.connect(path, timeout=30) as db:
        db.row_factory = sqlite3.Row
        try:
            rows = db.execute("SELECT * FROM runs ORDER BY id").fetchall()
        except sqlite3.OperationalError:
            return []
    return [{**dict(row), "counts": json.loads(row["counts"] or "{}")} for row in rows]


def wait_for(condition: Callable[[], object], timeout: float = 60.0, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def snapshot(folder: Path) -> dict[str, bytes | str]:
    """Every file's bytes and every symlink's target under `folder`."""
    found: dict[str, bytes | str] = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_symlink():
            found[key] = "-> " + str(path.readlink())
        elif path.is_file():
            found[key] = path.read_bytes()
    return found
