"""extract() turns a documentation page into its title, markdown body and page metadata."""

from __future__ import annotations

import html
import re

import pytest

from crawlers.extract import Extraction, detect_language, extract

URL = "https://docs.acme.dev/cli/install.html"

# Indentation, a tab, trailing spaces, blank lines, markup characters and a backtick fence inside.
CODE = 'def main():\n    if a < b and c && d:\n\tprint("```")   \n\n\n    return {"x": [1, 2]}  # <done>\n'
SHELL = "$ acme --version\nacme 1.2.3 (linux/amd64)\n"


def doc_page(
    *,
    h1: str = "Install the CLI",
    og_title: str | None = "Acme CLI installation guide",
    title: str = "Install the CLI - Acme Docs",
    head_extra: str = "",
    breadcrumb: str = (
        '<nav aria-label="breadcrumb"><ol class="breadcrumb"><li><a href="/">Home</a></li>'
        '<li><a href="/cli/">CLI</a></li><li aria-current="page">Install</li></ol></nav>'
    ),
) -> str:
    og = f'<meta property="og:title" content="{og_title}">' if og_title else ""
    heading = f"<h1>{h1}</h1>" if h1 else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>{og}
<link rel="canonical" href="/cli/install">{head_extra}</head>
<body>
<header class="site-header"><a class="logo" href="/">Acme Docs</a>
<nav class="topnav"><a href="/">Home</a> <a href="/cli/">Command line</a> <a href="/api/">API reference</a> <a href="/blog/">Company blog</a></nav></header>
<div class="cookie-banner">We use cookies to improve your experience on our website. Accept all cookies?</div>
{breadcrumb}
<aside class="sidebar"><ul><li><a href="/a">Getting started quickly</a></li><li><a href="/b">Configuration reference</a></li>
<li><a href="/c">Troubleshooting guide</a></li><li><a href="/d">Release notes archive</a></li></ul></aside>
<main><article class="doc">
{heading}
<p>The Acme command line tool lets you manage deployments from a terminal. This page explains how to install it on
every supported platform and how to verify that the installation worked before you continue with the tutorial.</p>
<h2>Requirements</h2>
<p>You need a recent operating system and a working network connection to download the package. The table below lists
the platforms that are supported by the current release and the minimum version of each.</p>
<table><thead><tr><th>Platform</th><th>Minimum version</th><th>Architectures</th></tr></thead>
<tbody><tr><td>Linux</td><td>glibc 2.28</td><td>x86_64 | arm64</td></tr>
<tr><td>macOS</td><td>12 <em>Monterey</em></td><td>Apple silicon and Intel</td></tr></tbody></table>
<h2>Install with a script</h2>
<p>Run the following program to check your environment. The script detects your platform automatically and tells
you which binary to download, so you do not need to pick an archive by hand.</p>
<pre><code class="language-python">{html.escape(CODE)}</code></pre>
<p>Then check the installed version in a shell; the command prints the version and the platform it was built for.</p>
<pre>{html.escape(SHELL)}</pre>
<h3>Options</h3>
<ul><li>Use <code>--prefix</code> to choose the installation directory.</li>
<li>Use <code>--quiet</code> to hide the progress output of the installer.</li></ul>
<p>After installation, run <code>acme login</code> to connect the tool to your account and start deploying.</p>
</article></main>
<section class="related"><h2>Related articles</h2><ul><li><a href="/x">Upgrade the CLI</a></li>
<li><a href="/y">Uninstall the CLI</a></li></ul></section>
<footer><p>© 2024 Acme Corp. All rights reserved.</p><a href="/privacy">Privacy policy</a> <a href="/terms">Terms of use</a></footer>
</body></html>"""


@pytest.fixture(scope="module")
def page() -> Extraction:
    return extract(doc_page(), URL)


def prose_lines(markdown: str) -> list[str]:
    """Lines outside fenced code blocks (each block stands in as one line)."""
    outside = re.sub(r"^(`{3,})[^\n]*\n.*?^\1$", "CODE", markdown, flags=re.MULTILINE | re.DOTALL)
    return outside.split("\n")


# --- main content ------------------------------------------------------------------------------


def test_boilerplate_is_removed(page):
    for boilerplate in ("cookies", "Company blog", "Troubleshooting guide", "Related articles", "Uninstall the CLI",
                        "All rights reserved", "Privacy policy"):
        assert boilerplate not in page.text
    assert page.text.startswith("# Install the CLI\n\nThe Acme command line tool")


def test_headings_become_markdown_headings(page):
    lines = page.text.split("\n")
    assert "# Install the CLI" in lines
    assert "## Requirements" in lines
    assert "## Install with a script" in lines
    assert "### Options" in lines


def test_table_becomes_markdown_table_with_escaped_pipes(page):
    assert (
        "| Platform | Minimum version | Architectures |\n"
        "| --- | --- | --- |\n"
        "| Linux | glibc 2.28 | x86_64 \\| arm64 |\n"
        "| macOS | 12 *Monterey* | Apple silicon and Intel |"
    ) in page.text


def test_code_block_survives_byte_exact(page):
    assert f"\n````python\n{CODE}````\n" in page.text


def test_code_block_survives_byte_exact_with_content_selector():
    text = extract(doc_page(), URL, content_selector="article").text
    assert f"\n````python\n{CODE}````\n" in text


def test_pre_without_code_markup_is_still_a_fenced_block(page):
    assert f"\n```\n{SHELL}```\n" in page.text


def test_inline_code_and_lists_become_markdown(page):
    assert "- Use `--prefix` to choose the installation directory.\n- Use `--quiet` to hide" in page.text
    assert "run `acme login` to connect" in page.text


def test_inline_code_stays_inline_when_bold_or_alone_in_a_paragraph():
    extra = (
        "<p>Use <strong><code>--force</code></strong> only when you know what the installer will overwrite.</p>"
        "<p><code>acme doctor</code></p>"
    )
    text = extract(doc_page().replace("<h3>Options</h3>", extra + "<h3>Options</h3>"), URL).text
    assert "Use **`--force`** only when" in text
    assert "\n\n`acme doctor`\n\n" in text


def test_paragraphs_are_separated_by_one_blank_line_without_trailing_spaces(page):
    lines = prose_lines(page.text)
    assert all(line == line.rstrip() for line in lines)
    assert "\n\n\n" not in "\n".join(lines)
    assert "verify that the installation worked before you continue with the tutorial.\n\n## Requirements" in page.text


def test_code_listing_inside_a_figure_is_kept():
    listing = "fn main() {\n    println!(\"Hello, world!\");\n}"
    figure = f'<figure class="listing"><span>Filename: main.rs</span><pre><code class="language-rust">{html.escape(listing)}</code></pre></figure>'
    body = doc_page().replace("<h3>Options</h3>", figure + "<h3>Options</h3>")
    assert f"```rust\n{listing}\n```" in extract(body, URL).text


def test_code_in_a_list_item_keeps_its_language_and_lines():
    item = '<ol><li>Create the configuration file:<pre><code class="language-toml">[server]\nport = 8080\n</code></pre></li></ol>'
    body = doc_page().replace("<h3>Options</h3>", item + "<h3>Options</h3>")
    assert "1. Create the configuration file:\n\n   ```toml\n   [server]\n   port = 8080\n   ```" in extract(body, URL).text


def test_table_of_code_listings_becomes_labelled_code_blocks():
    table = (
        "<table><tr><th>Before</th><th>After</th></tr><tr><td><pre>old_call(x)\n    .run()</pre></td>"
        "<td><pre>new_call(x)\n    .run()</pre></td></tr></table>"
    )
    text = extract(doc_page().replace("<h3>Options</h3>", table + "<h3>Options</h3>"), URL).text
    assert "Before\n\n```\nold_call(x)\n    .run()\n```\n\nAfter\n\n```\nnew_call(x)\n    .run()\n```" in text


# --- content_selector --------------------------------------------------------------------------


def test_content_selector_takes_exactly_that_element():
    page_html = doc_page().replace("</article>", '</article><div class="page-meta">Last updated 2024-05-01</div>')
    text = extract(page_html, URL, content_selector="main").text
    assert text.startswith("# Install the CLI\n\n")
    assert text.endswith("Last updated 2024-05-01")
    assert "Company blog" not in text and "All rights reserved" not in text


def test_content_selector_matching_nothing_gives_empty_text():
    result = extract(doc_page(), URL, content_selector="div.no-such-thing")
    assert result.text == ""
    assert result.title == "Install the CLI"


def test_content_selector_matches_are_not_duplicated_when_nested():
    text = extract(doc_page(), URL, content_selector="main, article").text
    assert text.count("## Requirements") == 1


def test_invalid_selector_is_a_value_error():
    with pytest.raises(ValueError, match="invalid CSS selector"):
        extract(doc_page(), URL, content_selector="div[")


# --- title ---------------------------------------------------------------------------------------


def test_title_comes_from_h1_first(page):
    assert page.title == "Install the CLI"


def test_title_falls_back_to_og_title():
    assert extract(doc_page(h1=""), URL).title == "Acme CLI installation guide"


def test_title_falls_back_to_title_without_site_suffix():
    assert extract(doc_page(h1="", og_title=None), URL).title == "Install the CLI"
    assert extract(doc_page(h1="", og_title=None, title="Install the CLI | Acme"), URL).title == "Install the CLI"


def test_site_name_h1_in_the_header_is_not_the_title():
    page_html = doc_page(h1="").replace('<a class="logo" href="/">Acme Docs</a>', "<h1>Acme Docs</h1>")
    assert extract(page_html, URL).title == "Acme CLI installation guide"


# --- breadcrumb ----------------------------------------------------------------------------------


def test_breadcrumb_is_detected(page):
    assert page.breadcrumb == ["Home", "CLI", "Install"]


@pytest.mark.parametrize(
    "markup",
    [
        '<div class="breadcrumbs"><a href="/">Home</a> &gt; <a href="/cli/">CLI</a> &gt; <span>Install</span></div>',
        '<nav class="breadcrumb"><a href="/">Home</a> / <a href="/cli/">CLI</a> / Install</nav>',
        '<ol itemscope itemtype="https://schema.org/BreadcrumbList">'
        '<li itemprop="itemListElement" itemscope itemtype="https://schema.org/ListItem"><a itemprop="item" href="/"><span itemprop="name">Home</span></a> ›</li>'
        '<li itemprop="itemListElement" itemscope itemtype="https://schema.org/ListItem"><a itemprop="item" href="/cli/"><span itemprop="name">CLI</span></a> ›</li>'
        '<li itemprop="itemListElement" itemscope itemtype="https://schema.org/ListItem"><span itemprop="name">Install</span></li></ol>',
    ],
    ids=["links-and-separators", "nav-with-slashes", "schema-org-microdata"],
)
def test_breadcrumb_markup_variants(markup):
    assert extract(doc_page(breadcrumb=markup), URL).breadcrumb == ["Home", "CLI", "Install"]


def test_breadcrumb_from_json_ld():
    json_ld = (
        '<script type="application/ld+json">{"@context": "https://schema.org", "@type": "BreadcrumbList",'
        ' "itemListElement": [{"@type": "ListItem", "position": 2, "name": "CLI", "item": "https://docs.acme.dev/cli/"},'
        ' {"@type": "ListItem", "position": 1, "name": "Home", "item": "https://docs.acme.dev/"}]}</script>'
    )
    assert extract(doc_page(breadcrumb="", head_extra=json_ld), URL).breadcrumb == ["Home", "CLI"]


def test_no_breadcrumb_is_an_empty_list():
    assert extract(doc_page(breadcrumb=""), URL).breadcrumb == []


def test_category_selector_overrides_detection():
    page_html = doc_page().replace("<main>", '<main><p class="section-label">Command line tools</p>')
    assert extract(page_html, URL, category_selector=".section-label").breadcrumb == ["Command line tools"]


def test_category_selector_matching_several_elements_gives_one_crumb_each():
    assert extract(doc_page(), URL, category_selector="ol.breadcrumb a").breadcrumb == ["Home", "CLI"]


# --- canonical and language ------------------------------------------------------------------------


def test_canonical_link_is_resolved_against_the_page_url(page):
    assert page.canonical_url == "https://docs.acme.dev/cli/install"


def test_missing_canonical_link_is_none():
    assert extract(doc_page().replace('<link rel="canonical" href="/cli/install">', ""), URL).canonical_url is None


def test_english_page_is_detected_as_english(page):
    assert page.language == "en"


def test_korean_page_is_detected_as_korean():
    korean = """<html lang="ko"><head><title>Sync 채널 설정 - 연계 가이드</title></head><body>
    <nav class="breadcrumb"><a href="/">홈</a> &gt; <a href="/online/">[온라인] 업무 가이드</a> &gt; <span>Sync 채널 설정</span></nav>
    <main><h1>Sync 채널 설정</h1>
    <p>Sync 채널은 요청 시스템이 연계플랫폼에 거래를 요청한 뒤, 수신 시스템의 처리 결과가 돌아올 때까지 하나의 연결 안에서
    기다리는 방식의 채널입니다. 연계플랫폼은 요청 전문을 받아 공통 헤더를 검증하고, 라우팅 규칙에 따라 수신 시스템을 호출합니다.</p>
    <p>동기 방식은 수신 시스템의 처리 시간이 그대로 요청 시스템의 대기 시간이 되기 때문에, 타임아웃과 동시 처리 한도를
    수신 시스템의 실제 처리 능력에 맞추어 설정해야 합니다. 설정 파일은 채널 하나당 JSON 파일 하나로 관리합니다.</p>
    </main></body></html>"""
    result = extract(korean, "https://docs.example.co.kr/sync.html")
    assert result.language == "ko"
    assert result.title == "Sync 채널 설정"
    assert result.breadcrumb == ["홈", "[온라인] 업무 가이드", "Sync 채널 설정"]
    assert "# Sync 채널 설정" in result.text


def test_language_ignores_code_and_is_none_for_short_text():
    assert detect_language("Short.") is None
    assert detect_language("```python\n" + "def main(): return compute_value(x, y)\n" * 20 + "```") is None


# --- odd input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "odd",
    [
        "",
        "   \n\t ",
        "<html></html>",
        "<html><head><title>Only a title</title></head></html>",
        bytes(range(256)).decode("latin-1") * 20,
        "\x00\x01\x02 binary \xff\xfe" * 500,
        '<?xml version="1.0" encoding="utf-8"?><html><body><p>hello</p></body></html>',
        "<div>" * 5000 + "deeply nested" + "</div>" * 5000,
        "<ul><li>" * 400 + "<pre>x = 1</pre>" + "</li></ul>" * 400,
        "<html><body><p>unclosed <b>bold <i>italic</p><td>stray cell</td></table></li><p>end</body>",
        "<html><body><table><tr><td>a</td></tr></table><svg><text>vector</text></svg></body></html>",
        "<p>only a fragment</p>",
    ],
    ids=["empty", "whitespace", "empty-html", "no-body", "binary", "control-chars", "xml-declaration",
         "deep-divs", "deep-lists", "broken-tags", "svg-and-tiny-table", "fragment"],
)
def test_odd_input_never_crashes(odd):
    result = extract(odd, URL)
    assert isinstance(result, Extraction)
    assert isinstance(result.text, str) and isinstance(result.title, str)
    assert "\x00" not in result.text


def test_odd_input_with_selectors_never_crashes():
    result = extract("<div>" * 5000 + "x" + "</div>" * 5000, URL, content_selector="div", category_selector="div")
    assert isinstance(result, Extraction)


def test_binary_junk_yields_no_text():
    assert extract(bytes(range(256)).decode("latin-1") * 20, URL).text == ""


def test_huge_page_is_extracted():
    paragraphs = "".join(
        f"<p>Section {i} of this long reference page describes configuration key number {i} in detail.</p>"
        for i in range(5000)
    )
    result = extract(f"<html><body><main><h1>Reference</h1>{paragraphs}</main></body></html>", URL)
    assert result.title == "Reference"
    assert result.text.count("of this long reference page") == 5000
