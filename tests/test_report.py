"""report.html: self-contained, real plots, every count a reviewer needs, hostile crawled text shown as text."""

from __future__ import annotations

import base64
from html.parser import HTMLParser

from dataset_state import guide_pages, korean_paragraph, make_config, page, write_pages
from transforms.build import build

HOSTILE = '<script>alert("x")</script> <img src=x onerror=alert(1)> "quoted" & <b>bold</b>'


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attributes += attrs

    def handle_data(self, data):
        self.text.append(data)


def parse(path) -> Page:
    parsed = Page()
    parsed.feed(path.read_text("utf-8"))
    return parsed


def hostile_pages():
    pages = guide_pages(14)
    pages.append(page("hostile", f"# {HOSTILE}\n\n{HOSTILE}\n\n{korean_paragraph(77)}", title=HOSTILE,
                      category=f"cat {HOSTILE}"))
    pages.append(page("short", "# 짧음\n\n[홈](/) > [가이드](/g)\n\n© 2026 Gaon", title="짧음"))
    return pages


def test_hostile_text_renders_as_text(tmp_path):
    write_pages(tmp_path / "out", hostile_pages())
    result = build(make_config(tmp_path, "test_fraction: 0.1"))
    report = result.version_dir / "report.html"
    parsed = parse(report)
    assert "script" not in parsed.tags
    assert not [name for name, _ in parsed.attributes if name.startswith("on")]
    assert all(value.startswith("data:image/svg+xml;base64,") for name, value in parsed.attributes if name == "src")
    text = "".join(parsed.text)
    assert '<script>alert("x")</script>' in text and "onerror=alert(1)" in text
    assert "default-src 'none'" in report.read_text("utf-8")


def test_report_has_counts_plots_drops_samples_and_cost(tmp_path):
    write_pages(tmp_path / "out", hostile_pages())
    result = build(make_config(tmp_path, "test_fraction: 0.1"))
    parsed = parse(result.version_dir / "report.html")
    text = "".join(parsed.text)
    for heading in ("Summary", "Tokens per example", "Examples per category", "Examples per source",
                    "Dropped, by reason", "Changes since the previous version", "Sample examples"):
        assert heading in text
    assert "boilerplate_only" in text and "© 2026 Gaon" in text  # the drop table shows an example
    assert "estimated training cost (USD)" in text and "epochs" in text
    [plot] = [value for name, value in parsed.attributes if name == "src"]
    svg = base64.b64decode(plot.split(",", 1)[1]).decode("utf-8")
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and svg.count("<path") > 10
    assert "This is the first version" in text
    assert result.manifest.files["report.html"]


def test_report_diff_counts_added_removed_and_changed_examples(tmp_path):
    pages = guide_pages(16)
    write_pages(tmp_path / "out", pages)
    config = make_config(tmp_path, "test_fraction: 0.1")
    build(config)
    changed = page(pages[0]["url"].rsplit("/", 1)[1][:-5], pages[0]["text"] + "\n\n새 문장입니다.",
                   title=pages[0]["title"])
    write_pages(tmp_path / "out", [changed] + pages[1:15] + guide_pages(2, prefix="added"))
    result = build(config)
    text = "".join(parse(result.version_dir / "report.html").text)
    assert "Against v0001: 2 examples added, 1 removed, 1 changed." in text
    assert "/added-000.html" in text and "/page-015.html" in text


def test_data_quality_section_shows_checks_and_hostile_findings_as_text(tmp_path):
    pages = guide_pages(14)
    pages.append(page("refusal", f"# 문의\n\n죄송하지만 답변드릴 수 없습니다. {HOSTILE} {korean_paragraph(91, 1)}",
                      title="문의", category=f"cat {HOSTILE}"))
    write_pages(tmp_path / "out", pages)
    result = build(make_config(tmp_path, "test_fraction: 0.1"))
    parsed = parse(result.version_dir / "report.html")
    assert "script" not in parsed.tags
    text = "".join(parsed.text)
    assert "Data quality" in text and "Data-quality warnings" in text
    for check in ("refusal-like answers", "category imbalance", "format outliers", "very short answers",
                  "repeated answers"):
        assert check in text
    [row] = result.manifest.quality["checks"]["refusals"]["examples"]
    assert f"{row['split']}.jsonl:{row['line']}" in text and row["example_id"] in text
    assert '<script>alert("x")</script>' in text  # the excerpt and the category name, as text
    assert f"'[온라인] 업무 가이드' has 14 examples, 'cat {HOSTILE}' 1" in text
