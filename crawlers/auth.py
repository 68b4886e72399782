"""Logins: a source's `auth` turned into what its requests carry, for the hosts of its start URLs only.

The config names environment variables; `credentials` reads them (`check`: a missing one is a config error before
the crawl) and registers every value with `base.logs` so no line shows it. Basic auth is Scrapy's
HttpAuthMiddleware (HTTPAUTH_USER / _PASS, HTTPAUTH_DOMAIN the first start URL's host and port); a header, a
cookie, or the session cookie a form login set is added by `crawlers.middlewares.AuthMiddleware` to requests for
those hosts and taken off any other (Scrapy's redirects drop Authorization and Cookie when the host changes). A
refused login (a refused form, a 401 or 403, a redirect to the login page) stops the source's crawl with finish
reason `auth_failed`; an incomplete crawl retires nothing, so the previous crawl's pages stay live.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.cookies import SimpleCookie

from base import logs
from base.errors import Crawl2TuneError
from configs import BasicAuth, ConfigError, CookieAuth, FormAuth, HeaderAuth, SourceConfig

FINISH_REASON = "auth_failed"


class AuthFailed(Crawl2TuneError, RuntimeError):
    """The site refused the source's login: wrong credentials, or a session that expired."""


@dataclass(frozen=True, repr=False)
class Credentials:
    """What a source's requests carry: `headers` for `hosts`, the hosts of its start URLs (basic auth goes
    through `settings`)."""

    hosts: tuple[str, ...]
    headers: dict[str, str] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)
    login_path: str | None = None  # a form login's page: a redirect there mid-crawl means the session ended

    def covers(self, host: str | None) -> bool:
        return host in self.hosts


def _env(source: SourceConfig, key: str, name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise ConfigError(f"sources: {source.name}: auth.{key} names the environment variable {name}, which is not "
                          f"set; export {name}=... and run the command again")
    logs.register_secret(value)
    return value


def check(source: SourceConfig) -> None:
    """Fail with a one-line config error when an environment variable the source's auth names is not set."""
    auth = source.auth
    if auth is not None:
        for key in ("username_env", "password_env", "value_env", "cookie_env"):
            if hasattr(auth, key):
                _env(source, key, getattr(auth, key))


def credentials(source: SourceConfig, timeout: float) -> Credentials | None:
    """The source's credentials, read from the environment (a form login is posted now); None without auth.
    Raises AuthFailed when the login form refuses them."""
    auth = source.auth
    hosts = tuple(sorted({urllib.parse.urlsplit(url).hostname or "" for url in source.start_urls}))
    if auth is None:
        return None
    if isinstance(auth, BasicAuth):
        host = urllib.parse.urlsplit(source.start_urls[0]).netloc.lower()  # Scrapy matches host and port
        return Credentials(hosts, settings={"HTTPAUTH_USER": _env(source, "username_env", auth.username_env),
                                            "HTTPAUTH_PASS": _env(source, "password_env", auth.password_env),
                                            "HTTPAUTH_DOMAIN": host})
    if isinstance(auth, HeaderAuth):
        return Credentials(hosts, headers={auth.name: _env(source, "value_env", auth.value_env)})
    if isinstance(auth, CookieAuth):
        return Credentials(hosts, headers={"Cookie": _env(source, "cookie_env", auth.cookie_env)})
    assert isinstance(auth, FormAuth)
    cookie = form_login(source, auth, timeout)
    logs.register_secret(cookie)
    return Credentials(hosts, headers={"Cookie": cookie}, login_path=urllib.parse.urlsplit(auth.login_url).path)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # the answer to the login is looked at as it is


def form_login(source: SourceConfig, auth: FormAuth, timeout: float) -> str:
    """Post the login form and return the session cookie it set (a Cookie header's value)."""
    if urllib.parse.urlsplit(auth.login_url).hostname not in source.domains:
        raise ConfigError(f"sources: {source.name}: auth.login_url {auth.login_url} is not on the source's hosts "
                          f"({', '.join(source.domains)}); credentials are never sent to another host")
    form = {auth.username_field: _env(source, "username_env", auth.username_env),
            auth.password_field: _env(source, "password_env", auth.password_env)}
    opener = urllib.request.build_opener(_NoRedirect)
    request = urllib.request.Request(auth.login_url, data=urllib.parse.urlencode(form).encode("ascii"))
    try:
        with opener.open(request, timeout=timeout) as answer:
            status, headers, body = answer.status, answer.headers, answer.read()
    except urllib.error.HTTPError as err:
        status, headers, body = err.code, err.headers, err.read()
    except OSError as err:
        raise AuthFailed(f"{source.name}: the login at {auth.login_url} failed: {type(err).__name__}") from None
    jar = SimpleCookie()
    for line in headers.get_all("Set-Cookie") or []:
        jar.load(line)
    cookie = "; ".join(f"{name}={morsel.value}" for name, morsel in jar.items())
    location = urllib.parse.urljoin(auth.login_url, headers.get("Location") or "")
    if status in (301, 302, 303, 307, 308) and auth.success_text is not None and cookie:
        landing = urllib.request.Request(location, headers={"Cookie": cookie})
        if urllib.parse.urlsplit(location).hostname in source.domains:
            try:
                with opener.open(landing, timeout=timeout) as answer:
                    body = answer.read()
            except OSError:
                body = b""
    back_to_login = status in (301, 302, 303, 307, 308) and urllib.parse.urlsplit(location).path == \
        urllib.parse.urlsplit(auth.login_url).path
    refused = status >= 400 or back_to_login or not cookie
    if auth.success_text is not None and auth.success_text.encode("utf-8") not in body:
        refused = True
    if refused:
        raise AuthFailed(f"{source.name}: the login at {auth.login_url} was refused")
    return cookie
