"""One crawl of three sources served on 127.0.0.1, full of what real sites do wrong; every test asserts
one behaviour on that crawl's reports, its SQLite state, or the requests the servers received."""

from __future__ import annotations

import json
import sqlite3
from urllib.parse import quote

import pytest

from configs import load_config
from crawlers.crawl import crawl
from sites import Page, Site, html_page, prose, write_config

KO = ("연동 가이드는 똠방각하 예제로 시작합니다. 온라인 채널은 요청과 응답을 실시간으로 주고받으며, "
      "모든 거래는 감사 로그에 기록되어 운영자가 처음부터 끝까지 추적할 수 있습니다. ")
CODE = 'def call(x):\n    if x:\n        return  {"a": 1}  # two spaces kept\n\tindented_with_tab = True\n'
TABLE_CODE = (
    "<p>Error codes returned by the gateway are listed in the table below with their meaning and fix.</p>"
    "<table><tr><th>Code</th><th>Meaning</th></tr><tr><td>E01</td><td>Timeout | retry</td></tr>"
    "<tr><td>E02</td><td>Bad signature</td></tr></table>"
    f'<p>Call the gateway like this from your service:</p><pre><code class="language-python">{CODE}</code></pre>'
)
HANGUL_PATH = "/한글/문서.html"
CRUMBS = '<ol class="crumbs"><li>Home</li><li>Setup</li><li>Guide</li></ol>'
DOC_LINKS = [
    "/", "/guide/", "/guide/index.html", "/guide?utm_source=news&utm_medium=email", "/guide/#install",
    "/print/guide.html", "/ko/declared.html", "/ko/meta.html", "/ko/undeclared.html", "/private/secret.html",
    "/trap/1", "/big.html", "/attachment?id=7", "/download?id=1", "/empty.html", "/nav-only.html",
    "/error.html", "/gone.html", "/missing.html", "/loop-a", "/table-code.html", "/slow.html", "/setup",
]


def trap(path: str) -> Page:
    n = int(path.rstrip("/").rsplit("/", 1)[1])
    return Page(html_page(f"Calendar {n}", prose(f"calendar month {n}", 2), [f"/trap/{n + 1}"]))


def korean(title: str, links: list[str] = (), head: str = "") -> str:
    return html_page(title, f"<p>{KO * 3}</p><p>{KO * 2}</p>", links, head=head)


def docs_site() -> Site:
    guide = html_page("Guide", CRUMBS + prose("guide"), ["/"])
    nav_only = ("<!doctype html><html><head><title>Links</title></head><body><nav><ul>"
                + "".join(f'<li><a href="/">Page {i}</a></li>' for i in range(12))
                + "</ul></nav></body></html>")
    return Site({
        "/robots.txt": Page("User-agent: *\nDisallow: /private/\n", content_type="text/plain"),
        "/": Page(html_page("Home", prose("home"), DOC_LINKS)),
        "/index.html": Page(html_page("Home", prose("home"), DOC_LINKS)),
        "/guide": Page(status=301, headers={"Location": "/guide/"}),
        "/guide/": Page(guide),
        "/guide/index.html": Page(guide),
        "/print/guide.html": Page(html_page("Guide", CRUMBS + prose("guide"), ["/"],
                                            head='<link rel="canonical" href="/guide/">')),
        "/ko/declared.html": Page(korean("헤더 선언"), content_type="text/html; charset=euc-kr", encoding="cp949"),
        "/ko/meta.html": Page(korean("메타 선언", head='<meta charset="euc-kr">'), content_type="text/html",
                              encoding="cp949"),
        "/ko/undeclared.html": Page(korean("선언 없음", [HANGUL_PATH]), content_type="text/html", encoding="cp949"),
        HANGUL_PATH: Page(korean("한글 주소")),
        "/private/secret.html": Page(html_page("Secret", prose("secret"))),
        "/trap/*": trap,
        "/big.html": Page(html_page("Big", prose("big") * 400)),
        "/attachment?id=7": Page(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8),
        "/download?id=1": Page(b"%PDF-1.4 fake", content_type="application/pdf"),  # read as a PDF: corrupt
        "/empty.html": Page(b""),
        "/nav-only.html": Page(nav_only),
        "/error.html": Page("oops", 500, "text/plain"),
        "/gone.html": Page("gone", 410, "text/plain"),
        "/loop-a": Page(status=302, headers={"Location": "/loop-b"}),
        "/loop-b": Page(status=302, headers={"Location": "/loop-a"}),
        "/table-code.html": Page(html_page("Error codes", TABLE_CODE, ["/"])),
        "/slow.html": Page(html_page("Slow", prose("slow")), delay=2.0),
        "/setup": Page(status=301, headers={"Location": "/setup/"}),
        "/setup/": Page(html_page("Setup", prose("setup"), ["/"])),
    })


