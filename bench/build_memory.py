"""Peak memory of `build` for 100,000 synthetic documents against 10,000: streaming keeps the ratio ≤ 1.5.

Each size is built in a fresh subprocess (peak RSS from resource.getrusage); the synthetic documents are
written straight into a state.sqlite, with duplicates, near-duplicates, PII and long pages mixed in, so every
stage (PII, dedup with its MinHash index, split, report, review.csv) does real work.

    /tmp/venv/bin/python bench/build_memory.py [--small 10000] [--large 100000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TARGET_RATIO = 1.5
CATEGORIES = [f"[온라인] 업무 가이드 {i}" for i in range(8)] + ["[배치] 운영 가이드", "FAQ"]
_SYLLABLES = [chr(0xAC00 + i) for i in range(0, 11172, 13)]
_WORDS = ["채널", "설정", "타임아웃", "재시도", "요청", "응답", "전문", "서버", "연동", "배치", "파일", "오류",
          "timeout", "retry", "channel", "sync", "async", "HTTP", "TCP", "queue"]


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(_WORDS) if rng.random() < 0.5 else "".join(rng.choices(_SYLLABLES, k=rng.randint(1, 3)))
             for _ in range(rng.randint(6, 14))]
    return " ".join(words) + rng.choice(["입니다.", "합니다.", "하십시오.", "."])


def synthetic_page(i: int, rng: random.Random) -> str:
    """A markdown page of 2–8 KB (mean about 4.5 KB of UTF-8, like the bundled sample site's pages): title,
    sections, paragraphs, sometimes code, a table or PII."""
    parts = [f"# 문서 {i}"]
    for s in range(rng.randint(3, 7)):
        parts.append(f"## 섹션 {s}")
        for _ in range(rng.randint(2, 4)):
            parts.append(" ".join(_sentence(rng) for _ in range(rng.randint(2, 5))))
        if rng.random() < 0.2:
            parts.append("```json\n{\"channel\": \"sync\", \"timeout\": %d}\n```" % rng.randint(1, 90))
        if rng.random() < 0.1:
            parts.append("| 항목 | 값 |\n| --- | --- |\n| timeout | %d |" % rng.randint(1, 90))
    if rng.random() < 0.05:
        parts.append(f"문의: user{i}@example.com, 010-{rng.randint(1000, 9999)}-{rng.randint(1000, 9999)}")
    return "\n\n".join(parts)


def write_synthetic_state(path: Path, n: int, seed: int = 0) -> int:
    """Write `n` live documents into a fresh state.sqlite; returns the bytes of text written."""
    from crawlers.document import text_hash
    from crawlers.store import open_state

    rng = random.Random(seed)
    db = open_state(path)
    total = 0
    rows = []
    previous = ""
    for i in range(n):
        roll = rng.random()
        if roll < 0.02 and previous:
            text = previous  # an exact copy under another URL
        elif roll < 0.04 and previous:
            text = previous.replace("섹션 1", "섹션 일", 1) + "\n\n추가 문장입니다."  # a near copy
        else:
            text = synthetic_page(i, rng)
        previous = text
        total += len(text.encode("utf-8"))
        url = f"http://guide.example.internal/{i % 97}/page-{i:06d}.html"
        rows.append((url, "guide" if i % 3 else "batch", 200, text_hash(text), "2026-01-01T00:00:00+00:00",
                     "2026-01-01T00:00:00+00:00", "2026-01-01T00:00:00+00:00", f"문서 {i}",
                     CATEGORIES[i % len(CATEGORIES)], "ko", text))
        if len(rows) >= 5000:
            _insert(db, rows)
    _insert(db, rows)
    db.close()
    return total


def _insert(db, rows: list) -> None:
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO pages (url, source, status, content_hash, first_seen, last_seen, fetched_at, title, category,"
        " language, text, live) VALUES (?,?,?,?,?,?,?,?,?,?,?,1)", rows)
    db.execute("COMMIT")
    rows.clear()


def write_config(directory: Path) -> Path:
    config = directory / "config.yaml"
    config.write_text(
        "output_dir: out\nsources:\n  - name: guide\n    start_urls: ['http://guide.example.internal/']\n"
        "  - name: batch\n    start_urls: ['http://guide.example.internal/batch/']\n"
        "dataset:\n  name: bench\n  max_tokens_per_example: 4096\n  pii: redact\n",
        encoding="utf-8",
    )
    return config


def build_once(config: Path) -> dict:
    """In this (fresh) process: build once; peak RSS in MiB and seconds."""
    from configs import load_config
    from transforms.build import build

    start = time.perf_counter()
    result = build(load_config(config))
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"peak_mib": round(peak, 1), "seconds": round(seconds, 1), "examples": result.manifest.counts["examples"]}


def measure(n: int, keep: Path | None) -> dict:
    if keep is None:
        with tempfile.TemporaryDirectory(prefix=f"bench-mem-{n}-") as directory:
            return build_in(Path(directory), n)
    return build_in(Path(tempfile.mkdtemp(prefix=f"bench-mem-{n}-", dir=keep)), n)


def build_in(directory: Path, n: int) -> dict:
    (directory / "out").mkdir()
    write_synthetic_state(directory / "out" / "state.sqlite", n)
    config = write_config(directory)
    out = subprocess.run([sys.executable, __file__, "--child", str(config)], capture_output=True, text=True,
                         cwd=directory, check=False)
    if out.returncode != 0:
        raise SystemExit(f"build of {n} documents failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--keep", type=Path, help="folder to keep the states in (default: a temp dir, removed)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(build_once(args.child)))
        return 0
    small, large = measure(args.small, args.keep), measure(args.large, args.keep)
    ratio = large["peak_mib"] / small["peak_mib"]
    for n, run in ((args.small, small), (args.large, large)):
        print(f"{n:>7,} documents: peak {run['peak_mib']:,.1f} MiB, {run['seconds']} s, {run['examples']:,} examples")
    print(f"ratio {ratio:.2f} (target ≤ {TARGET_RATIO}) {'OK' if ratio <= TARGET_RATIO else 'MISSED'}")
    return 0 if ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
