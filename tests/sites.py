"""Fixture web sites for crawler tests: served on 127.0.0.1 (a free port), editable between crawls, and
recording every request with its headers so tests can assert what the crawler sent."""

from __future__ import annotations

import hashlib
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

HTML = "text/html; charset=utf-8"


@dataclass
class Page:
    body: bytes | str = b""
    status: int = 200
    content_type: str | None = HTML
    headers: dict[str, str] = field(default_factory=dict)
    validators: bool = True  # send an ETag and answer If-None-Match with 304
    last_modified: str | None = None  # send Last-Modified and answer If-Modified-Since with 304
    delay: float = 0.0  # seconds before answering
    encoding: str = "utf-8"  # how a str body is encoded

    def payload(self) -> bytes:
        return self.body.encode(self.encoding, "xmlcharrefreplace") if isinstance(self.body, str) else self.body


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    status: int


def html_page(title: str, body: str, links: list[str] = (), *, head: str = "", nav: str = "") -> str:
    """A documentation-like page: nav with `links`, a main article, a footer."""
    anchors = "".join(f'<li><a href="{href}">{href}</a></li>' for href in links)
    return (
        f"<!doctype html><html><head><title>{title} - Docs</title>{head}</head><body>"
        f'<nav class="menu"><ul>{anchors}</ul>{nav}</nav>'
        f"<main><article><h1>{title}</h1>{body}</article></main>"
        "<footer>© 2026 Example Corp. All rights reserved.</footer></body></html>"
    )


def prose(topic: str, n: int = 3) -> str:
    """A few paragraphs long enough for main-content extraction to keep them."""
    sentence = (f"The {topic} service handles requests from partner systems and records every message in the "
                f"audit log so operators can trace a transaction from end to end. ")
    return "".join(f"<p>{sentence * 2}Paragraph {i + 1} about {topic}.</p>" for i in range(n))


WORDS = (
    "adapter batch channel client config cron daemon endpoint error field gateway header index interface job "
    "key latency ledger message node offset partner payload queue record relay request response retry route "
    "schedule schema secret server session signature socket status stream switch table tenant thread timeout "
    "token topic trace transaction upload user vault version window worker zone archive audit backup buffer "
    "cache cluster cursor digest export filter format handler import journal limit lock mirror monitor parser "
    "policy proxy replica rollback sandbox segment shard snapshot storage template ticket transfer validator"
).split()


def distinct_prose(seed: int, paragraphs: int = 3) -> str:
    """Paragraphs no other seed shares: pages that near-duplicate detection keeps apart."""
    rng = random.Random(seed)
    return "".join(
        "<p>" + " ".join(rng.choice(WORDS) for _ in range(45)).capitalize() + ".</p>" for _ in range(paragraphs)
    )


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 drops SYNs of a crawler's bursts: a second's stall each

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that hangs up early (size cap, timeout) is part of the tests


