"""Score crawlers.extract.extract() on the Scrapinghub article-extraction benchmark.

Scoring is the benchmark's own: word 4-gram multisets per page, TP/FP/FN normalised per page,
precision and recall averaged over pages, F1 their harmonic mean. Plain ``trafilatura.extract``
runs in the same process as a baseline.

    /tmp/venv/bin/python bench/extraction.py [--data DIR] [--worst N]
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "bench-data" / "article-extraction-benchmark"
PUBLISHED_TRAFILATURA_F1 = 0.958  # trafilatura 2.0.0 on this benchmark, as published
TARGET_F1 = 0.95

_TOKEN = re.compile(r"\w+")


@dataclass(frozen=True)
class Page:
    id: str
    url: str
    html: str
    truth: str


@dataclass(frozen=True)
class PageScore:
    tp: float
    fp: float
    fn: float

    @property
    def precision(self) -> float:
        if self.fp == self.fn == 0:
            return 1.0
        if self.tp == self.fp == 0:
            return 0.0
        return self.tp / (self.tp + self.fp)

    @property
    def recall(self) -> float:
        if self.fp == self.fn == 0:
            return 1.0
        if self.tp == self.fn == 0:
            return 0.0
        return self.tp / (self.tp + self.fn)


@dataclass(frozen=True)
class Result:
    name: str
    precision: float
    recall: float
    f1: float
    seconds_per_page: float
    pages: dict[str, PageScore]


def load_pages(data_dir: Path) -> list[Page]:
    truth_path = data_dir / "ground-truth.json"
    if not truth_path.is_file():
        raise SystemExit(f"benchmark data not found: expected {truth_path} (pass --data DIR)")
    truth = json.loads(truth_path.read_text(encoding="utf-8"))
    pages = []
    for page_id in sorted(truth):
        with gzip.open(data_dir / "html" / f"{page_id}.html.gz", "rt", encoding="utf-8") as f:
            html = f.read()
        pages.append(Page(page_id, truth[page_id].get("url", ""), html, truth[page_id].get("articleBody") or ""))
    return pages


def shingles(text: str, n: int = 4) -> Counter:
    tokens = _TOKEN.findall(text or "")
    return Counter(tuple(tokens[i : i + n]) for i in range(max(1, len(tokens) - n + 1)) if tokens[i : i + n])


def score_page(truth: str, predicted: str) -> PageScore:
    expected, got = shingles(truth), shingles(predicted)
    tp = sum((expected & got).values())
    fp = sum((got - expected).values())
    fn = sum((expected - got).values())
    total = tp + fp + fn
    if total == 0:
        return PageScore(0.0, 0.0, 0.0)
    return PageScore(tp / total, fp / total, fn / total)


def evaluate(name: str, extractor: Callable[[Page], str | None], pages: list[Page]) -> Result:
    """Run ``extractor`` on every page and score it; pages without predicted (or expected) shingles
    are left out of the precision (recall) mean, exactly as the benchmark's evaluate.py does."""
    outputs: dict[str, str] = {}
    started = time.perf_counter()
    for page in pages:
        outputs[page.id] = extractor(page) or ""
    elapsed = time.perf_counter() - started
    scores = {page.id: score_page(page.truth, outputs[page.id]) for page in pages}
    precision = statistics.mean(s.precision for s in scores.values() if s.tp + s.fp > 0)
    recall = statistics.mean(s.recall for s in scores.values() if s.tp + s.fn > 0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Result(name, precision, recall, f1, elapsed / len(pages), scores)


def report(result: Result) -> str:
    return (
        f"{result.name:<28} P={result.precision:.4f}  R={result.recall:.4f}  F1={result.f1:.4f}  "
        f"F1/published={result.f1 / PUBLISHED_TRAFILATURA_F1:.3f}  {result.seconds_per_page * 1000:.1f} ms/page"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"benchmark folder (default: {DEFAULT_DATA})")
    parser.add_argument("--worst", type=int, default=0, metavar="N", help="also list the N lowest-scoring pages")
    parser.add_argument("--no-baseline", action="store_true", help="skip the plain trafilatura baseline")
    args = parser.parse_args(argv)

    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))  # run as a script from a checkout without installing the package
    import trafilatura

    from crawlers.extract import extract

    if not (args.data / "ground-truth.json").is_file():
        print(f"skipped: benchmark data not found in {args.data}; get ground-truth.json and html/ from "
              "https://github.com/scrapinghub/article-extraction-benchmark and pass --data DIR or put them there")
        return 0
    pages = load_pages(args.data)
    print(f"{len(pages)} pages from {args.data}")
    extract("<html><body><p>warm-up</p></body></html>", "https://example.com/")  # imports, lazy models

    ours = evaluate("crawlers.extract", lambda page: extract(page.html, page.url).text, pages)
    print(report(ours))
    if not args.no_baseline:
        baseline = evaluate("trafilatura.extract defaults", lambda page: trafilatura.extract(page.html), pages)
        print(report(baseline))
    print(f"published trafilatura 2.0.0 F1={PUBLISHED_TRAFILATURA_F1}; target for crawlers.extract F1>={TARGET_F1}")

    if args.worst:
        truth_by_id = {page.id: page for page in pages}
        worst = sorted(ours.pages.items(), key=lambda item: item[1].precision + item[1].recall)[: args.worst]
        for page_id, score in worst:
            print(f"  P={score.precision:.3f} R={score.recall:.3f}  {page_id[:12]}  {truth_by_id[page_id].url}")
    return 0 if ours.f1 >= TARGET_F1 else 1


if __name__ == "__main__":
    sys.exit(main())
