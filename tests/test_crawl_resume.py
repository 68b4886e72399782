"""An interrupted crawl (Ctrl-C reaches the whole process group) keeps what it fetched and the previous dataset,
and the same command continues without fetching those pages again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sites import Page, Site, distinct_prose, html_page, write_config

PIPELINE = Path(__file__).resolve().parents[1] / "pipeline.py"
N_PAGES = 30


def pages(version: int, delay: float = 0.0) -> dict[str, Page]:
    site = {"/": Page(html_page("Home", distinct_prose(1000 + version), [f"/p{i}.html" for i in range(N_PAGES)]))}
    for i in range(N_PAGES):
        site[f"/p{i}.html"] = Page(html_page(f"Page {i} v{version}", distinct_prose(100 * version + i), ["/"]),
                                   delay=delay)
    return site


def pipeline(config: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(PIPELINE), *args, "--config", str(config)], cwd=config.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def test_interrupted_run_keeps_the_dataset_and_the_next_run_continues_where_it_stopped(tmp_path):
    with Site(pages(1)) as site:
        config = write_config(
            tmp_path, f'  - name: docs\n    start_urls: ["{site.url("/")}"]',
            crawl="  concurrency_per_domain: 1\n  progress: log\n  progress_interval_seconds: 0.2",
            extra="dataset: {test_fraction: 0.2}",
        )
        first = pipeline(config, "run")
        out, err = first.communicate(timeout=120)
        assert first.returncode == 0, err
        datasets = tmp_path / "out" / "datasets" / "guide"
        assert (datasets / "latest").resolve().name == "v0001"
        train_before = (datasets / "v0001" / "train.jsonl").read_bytes()

        site.pages.update(pages(2, delay=0.05))
        site.hits.clear()
        interrupted = pipeline(config, "run")
        while len(site.hits) < 8:
            time.sleep(0.02)
        os.killpg(interrupted.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        out, err = interrupted.communicate(timeout=60)
        assert interrupted.returncode == 130, err
        assert "(stopped: shutdown)" in out and "run the same command again to continue" in out
        assert "crawl docs: " in err and " queued · " in err  # plain progress lines, not a terminal
        assert sorted(p.name for p in datasets.iterdir()) == ["latest", "v0001"]
        assert (datasets / "v0001" / "train.jsonl").read_bytes() == train_before
        assert (tmp_path / "out" / "jobs" / "docs" / "requests.seen").exists()
        fetched = {hit.path for hit in site.hits if hit.status in (200, 304) and hit.path != "/robots.txt"}
        assert 8 <= len(fetched) < N_PAGES

        site.hits.clear()
        resumed = pipeline(config, "crawl")
        out, err = resumed.communicate(timeout=120)
        assert resumed.returncode == 0, err
        again = {hit.path for hit in site.hits if hit.path != "/robots.txt"}
        assert not again & fetched
        assert again | fetched == {"/", *(f"/p{i}.html" for i in range(N_PAGES))}
        assert f"changed {N_PAGES + 1} · unchanged 0 · removed 0 (resumed)" in out
        assert not (tmp_path / "out" / "jobs" / "docs").exists()
