"""The review web app (Starlette + Jinja2): the versions, a version's examples with filters and search, the
source page on demand, and the actions a reviewer takes (exclude, keep, edit, bulk exclude, approve).

Decisions go to the same review_decisions table `review apply` fills, so the next `build` applies them; an
approval goes through transforms.approval, bound to the manifest's sha256 like `approve`. Every form carries a
CSRF token; off loopback every request needs the random access token of the printed URL.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from markupsafe import Markup, escape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from transforms.approval import approval_of, approve
from transforms.review_state import ReviewError
from transforms.build import datasets_root
from transforms.decisions import store_decisions, stored_decisions
from transforms.report import POLICY as REPORT_POLICY
from transforms.review_app import index
from transforms.version import read_manifest, versions

PER_PAGE = 50
LOOPBACK = {"127.0.0.1", "::1", "localhost"}
_TEMPLATES = Path(__file__).parent / "templates"


def dataset_versions(config: Any) -> dict[str, Path]:
    """version name → folder, oldest first: the one place the app finds versions."""
    return {p.name: p for p in versions(datasets_root(config)) if (p / "manifest.json").exists()}


def answer_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def highlight(text: str, quotes: list[str]) -> Markup:
    """`text` escaped, each evidence quote found in it wrapped in <mark>."""
    quotes = [q for q in quotes if q and q in text]
    if not quotes:
        return escape(text)
    pattern = re.compile("|".join(re.escape(q) for q in sorted(quotes, key=len, reverse=True)))
    out, last = [], 0
    for match in pattern.finditer(text):
        out += [escape(text[last:match.start()]), Markup("<mark>"), escape(match.group()), Markup("</mark>")]
        last = match.end()
    out.append(escape(text[last:]))
    return Markup("").join(out)


class ReviewApp:
    def __init__(self, config: Any, state: Path, cache: Path, access_token: str | None = None):
        self.config = config
        self.state = Path(state)
        self.cache = Path(cache)
        self.access_token = access_token
        self.csrf = secrets.token_urlsafe(32)
        self.templates = Jinja2Templates(env=jinja2.Environment(loader=jinja2.FileSystemLoader(_TEMPLATES),
                                                                autoescape=True))
        self.indexes: dict[Path, Any] = {}
        self.app = Starlette(routes=[
            Route("/", self.versions_page),
            Route("/v/{version}", self.examples_page),
            Route("/v/{version}/source/{example_id}", self.source_page),
            Route("/v/{version}/report", self.report_page),
            Route("/v/{version}/decide", self.decide, methods=["POST"]),
            Route("/v/{version}/bulk-exclude", self.bulk_exclude, methods=["POST"]),
            Route("/v/{version}/approve", self.approve, methods=["POST"]),
        ])

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.access_token is not None:
            request = Request(scope)
            given = request.query_params.get("token") or request.cookies.get("review_token") or ""
            if not hmac.compare_digest(given, self.access_token):
                await PlainTextResponse("this review app needs the token of the URL it printed", 403)(
                    scope, receive, send)
                return
            if request.query_params.get("token"):
                rest = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
                response = RedirectResponse(request.url.path + (f"?{rest}" if rest else ""), 303)
                response.set_cookie("review_token", self.access_token, httponly=True, samesite="strict")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    # -- helpers
    def _version(self, request: Request) -> Path:
        found = dataset_versions(self.config).get(request.path_params["version"])
        if found is None:
            raise _NotFound(f"no dataset version {request.path_params['version']!r}")
        return found

    def _index(self, version_dir: Path) -> Any:
        key = index.index_path(self.cache, version_dir)
        if key not in self.indexes:
            self.indexes[key] = index.open_index(self.cache, version_dir)
        return self.indexes[key]

    def _render(self, request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        return self.templates.TemplateResponse(request, name, {"csrf": self.csrf, **context}, status_code=status)

    async def _form(self, request: Request) -> Any:
        form = await request.form()
        if not hmac.compare_digest(str(form.get("csrf", "")), self.csrf):
            raise _Refused("missing or wrong CSRF token; reload the page and try again")
        return form

    def _store(self, decisions: list[tuple[str, str, str | None, str | None]]) -> None:
        store_decisions(self.state, self.config.dataset.name, decisions, "review serve")

    def _decided(self) -> dict[str, tuple[str, str | None]]:
        return stored_decisions(self.state, self.config.dataset.name)

    # -- pages
    async def versions_page(self, request: Request) -> Response:
        found = list(dataset_versions(self.config).values())
        rows, previous = [], None
        for version_dir in found:
            manifest = read_manifest(version_dir)
            counts = manifest.counts
            diff = None
            if previous is not None:
                diff = {key: counts.get(key, 0) - previous.get(key, 0)
                        for key in ("documents", "examples", "train", "test")}
            rows.append({"name": version_dir.name, "manifest": manifest, "counts": counts, "diff": diff,
                         "report": (version_dir / "report.html").exists(),
                         "approval": approval_of(self.state, version_dir)})
            previous = counts
        return self._render(request, "versions.html", dataset=self.config.dataset.name, rows=rows[::-1])

    async def examples_page(self, request: Request) -> Response:
        version_dir = self._version(request)
        db = self._index(version_dir)
        filters_all = index.filter_values(db)
        params = request.query_params
        filters = {k: params[k] for k in filters_all if params.get(k)}
        search, decision = params.get("q", ""), params.get("decision", "")
        try:
            page = max(1, int(params.get("page", "1")))
        except ValueError:
            page = 1
        decisions = self._decided()
        kinds = {k: v[0] for k, v in decisions.items()}
        rows, total = index.query(db, filters, search, kinds, decision, page, PER_PAGE)
        examples = []
        for row in rows:
            kind, edited = decisions.get(row["example_id"], (None, None))
            answer = edited if kind == "edit" else row["answer"]
            examples.append({"row": row, "decision": kind, "answer": answer, "base": answer_hash(answer)})
        current = {**filters, **({"q": search} if search else {}), **({"decision": decision} if decision else {})}
        pages = max(1, -(-total // PER_PAGE))
        return self._render(
            request, "examples.html", version=version_dir.name, examples=examples, total=total, page=page,
            pages=pages, filters_all=filters_all, current=current, query=urlencode(current),
            approval=approval_of(self.state, version_dir), conflict=params.get("conflict"),
        )

    async def source_page(self, request: Request) -> Response:
        version_dir = self._version(request)
        db = self._index(version_dir)
        row = db.execute("SELECT * FROM examples WHERE example_id = ?",
                         (request.path_params["example_id"],)).fetchone()
        if row is None:
            raise _NotFound(f"no example {request.path_params['example_id']!r} in {version_dir.name}")
        meta = json.loads(row["meta"])
        doc = index.document(db, version_dir, meta.get("document_id", ""))
        evidence = meta.get("evidence") or []
        quotes = [e if isinstance(e, str) else e.get("quote", "") for e in evidence]
        text = doc["text"] if doc else ""
        if row["section"] and text:
            text = _section(text, row["section"])
        return self._render(request, "source.html", version=version_dir.name, row=row,
                            text=highlight(text, quotes), found=doc is not None)

    async def report_page(self, request: Request) -> Response:
        """The version's report.html as built (its own Content-Security-Policy forbids scripts)."""
        page = self._version(request) / "report.html"
        if not page.exists():
            raise _NotFound(f"{page.parent.name} has no report.html; run python pipeline.py build")
        return HTMLResponse(page.read_text(encoding="utf-8"),
                            headers={"Content-Security-Policy": REPORT_POLICY})

    # -- actions
    async def decide(self, request: Request) -> Response:
        version_dir = self._version(request)
        form = await self._form(request)
        example_id, action = str(form.get("example_id", "")), str(form.get("action", ""))
        row = self._index(version_dir).execute("SELECT url, answer FROM examples WHERE example_id = ?",
                                               (example_id,)).fetchone()
        if row is None:
            raise _NotFound(f"no example {example_id!r} in {version_dir.name}")
        back = str(form.get("back", "")) or ""
        if action == "save":
            kind, edited = self._decided().get(example_id, (None, None))
            shown_now = edited if kind == "edit" else row["answer"]
            if answer_hash(shown_now) != str(form.get("base", "")):
                # the answer changed since the reviewer loaded it: nothing stored, the page says so
                return RedirectResponse(_with(back, conflict=example_id, version=version_dir.name), 303)
            answer = str(form.get("answer", "")).replace("\r\n", "\n")
            self._store([(example_id, "edit", answer, row["url"])])
        elif action in ("exclude", "keep"):
            self._store([(example_id, action, None, row["url"])])
        else:
            raise _Refused(f"unknown action {action!r}; use Exclude, Keep or Save")
        return RedirectResponse(_with(back, version=version_dir.name), 303)

    async def bulk_exclude(self, request: Request) -> Response:
        version_dir = self._version(request)
        form = await self._form(request)
        db = self._index(version_dir)
        filters_all = index.filter_values(db)
        filters = {k: str(form[k]) for k in filters_all if form.get(k)}
        kinds = {k: v[0] for k, v in self._decided().items()}
        matched = index.matching_ids(db, filters, str(form.get("q", "")), kinds, str(form.get("decision", "")))
        self._store([(example_id, "exclude", None, url) for example_id, url in matched])
        return RedirectResponse(_with(str(form.get("back", "")), version=version_dir.name), 303)

    async def approve(self, request: Request) -> Response:
        version_dir = self._version(request)
        form = await self._form(request)
        approve(self.state, version_dir)
        return RedirectResponse(_with(str(form.get("back", "")), version=version_dir.name), 303)


