"""The crawler's pure parts, without a crawl: canonical URLs, scope, links, config, reports, progress lines."""

from __future__ import annotations

import io
import re
from pathlib import Path
from types import SimpleNamespace

import lxml.html
import pytest
from scrapy import Request

from configs import ConfigError, CrawlConfig, SourceConfig, load_config
from crawlers.crawl import SourceReport, _dropped
from crawlers.extensions import CrawlProgress
from crawlers.links import LinkRules, in_scope, page_links
from crawlers.spiders.site import category_from, looks_binary
from crawlers.urls import CanonicalFingerprinter, canonical_url, clean_url
from pipeline import print_crawl

CONFIG_REFERENCE = Path(__file__).resolve().parents[1] / "docs" / "config.md"


@pytest.mark.parametrize("variant", [
    "http://Docs.Example.com/guide", "http://docs.example.com/guide/", "http://docs.example.com/guide/index.html",
    "http://docs.example.com:80/guide/#install", "http://docs.example.com/guide?utm_source=news&utm_medium=mail",
    "http://docs.example.com/guide/?gclid=abc&fbclid=x", "http://docs.example.com/guide;jsessionid=0A1B2C",
])
def test_url_variants_of_one_page_share_one_canonical_url(variant):
    assert canonical_url(variant) == "http://docs.example.com/guide"


def test_canonical_url_keeps_what_names_a_page():
    assert canonical_url("https://example.com:8443/a/b.html?v=2&lang=ko") == "https://example.com:8443/a/b.html?lang=ko&v=2"
    assert canonical_url("http://example.com/index.html") == "http://example.com/"
    assert canonical_url("http://example.com") == "http://example.com/"
    assert canonical_url("http://example.com/문서/안내.html") == "http://example.com/%EB%AC%B8%EC%84%9C/%EC%95%88%EB%82%B4.html"
    assert clean_url("../a.html?page=2&utm_campaign=x#top") == "../a.html?page=2"


def test_fingerprint_makes_url_variants_one_request():
    fp = CanonicalFingerprinter().fingerprint
    assert fp(Request("http://h/a/")) == fp(Request("http://h/a/index.html")) == fp(Request("http://h/a?utm_id=1"))
    assert fp(Request("http://h/a")) != fp(Request("http://h/b"))


def test_scope_is_domains_with_subdomains_include_exclude_and_no_binary_files():
    rules = LinkRules(("example.com",), include=(r"/docs/",), exclude=(r"\?print=",))
    assert in_scope("http://example.com/docs/a.html", rules)
    assert in_scope("https://api.example.com:8443/docs/a", rules)
    assert not in_scope("http://example.org/docs/a.html", rules)
    assert not in_scope("http://notexample.com/docs/a.html", rules)
    assert not in_scope("http://example.com/blog/a.html", rules)
    assert not in_scope("http://example.com/docs/a.html?print=1", rules)
    assert not in_scope("http://example.com/docs/manual.pdf", rules)
    assert not in_scope("mailto:docs@example.com", rules)


def test_page_links_resolve_base_clean_and_deduplicate_in_document_order():
    tree = lxml.html.document_fromstring(
        '<html><head><base href="/docs/"></head><body><a href="b.html#x">B</a><a href="a.html?utm_source=m">A</a>'
        '<a href="b.html">B again</a><a href="#top">top</a><a href="javascript:void(0)">js</a>'
        '<a href="http://other.org/x">out</a><area href="c.html"><a href="file.zip">zip</a></body></html>')
    assert page_links(tree, "http://example.com:8000/index.html", LinkRules(("example.com",))) == [
        "http://example.com:8000/docs/b.html", "http://example.com:8000/docs/a.html",
        "http://example.com:8000/docs/c.html",
    ]


def test_binary_bodies_are_recognised_but_utf16_html_is_not():
    assert looks_binary(b"%PDF-1.7\n...") and looks_binary(b"\x89PNG\r\n\x1a\n") and looks_binary(b"abc\x00def")
    assert not looks_binary("<html>한국어</html>".encode("utf-16"))
    assert not looks_binary("<html>한국어</html>".encode("cp949"))


