"""Logins: a basic-auth site and a form-login site on 127.0.0.1, credentials from the environment. A good crawl
gets the pages; a wrong password is `auth_failed` (one line, exit 1) and retires nothing; the secret is in no file
under the output folder; a redirect to another host (localhost) never carries the Authorization header or cookie."""

from __future__ import annotations

import base64
import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import pytest

import pipeline
from sites import html_page, prose, write_config

USER, PASSWORD = "guide-reader", "Pw-7f3c91d2-secret"
SESSION = "sess-5b8e0a44c1d9"
PAGES = ("/", "/a.html", "/b.html")


class Server:
    """One site on 127.0.0.1 (port 0): `kind` is 'basic', 'form' or 'open' (the other host); every request's
    headers are kept."""

    def __init__(self, kind: str, other: str = ""):
        self.hits: list[tuple[str, dict[str, str]]] = []
        self.expired = False  # a form site: the session ends after the start page
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def send(self, status: int, body: str = "", headers: dict[str, str] | None = None) -> None:
                data = body.encode("utf-8")
                self.send_response(status)
                for name, value in {"Content-Type": "text/html; charset=utf-8", **(headers or {})}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def page(self) -> None:
                if self.path == "/away":
                    return self.send(302, headers={"Location": f"{other}/landing.html"})
                if self.path not in PAGES and not self.path.endswith("/landing.html"):
                    return self.send(404, "not found")
                links = ["/a.html", "/b.html", "/away"] if self.path == "/" else []
                self.send(200, html_page(f"Page {self.path}", prose(f"guide {self.path}"), links))

            def do_GET(self) -> None:  # noqa: N802
                server.hits.append((self.path, dict(self.headers.items())))
                if kind == "basic":
                    good = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
                    if self.headers.get("Authorization") != good:
                        return self.send(401, "login", {"WWW-Authenticate": 'Basic realm="guide"'})
                if kind == "form" and self.path != "/login" and (
                        f"session={SESSION}" not in (self.headers.get("Cookie") or "")
                        or (server.expired and self.path != "/")):
                    return self.send(302, headers={"Location": "/login"})
                if kind == "header" and self.headers.get("X-Api-Key") != PASSWORD:
                    return self.send(403, "forbidden")
                if kind == "form" and self.path == "/login":
                    return self.send(200, "<form method=post>login</form>")
                self.page()

            def do_POST(self) -> None:  # noqa: N802
                form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
                if form.get("user") == [USER] and form.get("pass") == [PASSWORD]:
                    return self.send(302, headers={"Location": "/", "Set-Cookie": f"session={SESSION}; Path=/"})
                self.send(200, "<form method=post>wrong password</form>")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sites():
    other = Server("open")
    basic = Server("basic", other=f"http://localhost:{other.port}/basic")
    form = Server("form", other=f"http://localhost:{other.port}/form")
    yield basic, form, other
    for server in (basic, form, other):
        server.close()


def config(tmp_path: Path, basic: Server, form: Server) -> Path:
    sources = f"""  - name: basic
    start_urls: ["http://127.0.0.1:{basic.port}/"]
    allowed_domains: ["127.0.0.1", "localhost"]
    auth: {{type: basic, username_env: GUIDE_USER, password_env: GUIDE_PASSWORD}}
  - name: form
    start_urls: ["http://127.0.0.1:{form.port}/"]
    allowed_domains: ["127.0.0.1", "localhost"]
    auth:
      type: form
      login_url: http://127.0.0.1:{form.port}/login
      username_field: user
      password_field: pass
      username_env: GUIDE_USER
      password_env: GUIDE_PASSWORD
"""
    return write_config(tmp_path, sources, crawl="  progress: 'off'\n")


def live(tmp_path: Path) -> dict[str, set[str]]:
    db = sqlite3.connect(tmp_path / "out" / "state.sqlite")
    pages: dict[str, set[str]] = {}
    for source, url in db.execute("SELECT source, url FROM pages WHERE live"):
        pages.setdefault(source, set()).add(url.split("/", 3)[-1])
    return pages


