"""What pages built by scripts cost, and that the static pages of the same crawl do not pay for them.

Serves on 127.0.0.1 a site of `--pages` documentation pages of which a fifth are script shells (an empty body
and a script that fills it from a JSON endpoint), and crawls it twice with `crawlers.crawl.crawl` (each in a
freshly spawned process, as `crawl` runs):

- mixed: the whole site; the shells are rendered by the system's Chromium (`crawl.render_concurrency` at once);
- static: the same site with the shells left out of the links (the static part alone).

It prints the cost per rendered page ((mixed - static) / shells) and, from the server's log, when the last static
page was fetched in each crawl: the ratio shows whether the static pages waited for the browser.

    python bench/crawl_render.py [--pages 100] [--concurrency 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from configs import Config, SourceConfig  # noqa: E402
from crawlers.crawl import crawl  # noqa: E402

SHELL = """<!doctype html><html><head><title>Page {i}</title></head><body><div id="app"></div><script>
fetch('/api/page-{i}.json').then(r => r.json()).then(d => {{ document.getElementById('app').innerHTML = d.html; }});
</script></body></html>"""


def paragraphs(i: int) -> str:
    return "".join(f"<p>Page {i}, paragraph {k}: the batch service records every transfer of partner {i} in the "
                   f"audit log, and operators trace each message from the gateway to the ledger.</p>" for k in range(5))


def static_page(i: int, links: list[int]) -> str:
    nav = "".join(f'<li><a href="/page-{t}.html">Page {t}</a></li>' for t in links)
    return (f"<!doctype html><html><head><title>Page {i}</title></head><body><nav><ul>{nav}</ul></nav>"
            f"<main><article><h1>Page {i}</h1>{paragraphs(i)}</article></main></body></html>")


class BenchSite:
    """The site, with every page request's time and whether a browser made it."""

    def __init__(self, n_pages: int, with_shells: bool):
        self.shells = {i for i in range(n_pages) if i % 5 == 4} if with_shells else set()
        pages = [i for i in range(n_pages) if with_shells or i % 5 != 4]
        self.static = {f"/page-{i}.html" for i in pages if i not in self.shells}
        self.routes: dict[str, tuple[str, str]] = {
            "/": ("text/html", static_page(-1, pages)),
            **{f"/page-{i}.html": ("text/html", SHELL.format(i=i) if i in self.shells else
                                   static_page(i, [p for p in pages if p > i][:3])) for i in pages},
            **{f"/api/page-{i}.json": ("application/json", json.dumps(
                {"html": f"<main><article><h1>Page {i}</h1>{paragraphs(i)}</article></main>"})) for i in self.shells},
        }
        self.hits: list[tuple[float, str]] = []
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                site.hits.append((time.perf_counter(), self.path))
                kind, body = site.routes.get(self.path, ("text/plain", "not found"))
                data = body.encode("utf-8")
                self.send_response(200 if self.path in site.routes else 404)
                self.send_header("Content-Type", f"{kind}; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def static_done(self, started: float) -> float:
        """Seconds from the crawl's call to the last static page's request."""
        return max(t for t, path in self.hits if path in self.static) - started


def run(n_pages: int, with_shells: bool, concurrency: int, out: Path) -> tuple[float, float, dict]:
    site = BenchSite(n_pages, with_shells)
    config = Config(output_dir=out, crawl={"progress": "off", "render_concurrency": concurrency},
                    sources=[SourceConfig(name="bench", start_urls=[site.url], max_pages=n_pages + 10)])
    started = time.perf_counter()
    [report] = crawl(config)
    seconds = time.perf_counter() - started
    static = site.static_done(started)
    site.server.shutdown()
    return seconds, static, {"documents": report.counts["new"], "dropped": report.dropped,
                             "shells": len(site.shells), "static": len(site.static)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=100, help="pages in the site; a fifth are script shells")
    parser.add_argument("--concurrency", type=int, default=2, help="crawl.render_concurrency (default: 2)")
    args = parser.parse_args()
    if shutil.which("chromium") is None:
        print("skipped: no chromium on this machine (apt-get install chromium)")
        return 0
    with tempfile.TemporaryDirectory(prefix="crawl-render-bench-") as tmp:
        static_s, static_last, static = run(args.pages, False, args.concurrency, Path(tmp) / "static")
        print(f"  static part alone: {static_s:6.2f} s, last static page at {static_last:5.2f} s  {static}")
        mixed_s, mixed_last, mixed = run(args.pages, True, args.concurrency, Path(tmp) / "mixed")
        print(f"  mixed site:        {mixed_s:6.2f} s, last static page at {mixed_last:5.2f} s  {mixed}")
    per_page = (mixed_s - static_s) / max(1, mixed["shells"])
    print(f"cost per rendered page: ({mixed_s:.2f} s - {static_s:.2f} s) / {mixed['shells']} = {per_page:.3f} s "
          f"(render_concurrency {args.concurrency})")
    print(f"static pages in the mixed crawl / alone (last static page fetched): {mixed_last:.2f} s / "
          f"{static_last:.2f} s = {mixed_last / static_last:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
