"""A frameset site (an old intranet guide): the frames' and iframes' pages are crawled, the content frames'
pages are the documents, and the frameset and its navigation-only frame are not (the navigation's links are
followed)."""

from __future__ import annotations

import sqlite3

from configs import load_config
from crawlers.crawl import crawl
from sites import FRAME_CHAPTERS, frameset_site, write_config


def test_documents_come_from_the_content_frames_and_the_nav_frame_links_are_followed(tmp_path):
    with frameset_site() as site:
        sources = f'  - name: guide\n    start_urls: ["{site.url("/")}"]\n'
        [report] = crawl(load_config(write_config(tmp_path, sources)))
        requested = {hit.path for hit in site.hits}
    db = sqlite3.connect(tmp_path / "out" / "state.sqlite")
    db.row_factory = sqlite3.Row
    rows = {row["url"][len(site.base):]: dict(row) for row in db.execute("SELECT * FROM pages")}
    assert {"/nav.html", *FRAME_CHAPTERS} <= requested
    documents = {path: row for path, row in rows.items() if row["live"]}
    assert sorted(documents) == sorted(FRAME_CHAPTERS)
    for path, (title, sentence) in FRAME_CHAPTERS.items():
        assert documents[path]["title"] == title, path
        assert sentence in documents[path]["text"], path
    assert (rows["/"]["live"], rows["/"]["reason"]) == (0, "empty")
    assert (rows["/nav.html"]["live"], rows["/nav.html"]["reason"]) == (0, "boilerplate")
    assert report.dropped == {"empty": 1, "boilerplate": 1}