def api_site() -> Site:
    return Site({
        "/robots.txt": Page("User-agent: *\nDisallow: /internal/\n", content_type="text/plain"),
        "/start.html": Page(html_page("API", prose("api"), ["/internal/notes.html", "/other/page.html"])),
        "/internal/notes.html": Page(html_page("Notes", prose("notes"))),
        "/other/page.html": Page(html_page("Other", prose("other"))),
        "/sitemap.xml": Page(
            '<?xml version="1.0" encoding="UTF-8"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
            "<url><loc>{base}/reference/a.html</loc></url><url><loc>{base}/reference/b.html</loc></url>"
            "<url><loc>{base}/blog/post.html</loc></url></urlset>",
            content_type="application/xml",
        ),
        "/reference/a.html": Page(html_page("Reference A", prose("reference a"))),
        "/reference/b.html": Page(html_page("Reference B", prose("reference b"))),
        "/blog/post.html": Page(html_page("Post", prose("blog"))),
    })


def endless(path: str) -> Page:
    n = int(path.rsplit("/", 1)[1] or 0)
    return Page(html_page(f"Page {n}", prose(f"page {n}", 1), [f"/n/{3 * n + i}" for i in (1, 2, 3)]))


@pytest.fixture(scope="module")
def crawled(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    with docs_site() as docs, api_site() as api, Site({"/n/*": endless}) as capped:
        sitemap = api.pages["/sitemap.xml"]
        sitemap.body = sitemap.body.replace("{base}", api.base)
        config = write_config(folder, f"""
  - name: docs
    start_urls: ["{docs.url('/index.html')}"]
    category_selector: "ol.crumbs li"
    max_depth: 3
  - name: api
    start_urls: ["{api.url('/start.html')}"]
    sitemap_urls: ["{api.url('/sitemap.xml')}"]
    include: ["/reference/", "/internal/"]
    exclude: ["/blog/"]
    category: API Reference
    obey_robots: false
  - name: capped
    start_urls: ["{capped.url('/n/0')}"]
    max_pages: 5
    max_depth: 0
""", crawl="  timeout_seconds: 1\n  max_page_bytes: 100000\n  user_agent: crawl2tune-test/1.0 (+tests)")
        reports = {r.name: r for r in crawl(load_config(config))}
        db = sqlite3.connect(folder / "out" / "state.sqlite")
        db.row_factory = sqlite3.Row
        rows = {row["url"]: dict(row) for row in db.execute("SELECT * FROM pages")}
        yield reports, rows, docs, api, capped, config


def live(rows: dict, base: str) -> dict[str, dict]:
    return {url[len(base):]: row for url, row in rows.items() if url.startswith(base) and row["live"]}


def test_every_hostile_page_is_dropped_or_recorded_with_its_reason(crawled):
    reports, *_ = crawled
    docs = reports["docs"]
    assert docs.finish_reason == "finished"
    assert docs.dropped == {
        "binary": 1, "boilerplate": 1, "corrupt": 1, "duplicate": 1, "empty": 1, "http_404": 1, "http_410": 1,
        "http_500": 1, "max_depth": 1, "redirect_loop": 1, "robots_txt": 1, "timeout": 1, "too_large": 1,
    }
    assert {"200", "301", "302", "404", "410", "500"} <= set(docs.pages_by_status)
    assert docs.bytes_downloaded > 0


def test_documents_are_the_usable_pages_under_canonical_urls(crawled):
    reports, rows, docs, *_ = crawled
    hangul = quote(HANGUL_PATH)
    assert set(live(rows, docs.base)) == {
        "/", "/guide", "/ko/declared.html", "/ko/meta.html", "/ko/undeclared.html", hangul,
        "/trap/1", "/trap/2", "/trap/3", "/table-code.html", "/setup",
    }
    assert sorted(reports["docs"].changes["new"]) == sorted(docs.base + p for p in live(rows, docs.base))


def test_url_variants_of_one_page_are_fetched_once(crawled):
    _, _, docs, *_ = crawled
    assert len(docs.requested("/")) + len(docs.requested("/index.html")) == 1
    assert len([h for h in docs.hits if h.path.startswith("/guide")]) == 1


def test_redirect_to_a_variant_of_the_same_url_is_followed(crawled):
    _, _, docs, *_ = crawled
    assert [h.status for h in docs.requested("/setup")] == [301]
    assert [h.status for h in docs.requested("/setup/")] == [200]


def test_robots_txt_is_obeyed_unless_the_source_opts_out(crawled):
    _, rows, docs, api, *_ = crawled
    assert docs.requested("/private/secret.html") == []
    assert api.url("/internal/notes.html") in rows


def test_link_trap_ends_at_max_depth_and_endless_site_at_max_pages(crawled):
    reports, _, docs, _, capped, _ = crawled
    assert docs.requested("/trap/4") == []
    assert reports["capped"].finish_reason == "closespider_pagecount"
    assert len(capped.hits) <= 5 + 16  # the cap, plus at most the requests already in flight


def test_korean_pages_decode_whatever_they_declare(crawled):
    _, rows, docs, *_ = crawled
    pages = live(rows, docs.base)
    for path in ("/ko/declared.html", "/ko/meta.html", "/ko/undeclared.html", quote(HANGUL_PATH)):
        text = pages[path]["text"]
        assert "똠방각하" in text and "\ufffd" not in text, path
        assert pages[path]["language"] == "ko"
    assert pages["/ko/undeclared.html"]["title"] == "선언 없음"


def test_table_and_code_block_survive_extraction(crawled):
    _, rows, docs, *_ = crawled
    text = live(rows, docs.base)["/table-code.html"]["text"]
    assert "| Code | Meaning |\n| --- | --- |\n| E01 | Timeout \\| retry |" in text
    assert f"```python\n{CODE}```" in text


def test_failures_are_recorded_in_the_state_with_status_and_reason(crawled):
    _, rows, docs, *_ = crawled
    for path, status, reason in [("/gone.html", 410, "http_410"), ("/error.html", 500, "http_500"),
                                 ("/missing.html", 404, "http_404"), ("/empty.html", 200, "empty"),
                                 ("/download?id=1", 200, "corrupt"), ("/slow.html", None, "timeout")]:
        row = rows[docs.url(path)]
        assert (row["status"], row["reason"], row["live"]) == (status, reason, 0), path


def test_category_comes_from_selector_or_config_and_language_is_stored(crawled):
    _, rows, docs, api, *_ = crawled
    assert live(rows, docs.base)["/guide"]["category"] == "Setup"
    assert live(rows, docs.base)["/guide"]["language"] == "en"
    assert {row["category"] for row in live(rows, api.base).values()} == {"API Reference"}


def test_sitemap_pages_are_crawled_within_include_and_exclude(crawled):
    _, rows, _, api, *_ = crawled
    assert set(live(rows, api.base)) == {"/start.html", "/internal/notes.html", "/reference/a.html",
                                         "/reference/b.html"}
    assert api.requested("/blog/post.html") == [] and api.requested("/other/page.html") == []


def test_requests_carry_the_configured_user_agent(crawled):
    _, _, docs, *_ = crawled
    assert {hit.headers.get("User-Agent") for hit in docs.hits} == {"crawl2tune-test/1.0 (+tests)"}


def test_the_small_crawl_builds_a_reviewable_version_that_openai_finetune_refuses(crawled, capsys, monkeypatch):
    from conftest import TODAY
    from fake_openai import FakeOpenAI
    from pipeline import main

    *_, crawl_config = crawled
    config = crawl_config.parent / "small.yaml"  # half the examples for testing: fewer than 10 left to train on
    config.write_text(crawl_config.read_text(encoding="utf-8") + "dataset:\n  test_fraction: 0.5\n", encoding="utf-8")
    assert main(["build", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    version = config.parent / "out" / "datasets" / "guide" / "latest"
    n_train = json.loads((version / "manifest.json").read_text(encoding="utf-8"))["counts"]["train"]
    assert 0 < n_train < 10 and (version / "review.csv").is_file() and (version / "report.html").is_file()
    assert f"warning: the train split holds {n_train} examples, fewer than the 10 that fine-tuning with azure " \
           "and openai requires" in out
    with FakeOpenAI(today=TODAY) as fake:
        monkeypatch.setenv("OPENAI_API_KEY", fake.api_key)
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
        assert main(["finetune", "--config", str(config)]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ")
        assert f"{n_train} train examples, fewer than the 10 the API requires (crawl more pages, " in err
        assert "nothing was uploaded" in err and fake.requests == []
