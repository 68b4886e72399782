"""The retrieval index: which tokenizer finds the source section, and how fast BM25 is at 100,000 sections.

1. Tokenizers: recall@1 and recall@5 of `bigram` and `kiwi` on a recall set written for the bundled sample
   site (bench/data/sample_recall_questions.jsonl: 22 questions a user would ask, phrased with particles and
   without the page titles where possible, each naming its source section), over the sample's latest version
   (build it first: `python pipeline.py run`).
   Then bm25, embeddings and their hybrid (reciprocal rank fusion) on the same set, the vectors from the test
   suite's fake server (hashed character bigrams, tests/fake_openai.py): this exercises the embeddings path
   end to end; it says nothing of a real embedding model's recall.
2. Scale: build time and p95 latency of one query at a time on 100,000 synthetic Korean sections, against a
   10,000-section baseline built the same way (the ratio is printed); the target is p95 < 20 ms.

    python bench/retrieval.py [--sections 100000] [--baseline 10000] [--queries 500] [--tokenizer bigram]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from finetune import retrieval  # noqa: E402
from transforms.version import resolve  # noqa: E402

TARGET_P95_MS = 20.0
_SYLLABLES = [chr(0xAC00 + i) for i in range(0, 11172, 7)]
_WORDS = ["채널", "설정", "타임아웃", "재시도", "요청", "응답", "전문", "서버", "연동", "배치", "파일", "오류", "인증서",
          "timeout", "retry", "channel", "HTTP", "TCP", "queue"]
_PARTICLES = ["은", "는", "을", "를", "에서", "으로", "의", "이", "가", ""]


def compare_tokenizers(k: int = 5) -> None:
    ds = resolve(REPO / "data" / "output" / "datasets" / "guide", "latest")
    if ds is None:
        print("tokenizers: no sample version; run `python pipeline.py run` first")
        return
    sections = retrieval.version_sections(ds)
    rows = [json.loads(line) for line in (REPO / "bench" / "data" / "sample_recall_questions.jsonl")
            .read_text(encoding="utf-8").splitlines()]
    sources = [retrieval.section_id(r["url"], r["section"]) for r in rows]
    known = {s.id for s in sections}
    missing = [s for s in sources if s not in known]
    if missing:
        print(f"tokenizers: {len(missing)} source sections are not in {ds.label}: {missing[:3]}")
        return
    print(f"tokenizers on {ds.label} ({len(sections)} sections), {len(rows)} recall questions:")
    for name in retrieval.TOKENIZERS:
        try:
            index = retrieval.build_in_memory(sections, name)
        except Exception as exc:  # noqa: BLE001 - kiwipiepy missing: say so, measure the other
            print(f"  {name:<7} unavailable: {exc}")
            continue
        found = [[s.id for s in hits] for hits in index.search_many([r["question"] for r in rows], k)]
        print(f"  {name:<7} recall@1 {retrieval.recall_at_k(found, sources, 1):.3f}  "
              f"recall@{k} {retrieval.recall_at_k(found, sources, k):.3f}")
    compare_methods(ds, sections, rows, sources, k)


def compare_methods(ds, sections, rows, sources, k: int = 5) -> None:
    import tempfile

    import openai

    sys.path.insert(0, str(REPO / "tests"))
    from configs import EmbeddingsConfig
    from fake_openai import FakeOpenAI
    from finetune import embeddings

    questions = [r["question"] for r in rows]
    print(f"methods on {ds.label} (embeddings: the fake server's hashed-bigram vectors):")
    with FakeOpenAI() as fake, tempfile.TemporaryDirectory() as state:
        client = openai.OpenAI(api_key=fake.api_key, base_url=fake.base_url)
        embedder = embeddings.Embedder(EmbeddingsConfig(), Path(state), client=client)
        semantic = embeddings.EmbeddingIndex(embedder.embed([s.text for s in sections]), sections, embedder)
        lexical = retrieval.build_in_memory(sections, "bigram")
        for name, index in (("bm25", lexical), ("embeddings", semantic),
                            ("hybrid", retrieval.HybridIndex(lexical, semantic))):
            found = [[s.id for s in hits] for hits in index.search_many(questions, k)]
            print(f"  {name:<10} recall@1 {retrieval.recall_at_k(found, sources, 1):.3f}  "
                  f"recall@{k} {retrieval.recall_at_k(found, sources, k):.3f}")


def synthetic_sections(n: int, seed: int = 0) -> list[retrieval.Section]:
    rng = random.Random(seed)

    def word() -> str:
        stem = rng.choice(_WORDS) if rng.random() < 0.3 else "".join(rng.choices(_SYLLABLES, k=rng.randint(1, 3)))
        return stem + rng.choice(_PARTICLES)

    return [retrieval.Section(f"s{i}#", f"s{i}", f"문서 {i}", None,
                              " ".join(word() for _ in range(rng.randint(40, 120)))) for i in range(n)]


def measure(n: int, queries: int, tokenizer: str) -> tuple[float, float, float]:
    """(build seconds, p50 ms, p95 ms) for `n` sections, queries drawn from their own words."""
    sections = synthetic_sections(n)
    started = time.perf_counter()
    index = retrieval.build_in_memory(sections, tokenizer)
    built = time.perf_counter() - started
    rng = random.Random(1)
    asked = [" ".join(rng.sample(s.text.split(), 5)) for s in rng.sample(sections, queries)]
    index.search(asked[0], 5)  # warm-up
    times = []
    for q in asked:
        t = time.perf_counter()
        index.search(q, 5)
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return built, statistics.median(times), times[int(0.95 * len(times)) - 1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sections", type=int, default=100_000)
    ap.add_argument("--baseline", type=int, default=10_000)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--tokenizer", default="bigram", choices=list(retrieval.TOKENIZERS))
    ap.add_argument("--skip-tokenizers", action="store_true")
    args = ap.parse_args()
    if not args.skip_tokenizers:
        compare_tokenizers()
    base = measure(args.baseline, args.queries, args.tokenizer)
    big = measure(args.sections, args.queries, args.tokenizer)
    for n, (built, p50, p95) in ((args.baseline, base), (args.sections, big)):
        print(f"{n:>7,} sections ({args.tokenizer}): build {built:.1f} s, query p50 {p50:.2f} ms, p95 {p95:.2f} ms")
    print(f"ratio {args.sections:,}/{args.baseline:,}: build {big[0] / base[0]:.1f}x, query p95 {big[2] / base[2]:.1f}x; "
          f"p95 {big[2]:.2f} ms {'<' if big[2] < TARGET_P95_MS else '>='} target {TARGET_P95_MS:g} ms")


if __name__ == "__main__":
    main()
