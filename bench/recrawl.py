"""What re-crawling an unchanged site costs next to the first crawl of it.

Builds the same local site as `bench/crawl_cost.py` (several hundred real-size pages), serves it on 127.0.0.1
with ETag validators, crawls it into an empty state, then crawls it again unchanged: the second crawl sends
conditional requests, gets 304s, and neither downloads nor extracts the pages again. Prints bytes and wall
time (from the call to the report, process start included) of both, and their ratios; each pair runs
`--repeat` times into a fresh state and the best time of each kind counts.

    /tmp/venv/bin/python bench/recrawl.py [--pages 543] [--repeat 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from crawl_cost import served_site, site_config  # noqa: E402

from crawlers.crawl import crawl  # noqa: E402

TARGET_BYTES = 0.10
TARGET_TIME = 0.30


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=543, help="pages in the generated site (default: 543)")
    parser.add_argument("--repeat", type=int, default=2,
                        help="first crawl + re-crawl pairs, each into a fresh state; the best of each counts (default: 2)")
    parser.add_argument("--workers", type=int, default=None, help="crawl.extract_workers (default: the config's)")
    args = parser.parse_args()

    with served_site(args.pages) as (base_url, total, root):
        print(f"site: {args.pages} pages, {total / 1e6:.1f} MB of HTML, served at {base_url}")
        runs: dict[str, list[tuple[float, Any]]] = {"first crawl": [], "re-crawl": []}
        for run in range(args.repeat):
            config = site_config(base_url, root / f"out-{run}", args.pages, args.workers)
            for name, results in runs.items():
                started = time.perf_counter()
                report = crawl(config)[0]
                seconds = time.perf_counter() - started
                results.append((seconds, report))
                print(f"  {name:<12} {seconds:6.2f} s (crawl {report.elapsed_seconds:5.2f} s), "
                      f"{report.bytes_downloaded:>12,} bytes, responses {report.pages_by_status}, "
                      f"conditional requests {report.conditional_requests}, changes {report.counts}")
        (first_s, first), (again_s, again) = (min(results, key=lambda r: r[0]) for results in runs.values())
        byte_ratio = again.bytes_downloaded / first.bytes_downloaded
        time_ratio = again_s / first_s
        crawl_ratio = again.elapsed_seconds / first.elapsed_seconds
        ok_bytes, ok_time = byte_ratio <= TARGET_BYTES, time_ratio <= TARGET_TIME
        print(f"re-crawl / first crawl bytes: {byte_ratio:.3f} (target <= {TARGET_BYTES}: "
              f"{'ok' if ok_bytes else 'over target'})")
        print(f"re-crawl / first crawl wall time: {time_ratio:.3f} (target <= {TARGET_TIME}: "
              f"{'ok' if ok_time else 'over target'}); crawl time alone: {crawl_ratio:.3f}")
    return 0 if ok_bytes and ok_time else 1


if __name__ == "__main__":
    sys.exit(main())
