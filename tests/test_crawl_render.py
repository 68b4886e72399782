"""Pages built by scripts: a page whose body a script fills from a JSON endpoint is rendered by the system's
Chromium (through scrapy-playwright) and its text and links are used; `render: never` leaves it out; without a
browser it is reported `needs_browser` and the rest of the crawl goes on. Static pages never go to the browser."""

from __future__ import annotations

import base64
import json
import shutil
import sqlite3

import pytest

from configs import load_config
from crawlers.crawl import crawl
from sites import Page, Site, html_page, prose, write_config

SCRIPT_SENTENCE = "The settlement batch closes at midnight and the report reaches every branch by six."
SHELL = """<!doctype html><html><head><title>Settlement - Docs</title></head><body><div id="app"></div>
<script>
fetch('/api/settlement.json').then(r => r.json()).then(d => {
  document.getElementById('app').innerHTML =
    '<main><article><h1>' + d.title + '</h1>' + d.html + '</article></main><a href="/linked.html">linked</a>';
});
</script></body></html>"""


def script_site(*, require: dict[str, str] | None = None, widget: str = "") -> Site:
    """The site; with `widget`, the shell also loads that script URL (another host)."""
    paragraphs = "".join(f"<p>{SCRIPT_SENTENCE} Paragraph {i} of the settlement guide.</p>" for i in range(4))
    shell = SHELL.replace("<script>", f'<script src="{widget}"></script><script>') if widget else SHELL
    return Site({
        "/": Page(html_page("Start", prose("start"), ["/settlement.html", "/static.html"])),
        "/static.html": Page(html_page("Static", prose("static"))),
        "/settlement.html": Page(shell),
        "/api/settlement.json": Page(json.dumps({"title": "Settlement", "html": paragraphs}),
                                     content_type="application/json"),
        "/linked.html": Page(html_page("Linked", prose("linked"))),
    }, require=require)


def documents(tmp_path, site: Site) -> dict[str, dict]:
    db = sqlite3.connect(tmp_path / "out" / "state.sqlite")
    db.row_factory = sqlite3.Row
    return {row["url"][len(site.base):]: dict(row) for row in db.execute("SELECT * FROM pages")}


def run(tmp_path, site: Site, render: str = "auto", crawl_section: str = "", auth: str = ""):
    sources = f'  - name: guide\n    start_urls: ["{site.url("/")}"]\n    render: {render}\n'
    sources += f"    auth: {auth}\n" if auth else ""
    return crawl(load_config(write_config(tmp_path, sources, crawl=crawl_section)))


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_a_page_built_by_a_script_is_rendered_by_chromium_and_its_text_and_links_are_used(tmp_path):
    with script_site() as site:
        [report] = run(tmp_path, site)
        browser_paths = [hit.path for hit in site.hits if "HeadlessChrome" in hit.headers.get("User-Agent", "")
                         or hit.path.startswith("/api/")]
    rows = documents(tmp_path, site)
    assert rows["/settlement.html"]["live"] == 1
    assert rows["/settlement.html"]["title"] == "Settlement"
    assert SCRIPT_SENTENCE in rows["/settlement.html"]["text"]
    assert rows["/linked.html"]["live"] == 1  # a link the script wrote was followed
    assert "/api/settlement.json" in browser_paths  # the browser ran the script
    assert report.dropped == {}


