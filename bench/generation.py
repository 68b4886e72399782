"""What `generate` costs in wall time, in requests on a re-crawl, and how close `--estimate` comes.

Crawls the bundled sample into a temp folder, then generates against the fake chat server of the tests
(tests/fake_chat.py) answering every request after a fixed latency. Prints: the wall time of `generate` (planning,
requests, storing; the SDK's one-off import and client creation shown apart) against the ideal requests × latency
÷ concurrency (target ≤ 1.2×); the requests an unchanged re-crawl and generate send
(target 0); and the input tokens `--estimate` counted against those actually sent, counted exactly with the
same encoding from the messages the server received (target within ±15 %).

    python bench/generation.py [--latency 0.2] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fake_chat import FakeChat  # noqa: E402

from configs import load_config  # noqa: E402
from crawlers.crawl import crawl  # noqa: E402
from transforms.generate import Generator, generate, make_client  # noqa: E402
from transforms.tokens import count_messages  # noqa: E402

KEY = "sk-bench"
TARGET_WALL = 1.2
TARGET_ESTIMATE = 0.15


def write_config(folder: Path, base_url: str, concurrency: int) -> Path:
    path = folder / "config.yaml"
    path.write_text(f"""
output_dir: {folder / 'out'}
sources:
  - name: guide
    serve_dir: {ROOT / 'data' / 'sample_site'}
    start_urls: ["http://guide.example.internal/index.html"]
    allowed_domains: [guide.example.internal]
crawl:
  progress: "off"
dataset:
  max_tokens_per_example: 4096
  generate:
    provider: openai
    model: gpt-4o-mini
    base_url: {base_url}
    concurrency: {concurrency}
""", encoding="utf-8")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.2, help="seconds the fake takes per reply (default 0.2)")
    parser.add_argument("--concurrency", type=int, default=8, help="dataset.generate.concurrency (default 8)")
    args = parser.parse_args()
    os.environ["OPENAI_API_KEY"] = KEY
    ok = True
    with tempfile.TemporaryDirectory() as tmp, FakeChat(api_key=KEY, latency=args.latency) as fake:
        config = load_config(write_config(Path(tmp), fake.base_url, args.concurrency))
        crawl(config)
        estimate = generate(config, estimate=True).estimate
        started = time.perf_counter()
        client = make_client(config.dataset.generate)  # a fixed cost, once a run: the SDK's import and client
        startup = time.perf_counter() - started
        report = generate(config, client=client)
        wall = time.perf_counter() - started - startup
        requests = len(fake.requests)
        ideal = requests * args.latency / args.concurrency
        print(f"generate: {requests} requests in {wall:.2f} s at concurrency {args.concurrency}, latency "
              f"{args.latency:g} s; ideal {ideal:.2f} s; ratio {wall / ideal:.2f} (target <= {TARGET_WALL}); "
              f"with the SDK's import and client ({startup:.2f} s, once a run) {(wall + startup) / ideal:.2f}")
        ok &= wall <= TARGET_WALL * ideal

        crawl(config)
        again = generate(config)
        resent = len(fake.requests) - requests
        print(f"unchanged re-crawl: {again.cached} of {again.sections} sections cached, {resent} requests "
              "(target 0)")
        ok &= resent == 0 and report.progress.done == requests

        encoding = Generator(config.dataset.generate).counter.encoding
        sent = sum(count_messages(encoding, r.body["messages"]) for r in fake.requests)
        off = estimate["input_tokens"] / sent - 1
        print(f"--estimate: {estimate['input_tokens']:,} input tokens ({'exact' if estimate['exact'] else 'estimated'}"
              f" encoding), sent {sent:,}; off by {off:+.1%} (target within ±{TARGET_ESTIMATE:.0%}); expected output "
              f"{estimate['expected_output_tokens']:,}, the server reported {report.progress.output_tokens:,}")
        ok &= abs(off) <= TARGET_ESTIMATE
    print("all targets met" if ok else "a target was missed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
