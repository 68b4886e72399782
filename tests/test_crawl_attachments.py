"""Linked PDF, DOCX and HWPX files become documents (text, headings, PDF page numbers, the linking page's
category); encrypted, corrupt and image-only files are dropped with their reason; a re-crawl asks for them
conditionally. One crawl (and a re-crawl) of a site served on 127.0.0.1 whose files are built here."""

from __future__ import annotations

import io
import sqlite3
import zipfile

import pytest

from configs import load_config
from crawlers import attachments
from crawlers.crawl import crawl
from sites import Page, Site, html_page, prose, write_config

CRUMBS = '<ol class="crumbs"><li>Home</li><li>매뉴얼</li><li>자료실</li></ol>'
INSTALL = "The installer copies the agent to every server and registers the nightly batch job with the scheduler."
RETRY = "Failed transfers are retried three times with a growing delay before the operator is paged at night."
DOCX_TEXT = "배치 작업은 관리 화면에서 등록하며, 등록이 끝나면 매일 밤 정해진 시각에 자동으로 실행됩니다."
HWPX_TEXT = "온라인 채널은 요청과 응답을 실시간으로 주고받으며 모든 거래는 감사 로그에 기록됩니다."
PDF_MIME = "application/pdf"
DOCX_MIME = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


def pdf(pages: list[list[str]], *, title: str | None = None, outline: list[tuple[str, int, int]] = (),
        password: str | None = None) -> bytes:
    """A PDF whose page i shows the lines pages[i] in Helvetica; outline entries (title, page, depth 0|1)."""
    from pypdf import PdfWriter
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    writer = PdfWriter()
    font = writer._add_object(DictionaryObject({
        NameObject("/Type"): NameObject("/Font"), NameObject("/Subtype"): NameObject("/Type1"),
        NameObject("/BaseFont"): NameObject("/Helvetica"),
    }))
    for lines in pages:
        page = writer.add_blank_page(612, 792)
        if lines:
            stream = DecodedStreamObject()
            shown = " ".join(f"({line}) Tj 0 -16 Td" for line in lines)
            stream.set_data(f"BT /F1 11 Tf 72 720 Td {shown} ET".encode("latin-1"))
            page[NameObject("/Contents")] = writer._add_object(stream)
            page[NameObject("/Resources")] = DictionaryObject(
                {NameObject("/Font"): DictionaryObject({NameObject("/F1"): font})})
    parent = None
    for name, number, depth in outline:
        item = writer.add_outline_item(name, number, parent=parent if depth else None)
        parent = item if depth == 0 else parent
    if title:
        writer.add_metadata({"/Title": title})
    if password:
        writer.encrypt(user_password=password, owner_password=password + "-owner", algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def docx_file() -> bytes:
    import docx

    document = docx.Document()
    document.core_properties.title = "배치 운영 안내"
    document.add_heading("작업 등록", level=1)
    document.add_paragraph(DOCX_TEXT)
    document.add_heading("실패 처리", level=2)
    document.add_paragraph("실패한 작업은 세 번까지 다시 시도하고, 그래도 실패하면 운영자에게 알립니다.")
    table = document.add_table(rows=2, cols=2)
    for cell, text in zip(table._cells, ["코드", "뜻", "E01", "시간 초과 | 재시도"]):
        cell.text = text
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


HP = "http://www.hancom.co.kr/hwpml/2011/paragraph"


def hwpx_file() -> bytes:
    """An HWPX package as Hangul writes one: mimetype, content.hpf (title), header.xml (styles), a section."""
    def para(text: str, style: str = "0") -> str:
        return f'<hp:p paraPrIDRef="0" styleIDRef="{style}"><hp:run charPrIDRef="0"><hp:t>{text}</hp:t></hp:run></hp:p>'

    def row(*cells: str) -> str:  # a cell is a paragraph's text, or paragraphs already written
        return "<hp:tr>" + "".join(f"<hp:tc><hp:subList>{c if c.startswith('<') else para(c)}</hp:subList></hp:tc>"
                                   for c in cells) + "</hp:tr>"

    header = (f'<hh:head xmlns:hh="http://www.hancom.co.kr/hwpml/2011/head" version="1.4"><hh:refList><hh:styles>'
              '<hh:style id="0" type="PARA" name="바탕글" engName="Normal"/>'
              '<hh:style id="2" type="PARA" name="개요 1" engName="Outline 1"/>'
              '</hh:styles></hh:refList></hh:head>')
    section = (f'<hs:sec xmlns:hs="http://www.hancom.co.kr/hwpml/2011/section" xmlns:hp="{HP}">'
               + para("채널 연동", "2") + para(HWPX_TEXT)
               + f'<hp:p paraPrIDRef="0" styleIDRef="0"><hp:run charPrIDRef="0"><hp:t>오류 코드:</hp:t><hp:tbl>'
               + row("코드", "뜻") + row("E01", para("시간 초과") + para("재시도 | 세 번"))
               + '</hp:tbl></hp:run></hp:p>'
               + '</hs:sec>')
    package = ('<opf:package xmlns:opf="http://www.idpf.org/2007/opf/"><opf:metadata>'
               '<opf:title>온라인 채널 가이드</opf:title></opf:metadata></opf:package>')
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("mimetype", "application/hwp+zip", compress_type=zipfile.ZIP_STORED)
        archive.writestr("Contents/content.hpf", package)
        archive.writestr("Contents/header.xml", header)
        archive.writestr("Contents/section0.xml", section)
    return out.getvalue()


FILES = {
    "/files/guide.pdf": Page(pdf([["Agent manual"], ["Installation", INSTALL], [INSTALL], ["Retries", RETRY]],
                                 title="Agent Manual",
                                 outline=[("Installation", 1, 0), ("Retries", 3, 0), ("Paging", 3, 1)]),
                             content_type=PDF_MIME),
    "/files/pages.pdf": Page(pdf([[INSTALL], [RETRY]]), content_type="application/octet-stream"),
    "/files/batch.docx": Page(docx_file(), content_type=DOCX_MIME),
    "/files/channel.hwpx": Page(hwpx_file(), content_type="application/octet-stream"),
    "/files/locked.pdf": Page(pdf([[INSTALL]], password="s3cret"), content_type=PDF_MIME),
    "/files/scan.pdf": Page(pdf([[]]), content_type=PDF_MIME),
    "/files/broken.docx": Page(b"PK\x03\x04 this is no zip archive", content_type=DOCX_MIME),
}
LINKS = ('<ul><li><a href="/files/guide.pdf">Agent manual (PDF)</a></li>'
         '<li><a href="/files/pages.pdf">설치와 재시도 요약</a></li><li><a href="/files/batch.docx">batch</a></li>'
         '<li><a href="/files/channel.hwpx">channel</a></li><li><a href="/files/locked.pdf">locked</a></li>'
         '<li><a href="/files/scan.pdf">scan</a></li><li><a href="/files/broken.docx">broken</a></li></ul>')


def site() -> Site:
    return Site({
        "/index.html": Page(html_page("Home", prose("home"), ["/manuals/index.html"])),
        "/manuals/index.html": Page(html_page("자료실", CRUMBS + prose("manuals") + LINKS, ["/index.html"])),
        **FILES,
    })


@pytest.fixture(scope="module")
def crawled(tmp_path_factory):
    folder = tmp_path_factory.mktemp("attachments")
    with site() as served:
        config = write_config(folder, f"""
  - name: docs
    start_urls: ["{served.url('/index.html')}"]
    category_selector: "ol.crumbs li"
""", extra="dataset:\n  name: docs\n  granularity: section\n")
        first = {r.name: r for r in crawl(load_config(config))}["docs"]
        db = sqlite3.connect(folder / "out" / "state.sqlite")
        db.row_factory = sqlite3.Row
        rows = {row["url"][len(served.base):]: dict(row) for row in db.execute("SELECT * FROM pages")}
        db.close()
        hits = len(served.hits)
        second = {r.name: r for r in crawl(load_config(config))}["docs"]
        yield first, rows, second, served.hits[hits:], config


def test_pdf_sections_follow_the_outline_with_their_pages_and_the_metadata_title(crawled):
    _, rows, *_ = crawled
    row = rows["/files/guide.pdf"]
    assert row["live"] == 1 and row["title"] == "Agent Manual" and row["category"] == "매뉴얼"
    text = row["text"]
    assert text.startswith("# Agent Manual\n\np. 1\n\nAgent manual\n\n## Installation\n\npp. 2–3\n\nInstallation\n")
    assert f"## Retries\n\n### Paging\n\np. 4\n\nRetries\n{RETRY}" in text
    assert text.count(INSTALL) == 2


def test_a_pdf_without_outline_has_a_section_per_page_and_the_link_text_as_title(crawled):
    _, rows, *_ = crawled
    row = rows["/files/pages.pdf"]  # served as application/octet-stream: known by its extension
    assert row["title"] == "설치와 재시도 요약"
    assert row["text"] == f"# 설치와 재시도 요약\n\n## p. 1\n\n{INSTALL}\n\n## p. 2\n\n{RETRY}"


def test_docx_heading_styles_become_headings_and_tables_markdown_tables(crawled):
    _, rows, *_ = crawled
    row = rows["/files/batch.docx"]
    assert (row["title"], row["category"], row["language"]) == ("배치 운영 안내", "매뉴얼", "ko")
    assert row["text"] == (f"# 배치 운영 안내\n\n## 작업 등록\n\n{DOCX_TEXT}\n\n### 실패 처리\n\n"
                           "실패한 작업은 세 번까지 다시 시도하고, 그래도 실패하면 운영자에게 알립니다.\n\n"
                           "| 코드 | 뜻 |\n| --- | --- |\n| E01 | 시간 초과 \\| 재시도 |")


def test_hwpx_outline_styles_become_headings_and_tables_markdown_tables(crawled):
    _, rows, *_ = crawled
    row = rows["/files/channel.hwpx"]
    assert (row["title"], row["category"]) == ("온라인 채널 가이드", "매뉴얼")
    assert row["text"] == (f"# 온라인 채널 가이드\n\n## 채널 연동\n\n{HWPX_TEXT}\n\n오류 코드:\n\n"
                           "| 코드 | 뜻 |\n| --- | --- |\n| E01 | 시간 초과 재시도 \\| 세 번 |")


def test_encrypted_corrupt_and_image_only_files_are_dropped_with_their_reason(crawled):
    report, rows, *_ = crawled
    for path, reason in [("/files/locked.pdf", "encrypted"), ("/files/broken.docx", "corrupt"),
                         ("/files/scan.pdf", "no_text")]:
        assert (rows[path]["live"], rows[path]["reason"], rows[path]["status"]) == (0, reason, 200), path
        assert report.dropped[reason] == 1
    assert report.attachments == {"docx": 1, "hwpx": 1, "pdf": 2}  # the files read, the dropped ones not


def test_a_recrawl_asks_for_attachments_conditionally_and_keeps_their_documents(crawled):
    first, _, second, hits, _ = crawled
    files = [hit for hit in hits if hit.path in FILES]
    assert sorted(hit.path for hit in files) == sorted(FILES)  # reached through the linking page's 304
    assert all(hit.status == 304 and hit.headers.get("If-None-Match") for hit in files)
    assert len(second.changes["unchanged"]) == len(first.changes["new"]) and second.changes["removed"] == []
    assert second.attachments == {}  # a 304 is not read again


def test_attachment_text_reaches_the_built_dataset(crawled):
    from transforms.build import build

    *_, config = crawled
    result = build(load_config(config))
    written = "".join((result.version_dir / name).read_text(encoding="utf-8") for name in ("train.jsonl", "test.jsonl"))
    for text in (RETRY, DOCX_TEXT, HWPX_TEXT):
        assert text in written


def test_kind_comes_from_content_type_disposition_extension_or_signature():
    assert attachments.kind_of("http://h/download.do?id=1", b"", DOCX_MIME, None) == "docx"
    assert attachments.kind_of("http://h/download.do", b"PK", "application/octet-stream",
                               "attachment; filename*=UTF-8''%EC%95%88%EB%82%B4.hwpx") == "hwpx"
    assert attachments.kind_of("http://h/a/b.PDF", b"", None, None) == "pdf"
    assert attachments.kind_of("http://h/file?id=3", b"%PDF-1.7", "application/octet-stream", None) == "pdf"
    assert attachments.kind_of("http://h/image.png", b"\x89PNG", "image/png", None) is None


def test_attachments_off_leaves_linked_files_alone(tmp_path):
    with site() as served:
        config = write_config(tmp_path, f"""
  - name: docs
    start_urls: ["{served.url('/manuals/index.html')}"]
    attachments: []
""")
        (report,) = crawl(load_config(config))
        assert [hit.path for hit in served.hits if hit.path in FILES] == []
    assert report.finish_reason == "finished" and report.dropped == {}
