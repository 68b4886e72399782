"""XHTML sites (DocBook XSL output) whose pages start with an XML declaration naming their encoding: every
page is reached and becomes a document; a page lxml cannot parse is dropped as `unparsable`, not stored as
a page without links."""

from __future__ import annotations

import sqlite3

import pytest

from configs import load_config
from crawlers.crawl import crawl
from crawlers.pages import UnparsablePage, _parse
from sites import DOCBOOK_CHAPTERS, Page, docbook_page, docbook_site, write_config

SOURCES = """
  - name: {name}
    start_urls: ["{start}"]
"""


def run_crawl(folder, sites: dict[str, str]) -> tuple[dict, dict[str, dict]]:
    sources = "".join(SOURCES.format(name=name, start=start) for name, start in sites.items())
    reports = {r.name: r for r in crawl(load_config(write_config(folder, sources)))}
    db = sqlite3.connect(folder / "out" / "state.sqlite")
    db.row_factory = sqlite3.Row
    return reports, {row["url"]: dict(row) for row in db.execute("SELECT * FROM pages")}


@pytest.fixture(scope="module")
def crawled(tmp_path_factory):
    with docbook_site("UTF-8") as utf8, docbook_site("euc-kr", "application/xhtml+xml") as euc_kr:
        reports, rows = run_crawl(tmp_path_factory.mktemp("xhtml"), {
            "gimp": utf8.url("/index.html"), "debian": euc_kr.url("/index.html"),
        })
        yield reports, rows, {"gimp": utf8, "debian": euc_kr}


@pytest.mark.parametrize("source", ["gimp", "debian"])
def test_every_xhtml_page_becomes_a_document_with_its_korean_title_and_text(crawled, source):
    reports, rows, sites = crawled
    base = sites[source].base
    documents = {url[len(base):]: row for url, row in rows.items() if url.startswith(base) and row["live"]}
    expected = {"/" if name == "index.html" else f"/{name}": chapter for name, chapter in DOCBOOK_CHAPTERS.items()}
    assert sorted(documents) == sorted(expected)
    for path, (title, sentence) in expected.items():
        assert documents[path]["title"] == title, path
        assert sentence in documents[path]["text"] and "\ufffd" not in documents[path]["text"], path
        assert documents[path]["language"] == "ko", path
    assert reports[source].dropped == {}


def test_a_str_that_lxml_refuses_raises_unparsable_page():
    page = docbook_page("layers.html", "UTF-8")  # the XML declaration kept: lxml refuses such a str
    with pytest.raises(UnparsablePage) as raised:
        _parse(page)
    assert raised.value.reason == "unparsable"
    assert _parse(page.split("?>", 1)[1]) is not None
    assert _parse("  <!-- nothing -->  ") is None  # no markup at all: no links, and dropped as empty


def test_a_page_lxml_cannot_parse_is_recorded_as_unparsable(tmp_path):
    # Two XML declarations (templates pasted together): decoding removes the leading one, lxml refuses the
    # str that still starts with the other. The page's text is extractable; its links are not.
    page = docbook_page("layers.html", "UTF-8")
    with docbook_site("UTF-8") as site:
        site.pages["/layers.html"] = Page(page.split("\n", 1)[0] + page)
        reports, rows = run_crawl(tmp_path, {"gimp": site.url("/layers.html")})
    row = rows[site.url("/layers.html")]
    assert (row["live"], row["status"], row["reason"]) == (0, 200, "unparsable")
    assert reports["gimp"].dropped == {"unparsable": 1}
