"""Documents written straight into a crawl state, and configs for `build` over it: transform tests need no crawl."""

from __future__ import annotations

import textwrap
from pathlib import Path

from configs import Config, load_config
from crawlers.document import text_hash
from base.state import state_path
from crawlers.store import open_state

FETCHED = "2026-11-01T00:00:00+00:00"


def page(slug: str, text: str, *, title: str | None = None, category: str = "[온라인] 업무 가이드",
         source: str = "guide", language: str | None = "ko") -> dict:
    return {"url": f"http://guide.example.internal/{slug}.html", "title": title or slug, "category": category,
            "source": source, "language": language, "text": text}


def write_pages(output_dir: Path, pages: list[dict], *, replace: bool = True) -> Path:
    """Make exactly `pages` the live documents of the state under `output_dir` (a re-crawl, when it exists)."""
    path = state_path(output_dir)
    db = open_state(path)
    if replace:
        db.execute("UPDATE pages SET live = 0")
    for p in pages:
        db.execute(
            "INSERT INTO pages (url, source, status, content_hash, first_seen, last_seen, fetched_at, title, category,"
            " language, text, live) VALUES (?, ?, 200, ?, ?, ?, ?, ?, ?, ?, ?, 1) ON CONFLICT (url) DO UPDATE SET"
            " text = excluded.text, title = excluded.title, category = excluded.category,"
            " content_hash = excluded.content_hash, live = 1",
            (p["url"], p["source"], text_hash(p["text"]), FETCHED, FETCHED, FETCHED, p["title"], p["category"],
             p["language"], p["text"]))
    db.close()
    return path


def make_config(tmp_path: Path, dataset: str = "", top: str = "") -> Config:
    """A config with output_dir `out` under tmp_path; `dataset` is YAML indented under `dataset:`."""
    body = textwrap.indent(textwrap.dedent(dataset).strip(), "  ")
    text = (f"output_dir: out\n{textwrap.dedent(top).strip()}\nsources:\n  - name: guide\n"
            f"    start_urls: ['http://guide.example.internal/']\n  - name: batch\n"
            f"    start_urls: ['http://guide.example.internal/batch/']\n"
            f"dataset:\n  name: guide\n{body}\n")
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


def korean_paragraph(seed: int, sentences: int = 4) -> str:
    """Distinct, deterministic Korean prose (so near-duplicate checks have real text to compare)."""
    import random

    rng = random.Random(seed)
    words = ["채널", "설정", "타임아웃", "재시도", "요청", "응답", "전문", "서버", "연동", "배치", "파일", "오류", "큐",
             "메시지", "송신", "수신", "시스템", "처리", "등록", "승인", "운영", "장애", "복구", "점검"]
    out = []
    for _ in range(sentences):
        out.append(" ".join(rng.choice(words) + rng.choice(["을", "를", "의", "에", "과", "로", ""])
                            for _ in range(rng.randint(8, 14))) + rng.choice(["합니다.", "입니다.", "하십시오."]))
    return " ".join(out)


def guide_pages(n: int, category: str = "[온라인] 업무 가이드", prefix: str = "page") -> list[dict]:
    return [page(f"{prefix}-{i:03d}", f"# 문서 {prefix} {i}\n\n{korean_paragraph(sum(map(ord, prefix)) * 1000 + i)}\n\n"
                 f"## 설정\n\n{korean_paragraph(i * 7 + len(prefix))}", title=f"문서 {prefix} {i}", category=category)
            for i in range(n)]