def test_category_is_the_breadcrumb_between_home_and_the_page_else_the_first_path_segment():
    assert category_from(["홈", "[온라인] 업무 가이드", "HTTP"], "HTTP", "http://h/x.html") == "[온라인] 업무 가이드"
    assert category_from([], "Install", "http://h/setup/install.html") == "setup"
    assert category_from([], "Home", "http://h/index.html") is None


def test_crawl_config_defaults_are_polite_and_bounded(tmp_path):
    crawl, source = CrawlConfig(), SourceConfig(name="s", start_urls=["http://h/"])
    assert crawl.max_page_bytes == 10 * 1024 * 1024 and crawl.autothrottle and crawl.resume
    assert crawl.user_agent.startswith("crawl2tune/")
    assert source.obey_robots and source.max_depth == 20 and source.max_pages == 500


@pytest.mark.parametrize("extra,message", [
    ("    category_selector: 'ol..crumbs'\n", "sources.0.category_selector: 'ol..crumbs' is not a valid CSS selector"),
    ("    sitemap_urls: [sitemap.xml]\n", "sources.0.sitemap_urls: 'sitemap.xml' is not an absolute http(s) URL"),
    ("    max_depth: -1\n", "sources.0.max_depth: Input should be greater than or equal to 0"),
    ("crawl:\n  max_page_byte: 5\n", "crawl.max_page_byte: unknown key"),
])
def test_bad_crawl_settings_fail_with_file_and_field(tmp_path, extra, message):
    config = tmp_path / "c.yaml"
    config.write_text('output_dir: out\nsources:\n  - name: s\n    start_urls: ["http://h/"]\n' + extra, encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(config)


def test_config_reference_documents_every_crawl_and_source_key():
    readme = CONFIG_REFERENCE.read_text(encoding="utf-8")
    for name in CrawlConfig.model_fields:
        assert f"`crawl.{name}`" in readme, name
    for name in SourceConfig.model_fields:
        assert f"`sources[].{name}`" in readme or f"/ `{name}`" in readme, name


def test_report_counts_every_drop_reason_and_links_beyond_max_depth():
    stats = {"crawl2tune/dropped/http_404": 2, "crawl2tune/dropped/empty": 1, "depth/request_ignored_count": 7,
             "robotstxt/forbidden": 1, "downloader/exception_type_count/x.TimeoutError": 3}
    assert _dropped(stats) == {"empty": 1, "http_404": 2, "max_depth": 7}


def test_crawl_summary_names_changed_and_removed_urls_and_how_to_continue(capsys):
    report = SourceReport("docs", "shutdown", {"200": 3, "304": 9}, {"http_404": 1}, 12345,
                          {"new": ["http://h/n"], "changed": [], "unchanged": ["http://h/u"] * 9,
                           "removed": ["http://h/gone"]}, elapsed_seconds=1.5)
    print_crawl([report])
    out = capsys.readouterr().out
    assert out.splitlines()[0] == ("crawled docs: 12 responses (200: 3, 304: 9), 12,345 bytes in 1.5 s, new 1 · "
                                   "changed 0 · unchanged 9 · removed 1 (stopped: shutdown)")
    assert "  not used: http_404 1\n  new: http://h/n\n  removed: http://h/gone\n" in out
    assert "run the same command again to continue" in out


def _progress(tty: bool) -> tuple[CrawlProgress, io.StringIO]:
    stats = {"response_received_count": 42, "crawl2tune/errors": 2, "downloader/response_bytes": 3_400_000}
    crawler = SimpleNamespace(stats=SimpleNamespace(get_value=lambda k, d=None: stats.get(k, d)), engine=None,
                              spider=SimpleNamespace(name="docs"))
    out = io.StringIO()
    return CrawlProgress(crawler, tty, 30.0, out), out  # type: ignore[arg-type]


def test_progress_rewrites_one_line_on_a_terminal_and_logs_lines_elsewhere():
    progress, out = _progress(tty=True)
    progress.tick()
    assert re.fullmatch(r"\r\x1b\[K(.*\| )?docs: 42 pages · 0 queued · [\d.]+ pages/s · 2 errors · 3.4 MB",
                        out.getvalue())
    progress, out = _progress(tty=False)
    progress.tick()
    assert re.fullmatch(r"crawl docs: 42 pages · 0 queued · [\d.]+ pages/s · 2 errors · 3.4 MB\n", out.getvalue())
    CrawlProgress._status.clear()