def files_holding(folder: Path, secret: str) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_logins_crawl_then_a_wrong_password_is_auth_failed_and_retires_nothing(tmp_path, sites, monkeypatch, capfd):
    basic, form, other = sites
    path = config(tmp_path, basic, form)
    monkeypatch.setenv("GUIDE_USER", USER)
    monkeypatch.setenv("GUIDE_PASSWORD", PASSWORD)
    assert pipeline.main(["crawl", "--config", str(path)]) == 0
    first = live(tmp_path)
    assert first == {"basic": {"", "a.html", "b.html", "basic/landing.html"},
                     "form": {"", "a.html", "b.html", "form/landing.html"}}
    landing = [headers for p, headers in other.hits if p.endswith("/landing.html")]
    assert len(landing) == 2  # both sources' redirects reached the other host, without the credentials
    assert all("Authorization" not in h and "Cookie" not in h for h in landing)
    capfd.readouterr()

    monkeypatch.setenv("GUIDE_PASSWORD", "wrong-" + PASSWORD[::-1])
    assert pipeline.main(["crawl", "--config", str(path)]) == 1
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: auth_failed: the site refused the login of basic, form"), err
    assert live(tmp_path) == first  # nothing retired

    for secret in (PASSWORD, "wrong-" + PASSWORD[::-1], SESSION, base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()):
        assert files_holding(tmp_path / "out", secret) == []


def test_a_missing_environment_variable_is_one_line_before_crawling(tmp_path, sites, monkeypatch, capfd):
    basic, form, _ = sites
    monkeypatch.setenv("GUIDE_USER", USER)
    monkeypatch.delenv("GUIDE_PASSWORD", raising=False)
    assert pipeline.main(["crawl", "--config", str(config(tmp_path, basic, form))]) == 1
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "GUIDE_PASSWORD" in err[0] and "not set" in err[0], err
    assert basic.hits == [] and form.hits == []


def test_a_session_that_expires_mid_crawl_is_auth_failed_and_retires_nothing(tmp_path, sites, monkeypatch, capfd):
    basic, form, _ = sites
    path = config(tmp_path, basic, form)
    monkeypatch.setenv("GUIDE_USER", USER)
    monkeypatch.setenv("GUIDE_PASSWORD", PASSWORD)
    assert pipeline.main(["crawl", "--config", str(path)]) == 0
    first = live(tmp_path)
    capfd.readouterr()
    form.expired = True  # the login works, then every page but the start page redirects to the login page
    assert pipeline.main(["crawl", "--config", str(path)]) == 1
    err = capfd.readouterr().err.strip().splitlines()
    assert err == [err[0]] and err[0].startswith("error: auth_failed: the site refused the login of form"), err
    assert live(tmp_path) == first


def test_a_header_goes_to_the_start_host_only(tmp_path, monkeypatch):
    other = Server("open")
    site = Server("header", other=f"http://localhost:{other.port}/header")
    try:
        sources = f"""  - name: api
    start_urls: ["http://127.0.0.1:{site.port}/"]
    allowed_domains: ["127.0.0.1", "localhost"]
    auth: {{type: header, name: X-Api-Key, value_env: GUIDE_KEY}}
"""
        monkeypatch.setenv("GUIDE_KEY", PASSWORD)
        assert pipeline.main(["crawl", "--config", str(write_config(tmp_path, sources))]) == 0
        assert live(tmp_path)["api"] == {"", "a.html", "b.html", "header/landing.html"}
        assert [p for p, h in other.hits if "X-Api-Key" in h] == []
        assert files_holding(tmp_path / "out", PASSWORD) == []
        monkeypatch.setenv("GUIDE_KEY", "not-the-key")
        assert pipeline.main(["crawl", "--config", str(write_config(tmp_path, sources))]) == 1  # 403
        assert live(tmp_path)["api"] == {"", "a.html", "b.html", "header/landing.html"}
    finally:
        site.close()
        other.close()


def test_a_cookie_goes_to_the_start_host_only(tmp_path, sites, monkeypatch):
    _, form, other = sites  # the form site takes its session cookie, however it was got
    sources = f"""  - name: cookie
    start_urls: ["http://127.0.0.1:{form.port}/"]
    allowed_domains: ["127.0.0.1", "localhost"]
    auth: {{type: cookie, cookie_env: GUIDE_COOKIE}}
"""
    monkeypatch.setenv("GUIDE_COOKIE", f"session={SESSION}")
    assert pipeline.main(["crawl", "--config", str(write_config(tmp_path, sources))]) == 0
    assert live(tmp_path)["cookie"] == {"", "a.html", "b.html", "form/landing.html"}
    assert [p for p, h in other.hits if "Cookie" in h] == []
    assert files_holding(tmp_path / "out", SESSION) == []
