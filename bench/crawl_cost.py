"""What crawl2tune's crawl costs over a bare Scrapy crawl of the same site.

Builds a local site of several hundred real-size pages (the news articles of the article-extraction
benchmark, each given a navigation block linking it to other pages), serves it on 127.0.0.1, and times:

- baseline: a bare Scrapy spider that only follows the same links (same LinkExtractor rules), with the same
  Scrapy settings (ours: robots.txt, AutoThrottle, concurrency, JOBDIR, page cap, depth);
- crawl2tune: `crawlers.crawl.crawl` of the same site: decoding, main-content extraction, state writes.

Both run the way `crawl` runs, in a freshly spawned process, and are timed from the call to the last
report (process start included). Each is run `--repeat` times, alternating, and the best time counts.

    /tmp/venv/bin/python bench/crawl_cost.py [--pages 543] [--repeat 2] [--workers N]
"""

from __future__ import annotations

import argparse
import gzip
import multiprocessing
import re
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import scrapy  # noqa: E402
from scrapy.crawler import CrawlerProcess  # noqa: E402
from scrapy.linkextractors import LinkExtractor  # noqa: E402

from configs import Config, SourceConfig  # noqa: E402
from crawlers.crawl import crawl, project_settings, spider_for  # noqa: E402
from crawlers.local_site import serve_folder  # noqa: E402

BENCH_HTML = REPO.parent / "shared" / "bench-data" / "article-extraction-benchmark" / "html"
MISSING_DATA = (f"skipped: no benchmark pages in {BENCH_HTML}; get them from "
                "https://github.com/scrapinghub/article-extraction-benchmark (html/*.html.gz) and put them there")
TARGET_RATIO = 1.5
_BODY = re.compile(rb"<body[^>]*>", re.IGNORECASE)


def build_site(folder: Path, n_pages: int) -> int:
    """Write `n_pages` pages under `folder/docs/`; returns the total bytes. Page i links to i+1..i+3 and to
    2i+1, 2i+2, so every page is reachable within ~log2(n) clicks of the index."""
    sources = sorted(BENCH_HTML.glob("*.html.gz"))
    if not sources:
        raise SystemExit(f"no benchmark pages in {BENCH_HTML}")
    bodies = [gzip.decompress(p.read_bytes()) for p in sources]
    docs = folder / "docs"
    docs.mkdir(parents=True)
    total = 0
    for i in range(n_pages):
        targets = sorted({(i + k) % n_pages for k in (1, 2, 3)} | {t for t in (2 * i + 1, 2 * i + 2) if t < n_pages})
        nav = "".join(f'<li><a href="/docs/page-{t}.html">Page {t}</a></li>' for t in targets)
        block = f'<nav class="docs-nav"><ul>{nav}</ul></nav>'.encode()
        body = bodies[i % len(bodies)]
        match = _BODY.search(body)
        page = body[: match.end()] + block + body[match.end():] if match else block + body
        (docs / f"page-{i}.html").write_bytes(page)
        total += len(page)
    index = "".join(f'<li><a href="/docs/page-{i}.html">Page {i}</a></li>' for i in range(min(n_pages, 8)))
    (docs / "index.html").write_text(f"<html><body><nav><ul>{index}</ul></nav></body></html>", encoding="utf-8")
    return total


def site_config(base_url: str, output_dir: Path, n_pages: int, workers: int | None) -> Config:
    return Config(
        output_dir=output_dir,
        crawl={"progress": "off", **({"extract_workers": workers} if workers is not None else {})},
        sources=[SourceConfig(name="bench", start_urls=[f"{base_url}/docs/index.html"],
                              include=[r"/docs/page-\d+\.html$"], max_pages=n_pages + 10)],
    )


class BareSpider(scrapy.Spider):
    """Follows the links crawl2tune would follow, and does nothing else."""

    name = "bare"

    def __init__(self, source: SourceConfig, **kwargs: Any):
        super().__init__(**kwargs)
        self.start_urls = list(source.start_urls)
        self.allowed_domains = source.domains
        self.links = LinkExtractor(allow=source.include, deny=source.exclude)

    def parse(self, response: scrapy.http.Response, **kwargs: Any) -> Iterator[scrapy.Request]:
        yield from response.follow_all(self.links.extract_links(response), callback=self.parse)


def _bare_crawl(config: Config, jobdir: str) -> dict[str, Any]:
    source = config.sources[0]
    custom = dict(spider_for(source, Path(jobdir)).custom_settings)
    process = CrawlerProcess(project_settings(config))
    crawler = process.create_crawler(type("BareBench", (BareSpider,), {"custom_settings": custom}))
    process.crawl(crawler, source=source)
    process.start()
    return crawler.stats.get_stats()


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_bare(config: Config, jobdir: Path) -> tuple[float, float, dict[str, Any]]:
    started, cpu = time.perf_counter(), children_cpu()
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        stats = pool.submit(_bare_crawl, config, str(jobdir)).result()
    return time.perf_counter() - started, children_cpu() - cpu, stats


def run_crawl2tune(config: Config) -> tuple[float, float, Any]:
    started, cpu = time.perf_counter(), children_cpu()
    report = crawl(config)[0]
    return time.perf_counter() - started, children_cpu() - cpu, report


@contextmanager
def served_site(n_pages: int) -> Iterator[tuple[str, int, Path]]:
    with tempfile.TemporaryDirectory(prefix="crawl-bench-") as tmp:
        root = Path(tmp)
        total = build_site(root / "site", n_pages)
        with serve_folder(root / "site") as base_url:
            yield base_url, total, root


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=543, help="pages in the generated site (default: 543)")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each crawl; the best counts (default: 2)")
    parser.add_argument("--workers", type=int, default=None, help="crawl.extract_workers (default: the config's)")
    args = parser.parse_args()
    if not any(BENCH_HTML.glob("*.html.gz")):
        print(MISSING_DATA)
        return 0

    with served_site(args.pages) as (base_url, total, root):
        print(f"site: {args.pages} pages, {total / 1e6:.1f} MB of HTML, served at {base_url}")
        bare_times, ours_times = [], []
        for run in range(args.repeat):
            config = site_config(base_url, root / f"out-{run}", args.pages, args.workers)
            seconds, cpu, stats = run_bare(config, root / f"bare-job-{run}")
            bare_times.append(seconds)
            print(f"  bare scrapy   run {run + 1}: {seconds:6.2f} s, cpu {cpu:5.1f} s  ({stats.get('response_received_count', 0)} "
                  f"responses, crawl {stats.get('elapsed_time_seconds', 0):.2f} s)")
            seconds, cpu, report = run_crawl2tune(config)
            ours_times.append(seconds)
            print(f"  crawl2tune    run {run + 1}: {seconds:6.2f} s, cpu {cpu:5.1f} s  ({sum(report.pages_by_status.values())} "
                  f"responses, crawl {report.elapsed_seconds:.2f} s, {report.counts['new']} documents, "
                  f"dropped {report.dropped})")
        bare, ours = min(bare_times), min(ours_times)
        ratio = ours / bare
        verdict = "ok" if ratio <= TARGET_RATIO else "over target"
        print(f"crawl+extract / bare crawl wall time: {ours:.2f} s / {bare:.2f} s = {ratio:.2f}x "
              f"(target <= {TARGET_RATIO}x: {verdict})")
    return 0 if ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