class Site:
    """`pages` maps a path (query included, e.g. "/a?x=1") to a Page, or a path prefix ending in "*" to a
    function path -> Page. Unknown paths answer 404; with `require` (header → value), a request without those
    headers answers 401."""

    def __init__(self, pages: dict[str, Page | Callable[[str], Page]], require: dict[str, str] | None = None):
        self.pages = dict(pages)
        self.hits: list[Hit] = []
        self._lock = threading.Lock()
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # headers and body go out in two writes: without this, Nagle's algorithm and delayed ACKs
                # hold every kept-alive response back ~40 ms
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                refused = any(self.headers.get(name) != value for name, value in (require or {}).items())
                page = Page("login required", 401, "text/plain") if refused else site.lookup(self.path)
                if page.delay:
                    time.sleep(page.delay)
                body = page.payload()
                status = page.status
                etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"' if page.validators else None
                if status == 200 and (
                    (etag and self.headers.get("If-None-Match") == etag)
                    or (page.last_modified and self.headers.get("If-Modified-Since") == page.last_modified)
                ):
                    status, body = 304, b""
                with site._lock:
                    site.hits.append(Hit(self.path, dict(self.headers.items()), status))
                try:
                    self.send_response(status)
                    if page.content_type and status != 304:
                        self.send_header("Content-Type", page.content_type)
                    if etag:
                        self.send_header("ETag", etag)
                    if page.last_modified:
                        self.send_header("Last-Modified", page.last_modified)
                    for name, value in page.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    if body:
                        self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the crawler gave up on this response (size cap, timeout)

            def log_message(self, *args: object) -> None:
                pass

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def lookup(self, path: str) -> Page:
        path = unquote(path)
        if path in self.pages:
            page = self.pages[path]
        else:
            plain = urlsplit(path).path
            page = self.pages.get(plain) if "?" in path and plain in self.pages else None
            if page is None:
                prefixes = [p for p in self.pages if p.endswith("*") and path.startswith(p[:-1])]
                page = self.pages[max(prefixes, key=len)] if prefixes else Page("not found", 404, "text/plain")
        return page(path) if callable(page) else page

    def url(self, path: str = "/") -> str:
        return self.base + path

    def requested(self, path: str) -> list[Hit]:
        return [hit for hit in self.hits if hit.path == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "Site":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_config(folder: Path, sources: str, *, crawl: str = "", extra: str = "") -> Path:
    """A config file whose crawl section suits tests: no start delay, short timeouts, no retries."""
    config = folder / "config.yaml"
    config.write_text(
        f"""
output_dir: out
crawl:
  start_delay_seconds: 0
  timeout_seconds: 5
  retries: 0
  extract_workers: 1
{crawl}
sources:
{sources}
{extra}
""",
        encoding="utf-8",
    )
    return config


DOCBOOK_CHAPTERS = {
    "index.html": ("GIMP 사용자 설명서", "이 설명서는 그림 편집 프로그램의 모든 기능을 차례대로 소개합니다."),
    "layers.html": ("레이어 대화상자", "레이어 대화상자는 그림을 이루는 레이어를 쌓고 숨기고 합치는 곳입니다."),
    "brushes.html": ("붓 대화상자", "붓 대화상자에서는 칠하기 도구가 쓰는 붓의 모양과 크기를 고릅니다."),
    "colors.html": ("색 대화상자", "색 대화상자는 전경색과 배경색을 고르고 색 기록을 보여 줍니다."),
}


def docbook_page(name: str, encoding: str) -> str:
    """A DocBook XSL page: XML declaration naming `encoding`, XHTML namespace, navigation header and footer
    tables linking to the other chapters, no charset anywhere else."""
    title, sentence = DOCBOOK_CHAPTERS[name]
    others = [other for other in DOCBOOK_CHAPTERS if other != name]
    nav = "".join(f'<td><a accesskey="n" href="{other}">{DOCBOOK_CHAPTERS[other][0]}</a></td>' for other in others)
    paragraphs = "".join(f"<p>{sentence} 문단 {i + 1}에서는 {title}의 쓰임을 예와 함께 자세히 설명합니다. {sentence}</p>"
                         for i in range(4))
    return (
        f'<?xml version="1.0" encoding="{encoding}" standalone="no"?>\n'
        '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN" '
        '"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">\n'
        f'<html xmlns="http://www.w3.org/1999/xhtml"><head><title>{title}</title>'
        '<meta name="generator" content="DocBook XSL Stylesheets V1.79.1" /></head><body>'
        f'<div class="navheader"><table width="100%" summary="Navigation header"><tr>{nav}</tr></table><hr /></div>'
        f'<div class="sect1"><div class="titlepage"><div><div><h2 class="title"><a id="{name[:-5]}"></a>{title}</h2>'
        f"</div></div></div>{paragraphs}</div>"
        f'<div class="navfooter"><hr /><table width="100%" summary="Navigation footer"><tr>{nav}</tr></table></div>'
        "</body></html>"
    )


def docbook_site(encoding: str, content_type: str = "text/html") -> Site:
    """The DOCBOOK_CHAPTERS as an XHTML site whose pages declare their `encoding` only in the XML declaration
    (like GIMP's Korean manual in UTF-8 or the Debian FAQ in EUC-KR)."""
    return Site({f"/{name}": Page(docbook_page(name, encoding), content_type=content_type, encoding=encoding)
                 for name in DOCBOOK_CHAPTERS})


FRAME_CHAPTERS = {
    "/content/welcome.html": ("업무 가이드 안내", "이 가이드는 사내 시스템을 처음 쓰는 직원이 알아야 할 절차를 모았습니다."),
    "/content/leave.html": ("휴가 신청 절차", "휴가는 시작일 사흘 전까지 결재 시스템에서 신청하고 팀장의 승인을 받습니다."),
    "/content/expense.html": ("경비 정산 방법", "경비는 영수증을 첨부하여 사용한 달의 다음 달 오일까지 정산합니다."),
    "/content/expense-table.html": ("경비 한도표", "출장 숙박비는 하룻밤 십만 원, 식비는 하루 삼만 원까지 인정됩니다."),
}


def frame_chapter(path: str) -> str:
    """A content frame's page: prose and no links (the pages are reached through the navigation frame);
    the expense page embeds its table page in an iframe."""
    title, sentence = FRAME_CHAPTERS[path]
    paragraphs = "".join(f"<p>{sentence} 문단 {i + 1}에서는 {title}을 예와 함께 자세히 설명합니다. {sentence}</p>"
                         for i in range(4))
    iframe = '<iframe src="expense-table.html" title="한도표"></iframe>' if path.endswith("/expense.html") else ""
    return f"<html><head><title>{title}</title></head><body><h1>{title}</h1>{paragraphs}{iframe}</body></html>"


def frameset_site() -> Site:
    """An old intranet guide: `/` is a frameset of a navigation frame (`/nav.html`, links only, each opening
    a chapter in the content frame) and a content frame (`/content/welcome.html`)."""
    frameset = ('<!DOCTYPE html PUBLIC "-//W3C//DTD HTML 4.01 Frameset//EN"><html><head><title>업무 가이드</title>'
                '</head><frameset cols="200,*"><frame src="nav.html" name="nav">'
                '<frame src="content/welcome.html" name="content"><noframes>프레임을 지원하는 브라우저로 보십시오.'
                "</noframes></frameset></html>")
    nav = "<html><head><title>목차</title></head><body><ul>" + "".join(
        f'<li><a href="{path[1:]}" target="content">{title}</a></li>'
        for path, (title, _) in FRAME_CHAPTERS.items() if not path.endswith("-table.html")) + "</ul></body></html>"
    pages = {"/": Page(frameset), "/nav.html": Page(nav)}
    pages.update({path: Page(frame_chapter(path)) for path in FRAME_CHAPTERS})
    return Site(pages)