LOGINS = {  # auth config → the header the site requires
    "basic": ("{type: basic, username_env: GUIDE_USER, password_env: GUIDE_PASSWORD}",
              {"Authorization": "Basic " + base64.b64encode(b"reader:Pw-render-91c2").decode()}),
    "cookie": ("{type: cookie, cookie_env: GUIDE_COOKIE}", {"Cookie": "session=sess-render-77a0"}),
}


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (apt-get install chromium)")
@pytest.mark.parametrize("kind", LOGINS)
def test_a_page_behind_a_login_is_rendered_with_its_scripts_requests_logged_in_and_no_other_origin_gets_it(
        tmp_path, monkeypatch, kind):
    monkeypatch.setenv("GUIDE_USER", "reader")
    monkeypatch.setenv("GUIDE_PASSWORD", "Pw-render-91c2")
    monkeypatch.setenv("GUIDE_COOKIE", "session=sess-render-77a0")
    auth, required = LOGINS[kind]
    with Site({"/widget.js": Page("window.widget = 1;", content_type="text/javascript")}) as other, \
            script_site(require=required, widget=other.url("/widget.js").replace("127.0.0.1", "localhost")) as site:
        [report] = run(tmp_path, site, auth=auth)
    rows = documents(tmp_path, site)
    assert SCRIPT_SENTENCE in rows["/settlement.html"]["text"]  # the script's request was logged in
    assert [hit.status for hit in site.requested("/api/settlement.json")] == [200]
    assert [hit.path for hit in other.hits] == ["/widget.js"]  # the browser loaded it…
    assert not any(name.lower() in ("authorization", "cookie") for hit in other.hits for name in hit.headers)
    assert report.dropped == {}


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_a_script_page_of_a_served_folder_is_rendered_through_the_folder_server(tmp_path):
    folder = tmp_path / "export"
    (folder / "api").mkdir(parents=True)
    with script_site() as site:  # its files, written to a folder the source serves under the site's real URLs
        for path in ("/index.html", "/settlement.html", "/api/settlement.json", "/linked.html"):
            (folder / path.lstrip("/")).write_bytes(site.lookup("/" if path == "/index.html" else path).payload())
    (folder / "index.html").write_text(html_page("Start", prose("start"), ["/settlement.html"]), encoding="utf-8")
    sources = (f'  - name: guide\n    serve_dir: {folder}\n'
               '    start_urls: ["http://guide.example.internal/index.html"]\n'
               '    allowed_domains: [guide.example.internal]\n')
    [report] = crawl(load_config(write_config(tmp_path, sources)))
    db = sqlite3.connect(tmp_path / "out" / "state.sqlite")
    rows = dict(db.execute("SELECT url, text FROM pages WHERE live = 1").fetchall())
    assert SCRIPT_SENTENCE in rows["http://guide.example.internal/settlement.html"]
    assert "http://guide.example.internal/linked.html" in rows  # the link the script wrote
    assert report.dropped == {}


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_rendering_keeps_the_page_at_its_depth(tmp_path):
    with script_site() as site:  # the shell is at depth 1, the page its script links to at depth 2
        sources = f'  - name: guide\n    start_urls: ["{site.url("/")}"]\n    max_depth: 1\n'
        [report] = crawl(load_config(write_config(tmp_path, sources)))
        requested = {hit.path for hit in site.hits}
    rows = documents(tmp_path, site)
    assert SCRIPT_SENTENCE in rows["/settlement.html"]["text"]  # rendered at depth 1, not dropped as depth 2
    assert "/linked.html" not in requested
    assert report.dropped == {"max_depth": 1}  # /linked.html, at depth 2


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_static_pages_do_not_go_through_the_browser(tmp_path):
    with script_site() as site:
        run(tmp_path, site)
        hits = {path: [h for h in site.hits if h.path == path] for path in ("/", "/static.html", "/settlement.html")}
    assert len(hits["/"]) == len(hits["/static.html"]) == 1  # fetched once, by Scrapy
    assert len(hits["/settlement.html"]) == 2  # the static HTML, then the browser


def test_render_never_leaves_a_script_page_out(tmp_path):
    with script_site() as site:
        [report] = run(tmp_path, site, render="never")
        requested = {hit.path for hit in site.hits}
    rows = documents(tmp_path, site)
    assert rows["/settlement.html"]["live"] == 0
    assert "/api/settlement.json" not in requested and "/linked.html" not in requested
    assert report.dropped == {"empty": 1}


def test_without_a_browser_the_page_is_needs_browser_and_the_rest_is_crawled(tmp_path, capsys):
    from pipeline import print_crawl

    with script_site() as site:
        reports = run(tmp_path, site, crawl_section=f"  browser: {tmp_path / 'no-such-chromium'}\n")
    rows = documents(tmp_path, site)
    assert (rows["/settlement.html"]["live"], rows["/settlement.html"]["reason"]) == (0, "needs_browser")
    assert rows["/static.html"]["live"] == rows["/"]["live"] == 1
    assert reports[0].dropped == {"needs_browser": 1}
    print_crawl(reports)
    assert "needs_browser: pages built by scripts need Chromium to render: apt-get install chromium" in capsys.readouterr().out
