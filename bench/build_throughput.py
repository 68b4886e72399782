"""`build` throughput against raw tiktoken batch encoding of the same text, in the same run: target ≥ 50 %.

The baseline encodes every document's text once with `encode_ordinary_batch` on 2 threads (the least any
exact count needs), with the encoding already loaded and warmed up. `build` then does all of its work over
the same documents, through the same `build()` the CLI calls: read the state, redact PII, compose (which
encodes each page that fits exactly once), filter, dedup (exact + MinHash), split, check, write the files,
review.csv and report.html. The baseline is timed before and after the build and the faster time is used,
so a load spike during one baseline run does not flatter the ratio; the state is flushed to disk first, so
neither side pays for the setup's writeback. Ratio = baseline seconds / build seconds.

    /tmp/venv/bin/python bench/build_throughput.py [--documents 20000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from build_memory import write_config, write_synthetic_state  # noqa: E402

TARGET = 0.5


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as directory:
        return measure(Path(directory), args.documents)


def measure(directory: Path, documents: int) -> int:
    from configs import load_config
    from crawlers.store import PageStore
    from transforms.build import build
    from transforms.tokens import get_encoding

    (directory / "out").mkdir()
    size = write_synthetic_state(directory / "out" / "state.sqlite", documents)
    config = load_config(write_config(directory))
    encoding = get_encoding("o200k_base")

    os.sync()  # the state's dirty pages reach the disk now, not during a measurement

    def encode_all() -> tuple[float, int]:
        with PageStore(directory / "out" / "state.sqlite") as store:
            texts = [doc.text for doc in store.documents()]
        encoding.encode_ordinary_batch(texts[:500], num_threads=2)  # warm up
        start = time.perf_counter()
        tokens = sum(len(ids) for ids in encoding.encode_ordinary_batch(texts, num_threads=2))
        return time.perf_counter() - start, tokens

    before, tokens = encode_all()
    start = time.perf_counter()
    result = build(config)
    seconds = time.perf_counter() - start
    after, _ = encode_all()
    baseline = min(before, after)
    ratio = baseline / seconds
    print(f"{documents:,} documents, {size / 1e6:,.1f} MB of text, {tokens:,} tokens")
    print(f"tiktoken encode_ordinary_batch (2 threads): {baseline:6.2f} s  ({size / 1e6 / baseline:5.1f} MB/s; "
          f"{before:.2f} s before the build, {after:.2f} s after)")
    print(f"build → {result.manifest.counts['examples']:,} examples:  {seconds:6.2f} s  "
          f"({size / 1e6 / seconds:5.1f} MB/s)")
    print(f"ratio {ratio:.2f} (target ≥ {TARGET}) {'OK' if ratio >= TARGET else 'MISSED'}")
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
