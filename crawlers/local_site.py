"""Serve a folder of HTML files on 127.0.0.1 as if it were the site itself.

Used for sources with `serve_dir` (an offline export of a docs site): the crawler sends its requests here as
to an HTTP proxy, so documents keep the site's real URLs. It answers plain paths too, with ETag and
Last-Modified validators, so a re-crawl can be conditional.
"""

from __future__ import annotations

import email.utils
import hashlib
import mimetypes
import socket
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote, urlsplit


class _FolderHandler(BaseHTTPRequestHandler):
    root: Path
    protocol_version = "HTTP/1.1"  # keep-alive: a re-crawl of small 304s is not a TCP handshake per page

    def setup(self) -> None:
        super().setup()
        # headers and body are two writes: without this, Nagle's algorithm and delayed ACKs hold every
        # kept-alive response back ~40 ms
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = unquote(urlsplit(self.path).path)
        target = (self.root / path.lstrip("/")).resolve()
        if target.is_dir():
            target = target / "index.html"
        if not target.is_relative_to(self.root) or not target.is_file():
            self._send(404, b"not found", "text/plain")
            return
        body = target.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        modified = email.utils.formatdate(target.stat().st_mtime, usegmt=True)
        if self.headers.get("If-None-Match") == etag:
            self._send(304, b"", None, etag=etag, modified=modified)
            return
        ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if ctype.startswith("text/") or ctype.endswith("xml"):
            ctype += "; charset=utf-8"
        self._send(200, body, ctype, etag=etag, modified=modified)

    def _send(self, status: int, body: bytes, ctype: str | None, **validators: str) -> None:
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        if "etag" in validators:
            self.send_header("ETag", validators["etag"])
            self.send_header("Last-Modified", validators["modified"])
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    # socketserver listens with a backlog of 5: a crawler opening connections faster than they are accepted
    # gets its SYNs dropped and waits a second for each retransmission
    request_queue_size = 128


@contextmanager
def serve_folder(folder: Path) -> Iterator[str]:
    """Serve `folder` on 127.0.0.1 (a free port) while the block runs; yields 'http://127.0.0.1:PORT'."""
    root = Path(folder).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"serve_dir {folder} is not a folder")
    handler = type("FolderHandler", (_FolderHandler,), {"root": root})
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
