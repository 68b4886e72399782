"""Incremental re-crawl: conditional requests from the stored validators, 304s kept without extraction,
changed / unchanged / removed judged by the extracted text, and the dataset manifest recording it all."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from configs import load_config
from crawlers.crawl import crawl
from pipeline import main
from sites import Page, Site, html_page, prose, write_config

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample_site"
LAST_MODIFIED = "Tue, 03 Nov 2026 10:00:00 GMT"


def page(title: str, links: tuple[str, ...] = ("/",), **kwargs) -> Page:
    return Page(html_page(title, prose(title.lower()), list(links)), **kwargs)


@pytest.fixture(scope="module")
def recrawled(tmp_path_factory):
    """Crawl a site, change it as a live site changes, crawl it again."""
    folder = tmp_path_factory.mktemp("recrawl")
    index = ["/a.html", "/b.html", "/c.html", "/d.html", "/e.html", "/g.html", "/h.html", "/lm.html"]
    with Site({
        "/": Page(html_page("Home", prose("home"), index)),
        "/a.html": page("Alpha", ("/", "/a-child.html")),
        "/a-child.html": page("Alpha child"),
        "/b.html": page("Bravo"),
        "/c.html": page("Charlie"),
        "/d.html": page("Delta"),
        "/e.html": page("Echo"),
        "/g.html": page("Golf"),
        "/h.html": page("Hotel", validators=False),
        "/lm.html": page("Lima", validators=False, last_modified=LAST_MODIFIED),
    }) as site:
        config = load_config(write_config(folder, f'  - name: docs\n    start_urls: ["{site.url("/")}"]'))
        first = crawl(config)[0]
        first_hits = list(site.hits)
        site.hits.clear()

        site.pages["/"] = Page(html_page("Home", prose("home"), [p for p in index if p != "/g.html"] + ["/f.html"]))
        site.pages["/b.html"] = Page(html_page("Bravo", prose("bravo") + "<p>A new paragraph about retries.</p>", ["/"]))
        site.pages["/c.html"] = Page(html_page("Charlie", prose("charlie"), ["/", "/f.html", "/news.html"]))
        site.pages["/f.html"] = page("Foxtrot")
        del site.pages["/d.html"]
        site.pages["/e.html"] = Page("gone", 410, "text/plain")
        second = crawl(config)[0]
        db = sqlite3.connect(Path(config.output_dir) / "state.sqlite")
        db.row_factory = sqlite3.Row
        rows = {row["url"][len(site.base):]: dict(row) for row in db.execute("SELECT * FROM pages")}
        yield first, second, first_hits, site, rows


def paths(urls: list[str], site: Site) -> list[str]:
    return sorted(url[len(site.base):] for url in urls)


def test_first_crawl_finds_every_page_new(recrawled):
    first, _, _, site, _ = recrawled
    assert paths(first.changes["new"], site) == [
        "/", "/a-child.html", "/a.html", "/b.html", "/c.html", "/d.html", "/e.html", "/g.html", "/h.html",
        "/lm.html",
    ]
    assert first.conditional_requests == 0


def test_recrawl_sends_the_stored_validators(recrawled):
    _, second, first_hits, site, _ = recrawled
    etag = next(h for h in first_hits if h.path == "/a.html")
    sent = site.requested("/a.html")[0].headers
    assert sent.get("If-None-Match", "").startswith('"') and "If-Modified-Since" not in sent
    assert site.requested("/lm.html")[0].headers.get("If-Modified-Since") == LAST_MODIFIED
    assert "If-None-Match" not in site.requested("/h.html")[0].headers
    assert etag.status == 200 and site.requested("/a.html")[0].status == 304
    assert second.conditional_requests >= 6


def test_recrawl_counts_304s_as_unchanged_and_follows_their_stored_links(recrawled):
    _, second, _, site, rows = recrawled
    assert second.pages_by_status["304"] == 3  # /a.html, /a-child.html, /lm.html
    assert paths(second.changes["unchanged"], site) == [
        "/", "/a-child.html", "/a.html", "/c.html", "/h.html", "/lm.html",
    ]
    assert rows["/a-child.html"]["live"] == 1  # reached only through the 304 page's stored links


def test_recrawl_judges_change_by_extracted_text_not_navigation(recrawled):
    _, second, _, site, _ = recrawled
    assert paths(second.changes["changed"], site) == ["/b.html"]
    assert paths(second.changes["new"], site) == ["/f.html"]  # linked only from /c.html's new navigation


def test_deleted_gone_and_unlinked_pages_leave_the_dataset(recrawled):
    _, second, _, site, rows = recrawled
    assert paths(second.changes["removed"], site) == ["/d.html", "/e.html", "/g.html"]
    assert (rows["/d.html"]["live"], rows["/d.html"]["status"], rows["/d.html"]["reason"]) == (0, 404, "http_404")
    assert (rows["/e.html"]["live"], rows["/e.html"]["status"]) == (0, 410)
    assert (rows["/g.html"]["live"], rows["/g.html"]["reason"]) == (0, "unreached")
    assert rows["/news.html"]["live"] == 0  # linked, but never existed


def test_state_keeps_first_and_last_seen_and_text_hash(recrawled):
    *_, rows = recrawled
    a = rows["/a.html"]
    assert a["first_seen"] < a["last_seen"] and len(a["content_hash"]) == 64
    base = a["url"][: -len("/a.html")]
    assert json.loads(a["links"]) == [base + "/", base + "/a-child.html"]


def test_run_on_an_edited_export_records_changes_and_crawl_stats_in_the_manifest(tmp_path, capsys):
    site = tmp_path / "site"
    shutil.copytree(SAMPLE, site)
    config = tmp_path / "config.yaml"
    config.write_text(f"""
output_dir: out
crawl: {{start_delay_seconds: 0, extract_workers: 1}}
sources:
  - name: guide
    serve_dir: {site}
    start_urls: ["http://guide.example.internal/index.html"]
dataset: {{test_fraction: 0.2, max_tokens_per_example: 4096}}
""", encoding="utf-8")
    assert main(["run", "--config", str(config)]) == 0
    http = site / "http.html"
    http.write_text(http.read_text(encoding="utf-8").replace("수신 포트는 8443입니다", "수신 포트는 9443입니다"),
                    encoding="utf-8")
    (site / "faq.html").unlink()
    capsys.readouterr()
    assert main(["run", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "changed 1 · unchanged 19 · removed 1" in out
    assert "  changed: http://guide.example.internal/http.html" in out
    assert "  removed: http://guide.example.internal/faq.html" in out

    manifest = json.loads((tmp_path / "out" / "datasets" / "guide" / "latest" / "manifest.json").read_text())
    report = manifest["crawl"]["guide"]
    assert report["counts"] == {"new": 0, "changed": 1, "unchanged": 19, "removed": 1}
    assert report["changes"]["removed"] == ["http://guide.example.internal/faq.html"]
    assert report["pages_by_status"]["304"] == 19 and report["pages_by_status"]["404"] == 1
    assert report["dropped"]["http_404"] == 1 and report["bytes_downloaded"] > 0
