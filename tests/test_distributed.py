"""Workers crawling through a shared Redis frontier fetch each page once overall and leave the same documents
as a single-process crawl, in one shared output_dir or in one per worker ("machine"). Needs a real redis-server on 127.0.0.1: installed with apt-get when missing (as
root), started on a free port with its own temp dir; the tests are skipped, saying why, only where that fails."""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from ops_site import config, docs_site, held, pipeline, runs, wait_for
from pipeline import main
from sites import Site

redis = pytest.importorskip("redis")


def _install_redis_server() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    if not shutil.which("apt-get") or os.geteuid() != 0:
        pytest.skip("redis-server is not on PATH and cannot be installed here (needs root and apt-get); "
                    "install it (apt-get install redis-server) to run the distributed-crawl tests")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "redis-server"]
    result = subprocess.run(install, env=env, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:  # a fresh machine has no package lists yet
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, text=True, timeout=600)
        result = subprocess.run(install, env=env, capture_output=True, text=True, timeout=600)
    found = shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)
    if not found:
        tail = " ".join((result.stderr or result.stdout).split()[-30:])
        pytest.skip(f"redis-server could not be installed with apt-get: {tail}")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    binary = _install_redis_server()
    folder = tmp_path_factory.mktemp("redis")
    port = _free_port()
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(folder), "--logfile", str(folder / "redis.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except redis.exceptions.ConnectionError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                pytest.skip(f"redis-server did not start on 127.0.0.1:{port}; see {folder / 'redis.log'}")
            time.sleep(0.05)
    yield url
    server.terminate()
    server.wait(timeout=10)


def documents(output_dir: Path) -> list[tuple]:
    """The stored pages as a crawl leaves them, without the timestamps."""
    with sqlite3.connect(output_dir / "state.sqlite") as db:
        return db.execute(
            "SELECT url, source, live, status, reason, title, category, language, text, content_hash, etag, "
            "fetched_url, links FROM pages ORDER BY url"
        ).fetchall()


FIELDS = ("url", "source", "live", "status", "reason", "title", "category", "language", "text", "content_hash",
          "etag", "fetched_url", "links")


def differences(got: list[tuple], want: list[tuple]) -> list[str]:
    """Where two `documents()` differ, one line per page and field, for an assertion's message."""
    mine, theirs = ({row[0]: row for row in rows} for rows in (got, want))
    lines = [f"{url}: {'missing' if url not in mine else 'extra'}" for url in sorted(set(mine) ^ set(theirs))]
    for url in sorted(set(mine) & set(theirs)):
        for name, a, b in zip(FIELDS, mine[url], theirs[url]):
            if a != b:
                lines.append(f"{url} {name}: {str(a)[:80]!r} != {str(b)[:80]!r}")
    return lines


def test_two_workers_fetch_each_page_once_and_store_the_same_documents_as_one_process(tmp_path, redis_url):
    site_pages = docs_site(10, 10)  # 111 pages, most linked from 10 others
    with Site(site_pages) as site:
        (tmp_path / "single").mkdir()
        single = config(tmp_path / "single", site.base)
        assert main(["crawl", "--config", str(single)]) == 0
        reference = documents(tmp_path / "single" / "out")
        assert sum(1 for row in reference if row[2]) == 111

        site.hits.clear()
        for page in site.pages.values():
            page.delay = 0.01  # a little latency, as a real server has, so both workers get work
        (tmp_path / "shared").mkdir()
        shared = config(tmp_path / "shared", site.base, crawl=f'  redis_url: "{redis_url}"')
        workers = [pipeline(shared, "crawl", "--worker") for _ in range(2)]
        results = [worker.communicate(timeout=240) for worker in workers]
        for worker, (out, err) in zip(workers, results):
            assert worker.returncode == 0, err

        fetched = Counter(hit.path for hit in site.hits if hit.path != "/robots.txt")
        assert set(fetched) == set(site_pages)
        assert max(fetched.values()) == 1, [path for path, n in fetched.items() if n > 1]  # once overall

    state = documents(tmp_path / "shared" / "out")
    assert state == reference, differences(state, reference)
    rows = runs(tmp_path / "shared" / "out")
    assert [(r["command"], r["status"]) for r in rows] == [("worker", "ok"), ("worker", "ok")]
    counts = [r["counts"]["crawl"]["docs"] for r in rows]
    fetched = [c["fetched"] for c in counts]
    assert sum(fetched) == 111 and min(fetched) > 0, fetched  # both took part
    # one state: each page stored once, by whichever worker took it from the stream
    assert sum(c["ingested"] for c in counts) == sum(c["new"] for c in counts) == 111, counts
    assert redis.Redis.from_url(redis_url).keys("crawl2tune:*") == []  # the crawl ended: its keys are gone


SINGLE = "crawl2tune-single-process"  # the user agent of the reference crawl, told apart in the request log


def _workers(configs: list[Path], site: Site, redis_url: str, prefix: str, single: Path | None = None) -> Counter:
    """One `crawl --worker` per config, crawling together (the start page waits until all have joined the crawl,
    so none crawls the site alone), and alongside them the single-process crawl of `single`; each must succeed.
    Returns how often the workers requested each page."""
    client = redis.Redis.from_url(redis_url)
    site.hits.clear()

    def joined() -> bool:
        return client.scard(f"{prefix}:docs:members") == len(configs)

    with held(site, "/", until=joined):
        crawls = [pipeline(cfg, "crawl", "--worker") for cfg in configs]
        if single:  # started once the workers are in, so the held start page does not keep it waiting
            wait_for(joined, what="every worker joining the crawl")
            crawls.append(pipeline(single, "crawl"))
        results = [process.communicate(timeout=240) for process in crawls]
    for process, (out, err) in zip(crawls, results):
        assert process.returncode == 0, err
    return Counter(hit.path for hit in site.hits
                   if hit.path != "/robots.txt" and hit.headers.get("User-Agent") != SINGLE)


def _machines(tmp_path: Path, site: Site, redis_url: str, prefix: str, source: str = "") -> list[Path]:
    """A config per "machine" (its own folder and output_dir), all on one Redis."""
    configs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir(exist_ok=True)
        configs.append(config(tmp_path / name, site.base, source=source,
                              crawl=f'  redis_url: "{redis_url}"\n  redis_prefix: "{prefix}"'))
    return configs


def _single(tmp_path: Path, site: Site) -> Path:
    """The config of a single-process crawl of `site`, for reference."""
    (tmp_path / "single").mkdir(exist_ok=True)
    return config(tmp_path / "single", site.base, crawl=f'  user_agent: "{SINGLE}"')


def test_workers_with_their_own_output_dirs_fetch_each_page_once_and_each_state_holds_every_document(
        tmp_path, redis_url, capsys):
    site_pages = docs_site(10, 10)  # 111 pages
    with Site(site_pages) as site:
        for page in site_pages.values():
            page.delay = 0.01  # a little latency, as a real server has, so both workers get work
        prefix = "machines"
        machines = _machines(tmp_path, site, redis_url, prefix)
        fetched = _workers(machines, site, redis_url, prefix, single=_single(tmp_path, site))
        assert set(fetched) == set(site_pages)
        assert max(fetched.values()) == 1, [path for path, n in fetched.items() if n > 1]  # once overall

    reference = documents(tmp_path / "single" / "out")
    assert sum(1 for row in reference if row[2]) == 111
    for machine in machines:
        state = documents(machine.parent / "out")
        assert state == reference, differences(state, reference)  # every page, whoever fetched it
    counts = [[r["counts"]["crawl"]["docs"] for r in runs(m.parent / "out")] for m in machines]
    assert [len(c) for c in counts] == [1, 1], counts
    counts = [c[0] for c in counts]
    assert [(c["new"], c["ingested"]) for c in counts] == [(111, 111), (111, 111)], counts
    assert sum(c["fetched"] for c in counts) == 111 and min(c["fetched"] for c in counts) > 0, counts
    assert redis.Redis.from_url(redis_url).keys("machines:*") == []
    capsys.readouterr()
    assert main(["runs", "show", "1", "--config", str(machines[0])]) == 0
    assert (f"new 111 · changed 0 · unchanged 0 · removed 0 (finished); this worker fetched {counts[0]['fetched']} "
            "pages, its state took in 111 of every worker's") in capsys.readouterr().out


def test_workers_with_their_own_output_dirs_recrawl_and_each_retires_a_page_no_longer_linked(tmp_path, redis_url):
    with Site(docs_site(3, 4)) as site:
        single = _single(tmp_path, site)
        prefix = "recrawl"
        machines = _machines(tmp_path, site, redis_url, prefix)
        gone = "/s2/p3.html"
        for crawl in (1, 2):
            if crawl == 2:
                for path in ("/s2/", "/s2/p0.html", "/s2/p1.html", "/s2/p2.html"):  # nothing links to it any more
                    page = site.pages[path]
                    page.body = page.body.replace(f'href="{gone}"', 'href="/"')
            fetched = _workers(machines, site, redis_url, prefix, single=single)
            assert len(fetched) == (16 if crawl == 1 else 15) and max(fetched.values()) == 1, fetched
            reference = documents(tmp_path / "single" / "out")
            for machine in machines:
                state = documents(machine.parent / "out")
                assert state == reference, (crawl, differences(state, reference))

    live = {row[0] for row in reference if row[2]}
    assert len(live) == 15 and site.base + gone not in live
    assert [row[4] for row in reference if row[0] == site.base + gone] == ["unreached"]
    for machine in machines:
        assert runs(machine.parent / "out")[-1]["counts"]["crawl"]["docs"]["removed"] == 1


def test_max_pages_counts_the_pages_of_every_worker_and_a_cut_crawl_retires_nothing(tmp_path, redis_url):
    site_pages = docs_site(10, 10)  # 111 pages
    with Site(site_pages) as site:
        prefix = "limit"
        _workers(_machines(tmp_path, site, redis_url, prefix), site, redis_url, prefix)  # a complete crawl first

        for page in site_pages.values():
            # slow enough that both workers are still fetching when the count is reached, even on a loaded
            # machine where the second worker's 0.25 s heartbeat runs late
            page.delay = 1.0
        machines = _machines(tmp_path, site, redis_url, prefix, source="    max_pages: 50\n")
        pages = list(_workers(machines, site, redis_url, prefix).elements())

    # 50 responses overall, the two robots.txt included, plus what each worker had in flight (at most
    # Scrapy's CONCURRENT_REQUESTS = 16); counted per worker it would be about 2 × 49
    assert 48 <= len(pages) <= 50 + 2 * 16, len(pages)
    assert len(set(pages)) == len(pages)
    counts = [runs(m.parent / "out")[-1]["counts"]["crawl"]["docs"] for m in machines]
    assert [c["finish_reason"] for c in counts] == ["closespider_pagecount"] * 2, counts
    assert min(c["fetched"] for c in counts) > 0, counts  # both took part
    assert [c["removed"] for c in counts] == [0, 0], counts  # a cut crawl retires nothing
    states = [documents(m.parent / "out") for m in machines]
    assert [r[:5] for r in states[0]] == [r[:5] for r in states[1]]
    assert states[0] == states[1] and sum(1 for row in states[0] if row[2]) == 111
    assert redis.Redis.from_url(redis_url).keys("limit:*") == []


def test_workers_recrawl_after_a_finished_crawl_and_retire_pages_no_longer_linked(tmp_path, redis_url):
    with Site(docs_site(3, 4)) as site:
        cfg = config(tmp_path, site.base, crawl=f'  redis_url: "{redis_url}"\n  redis_prefix: "retire-test"')
        assert main(["crawl", "--worker", "--config", str(cfg)]) == 0
        first = {row[0] for row in documents(tmp_path / "out") if row[2]}
        assert len(first) == 16

        gone = "/s2/p3.html"
        for path in ("/s2/", "/s2/p0.html", "/s2/p1.html", "/s2/p2.html"):  # nothing links to it any more
            page = site.pages[path]
            page.body = page.body.replace(f'href="{gone}"', 'href="/"')
        site.hits.clear()
        assert main(["crawl", "--worker", "--config", str(cfg)]) == 0  # the first crawl's keys were cleared
        assert len([h for h in site.hits if h.path != "/robots.txt"]) == 15
    second = {row[0] for row in documents(tmp_path / "out") if row[2]}
    assert first - second == {site.base + gone}


def test_worker_without_a_redis_url_says_what_to_add(tmp_path, capsys):
    cfg = config(tmp_path, "http://127.0.0.1:9")
    assert main(["crawl", "--worker", "--config", str(cfg)]) == 1
    assert "crawl --worker needs crawl.redis_url (e.g. redis://127.0.0.1:6379/0)" in capsys.readouterr().err
