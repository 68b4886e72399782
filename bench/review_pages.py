"""Server time of the review app's examples page for a 50,000-example version, for each filter, against a
baseline that reads the version's files on every request (what a page without the index would do).

A synthetic version (metadata.jsonl, train/test.jsonl, documents.jsonl, manifest.json) is written straight into
a temp output_dir; the app is called in-process through ASGI, so the figure is server time, no network. The
index is built on the first request and timed separately. Target: every filter ≤ 300 ms.

    python bench/review_pages.py [--examples 50000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TARGET_MS = 300
CATEGORIES = [f"[온라인] 업무 가이드 {i}" for i in range(8)] + ["[배치] 운영 가이드", "FAQ"]
WORDS = ["채널", "설정", "타임아웃", "재시도", "요청", "응답", "전문", "서버", "연동", "배치", "timeout", "retry"]


def write_version(root: Path, n: int) -> Path:
    rng = random.Random(7)
    version = root / "datasets" / "bench" / "v0001"
    version.mkdir(parents=True)
    lines = {"train": [], "test": []}
    with open(version / "metadata.jsonl", "w", encoding="utf-8") as meta, \
            open(version / "documents.jsonl", "w", encoding="utf-8") as docs:
        for i in range(n):
            split = "test" if i % 10 == 0 else "train"
            text = " ".join(rng.choice(WORDS) for _ in range(60))
            url = f"http://guide.example.internal/page-{i // 3}.html"
            if i % 3 == 0:
                docs.write(json.dumps({"url": url, "title": f"문서 {i // 3}", "text": f"# 문서\n\n{text}",
                                       "document_id": f"d{i // 3}"}, ensure_ascii=False) + "\n")
            lines[split].append(json.dumps({"messages": [
                {"role": "system", "content": "도우미"}, {"role": "user", "content": f"질문 {i} {text[:40]}"},
                {"role": "assistant", "content": text}]}, ensure_ascii=False))
            meta.write(json.dumps({
                "example_id": f"e{i:06d}", "document_id": f"d{i // 3}", "url": url, "source": ["guide", "batch"][i % 2],
                "category": CATEGORIES[i % len(CATEGORIES)], "title": f"문서 {i // 3}", "section": None,
                "tokens": 120, "answer_tokens": 90, "split": split, "line": len(lines[split]),
                "style": ["short", "steps", "faq"][i % 3]}, ensure_ascii=False) + "\n")
    for split, rows in lines.items():
        (version / f"{split}.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (version / "manifest.json").write_text(json.dumps({"dataset": "bench", "version": "v0001",
                                                       "counts": {"examples": n}}), encoding="utf-8")
    return version


async def call(app, path: str, query: str) -> tuple[int, bytes]:
    """One GET through the ASGI app; returns status and body."""
    sent, body = {"status": 0}, []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        if message["type"] == "http.response.start":
            sent["status"] = message["status"]
        elif message["type"] == "http.response.body":
            body.append(message.get("body", b""))

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": query.encode(), "headers": [],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "root_path": ""}
    await app(scope, receive, send)
    return sent["status"], b"".join(body)


def baseline(version: Path, filters: dict[str, str]) -> int:
    """The page without the index: read every metadata and split line, filter in Python, slice a page."""
    metas = [json.loads(line) for line in open(version / "metadata.jsonl", encoding="utf-8")]
    splits = {s: open(version / f"{s}.jsonl", encoding="utf-8").read().splitlines() for s in ("train", "test")}
    query = filters.get("q")
    kept = []
    for meta in metas:
        if any(meta.get(k) != v for k, v in filters.items() if k != "q"):
            continue
        record = json.loads(splits[meta["split"]][meta["line"] - 1])
        if query and query not in record["messages"][-1]["content"]:
            continue
        kept.append((meta, record))
    return len(kept[:50])


def timed(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from configs import load_config
    from crawlers.store import state_path
    from transforms.decisions import store_decisions
    from transforms.review_app.app import build_app

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        version = write_version(out, args.examples)
        config_file = Path(tmp) / "config.yaml"
        config_file.write_text(f"output_dir: {out}\nsources:\n  - name: guide\n    start_urls: "
                               "['http://guide.example.internal/']\ndataset:\n  name: bench\n", encoding="utf-8")
        config = load_config(config_file)
        state = state_path(out)
        store_decisions(state, "bench", [(f"e{i:06d}", "exclude", None, None) for i in range(0, args.examples, 7)],
                        "bench")
        app = build_app(config, state, out / "review-index")
        start = time.perf_counter()
        status, _ = asyncio.run(call(app, "/v/v0001", ""))
        assert status == 200
        print(f"index built on the first request: {(time.perf_counter() - start) * 1000:.0f} ms "
              f"({args.examples} examples)")
        cases = {"no filter": {}, "split": {"split": "test"}, "category": {"category": CATEGORIES[3]},
                 "source": {"source": "batch"}, "style": {"style": "steps"}, "decision": {"decision": "exclude"},
                 "search": {"q": "타임아웃"}, "page 900": {"page": "900"},
                 "category+search": {"category": CATEGORIES[3], "q": "retry"}}
        worst, ratios = 0.0, []
        for name, filters in cases.items():
            query = urlencode(filters)
            app_ms = timed(lambda: asyncio.run(call(app, "/v/v0001", query)), args.repeat)
            plain = {k: v for k, v in filters.items() if k not in ("page", "decision")}
            base_ms = timed(lambda: baseline(version, plain), max(1, args.repeat // 2))
            worst = max(worst, app_ms)
            ratios.append(base_ms / app_ms)
            print(f"{name:17s} app {app_ms:7.1f} ms   baseline (read files per request) {base_ms:7.1f} ms   "
                  f"ratio {base_ms / app_ms:5.1f}x")
        verdict = "ok" if worst <= TARGET_MS else "over target"
        print(f"slowest filter {worst:.1f} ms (target ≤ {TARGET_MS} ms: {verdict}); "
              f"baseline/app ratio min {min(ratios):.1f}x, median {statistics.median(ratios):.1f}x")
        return 0 if worst <= TARGET_MS else 1


if __name__ == "__main__":
    raise SystemExit(main())