def _section(text: str, section: str) -> str:
    """The part of a page's markdown from the heading named `section` to the next heading of its level or
    higher; the whole text when no heading matches."""
    lines = text.splitlines()
    for start, line in enumerate(lines):
        heading = re.match(r"^(#+)\s+(.*)$", line)
        if heading and heading.group(2).strip() == section.strip():
            level = len(heading.group(1))
            end = next((i for i in range(start + 1, len(lines))
                        if (h := re.match(r"^(#+)\s", lines[i])) and len(h.group(1)) <= level), len(lines))
            return "\n".join(lines[start:end])
    return text


def _with(back: str, version: str, **params: str) -> str:
    """Where an action returns to: the page it came from (only a path of this app), plus `params`."""
    if not back.startswith(f"/v/{version}") or back.startswith("//"):
        back = f"/v/{version}"
    if not params:
        return back
    return back + ("&" if "?" in back else "?") + urlencode(params)


class _NotFound(Exception):
    pass


class _Refused(Exception):
    pass


def build_app(config: Any, state: Path, cache: Path, access_token: str | None = None) -> ReviewApp:
    review = ReviewApp(config, state, cache, access_token)

    async def not_found(request: Request, exc: Exception) -> Response:
        return PlainTextResponse(str(exc), 404)

    async def refused(request: Request, exc: Exception) -> Response:
        return PlainTextResponse(str(exc), 403)

    review.app.add_exception_handler(_NotFound, not_found)
    review.app.add_exception_handler(_Refused, refused)
    return review


def serve(config: Any, state: Path, host: str = "127.0.0.1", port: int = 0,
          announce: Any = print) -> None:
    """Run the app until interrupted; `announce` gets the one line with the URL (with the access token when
    `host` is not loopback)."""
    import socket

    import uvicorn

    token = None if host in LOOPBACK else secrets.token_urlsafe(24)
    review = build_app(config, state, Path(config.output_dir) / "review-index", token)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except (OSError, OverflowError) as exc:
        sock.close()
        raise ReviewError(f"cannot listen on {host}:{port} ({getattr(exc, 'strerror', None) or exc}); "
                          "pass another --port, or --host 127.0.0.1") from None
    sock.listen(128)  # connections wait in the backlog until uvicorn serves them
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    announce(f"review: http://{shown}:{bound}/" + (f"?token={token}" if token else ""))
    server = uvicorn.Server(uvicorn.Config(review, log_level="warning", access_log=False))
    server.run(sockets=[sock])
