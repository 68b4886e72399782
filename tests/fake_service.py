"""What the fakes of Together and Fireworks share: an HTTP server on 127.0.0.1 port 0, bearer-key checks, routes
by regex, request bodies checked against a JSON schema file in tests/ (unknown fields refused), and a record
of every request (the Authorization header kept apart, as the keys seen)."""

from __future__ import annotations

import json
import re
import threading
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import jsonschema
from jsonschema.exceptions import best_match

from fake_openai import _parse_multipart, _unflatten


class Failure(Exception):
    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    status: int | None = None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        status, ctype, payload = self.server.fake.dispatch(self.command, self.path, dict(self.headers.items()), body)
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False


class FakeService:
    """Subclasses set `schemas` (a file name in tests/) and fill `routes` with (verb, regex, handler)."""

    schema_file: str = ""

    def __init__(self, api_key: str):
        self.api_key = api_key
        self.keys_seen: set[str] = set()
        self.requests: list[Recorded] = []
        self.routes: list[tuple[str, re.Pattern[str], Callable[..., Any]]] = []
        self.schemas = json.loads(Path(__file__).with_name(self.schema_file).read_text(encoding="utf-8"))
        self.lock = threading.RLock()
        self._server: _Server | None = None

    # ---- lifecycle

    def __enter__(self) -> "FakeService":
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def find(self, method: str, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path == path]

    # ---- checks

    def check(self, schema: str, instance: Any) -> None:
        """400 naming the first field the documented request shape refuses."""
        error = best_match(jsonschema.Draft202012Validator(self.schemas[schema]).iter_errors(instance))
        if error is not None:
            where = ".".join(str(p) for p in error.absolute_path) or "(body)"
            raise Failure(400, f"invalid request: {where}: {error.message}", "invalid_request")

    # ---- dispatch

    def dispatch(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
        url = urllib.parse.urlsplit(raw_path)
        lower = {k.lower(): v for k, v in headers.items()}
        ctype = lower.get("content-type", "")
        record = Recorded(method, url.path, urllib.parse.parse_qs(url.query), None)
        with self.lock:
            self.requests.append(record)
            try:
                auth = lower.get("authorization", "")
                key = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else ""
                self.keys_seen.add(key)
                if key != self.api_key:
                    raise Failure(401, "invalid API key", "unauthorized")
                if ctype.startswith("multipart/form-data"):
                    record.body = _unflatten(_parse_multipart(body, ctype))
                elif body:
                    try:
                        record.body = json.loads(body)
                    except json.JSONDecodeError:
                        raise Failure(400, "the body is not JSON") from None
                result = self._route(method, url.path, record)
            except Failure as exc:
                record.status = exc.status
                error = {"error": {"message": exc.message, "code": exc.code}}
                return exc.status, "application/json", json.dumps(error).encode()
        record.status = 200
        if isinstance(result, bytes):
            return 200, "application/octet-stream", result
        return 200, "application/json", json.dumps(result).encode()

    def _route(self, method: str, path: str, record: Recorded) -> Any:
        for verb, pattern, handler in self.routes:
            match = pattern.fullmatch(path)
            if match and verb == method:
                return handler(*[urllib.parse.unquote(g) for g in match.groups()], body=record.body,
                               query=record.query)
        raise Failure(404, f"no route {method} {path}", "not_found")
