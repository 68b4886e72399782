"""`validate` on a 50,000-example chat file against a serial per-message loop like OpenAI's cookbook: target ≥ 3×.

The baseline is the cookbook's "Data preparation and analysis for chat model fine-tuning" notebook: json.loads
per line, its format checks, then `num_tokens_from_messages` and `num_assistant_tokens_from_messages` per
example, encoding every message value one call at a time. Ours: orjson, the full set of checks, and the
distinct strings of each batch encoded once in threaded batches. Both count the same tokens (checked). The
file is flushed to disk before either is timed, so neither pays for writing it back.

    /tmp/venv/bin/python bench/validate_speed.py [--examples 50000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from build_memory import CATEGORIES, synthetic_page  # noqa: E402

TARGET = 3.0


def write_file(path: Path, n: int) -> int:
    """n chat examples shaped like a build's: a category system prompt, a templated question, a page answer."""
    rng = random.Random(7)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            answer = synthetic_page(i, rng)
            f.write(json.dumps({"messages": [
                {"role": "system", "content": f"Category: {CATEGORIES[i % len(CATEGORIES)]}"},
                {"role": "user", "content": f"문서 {i} 관련 내용을 알려줘."},
                {"role": "assistant", "content": answer},
            ]}, ensure_ascii=False) + "\n")
    return path.stat().st_size


def cookbook(path: Path, encoding, assistant_pass: bool = True) -> tuple[int, int]:
    """The cookbook's loop, as published (format checks, then per-example token counts); without
    `assistant_pass`, the answers are not encoded a second time for the cookbook's assistant-token statistics
    (which `validate` does not report), for a serial loop that does no more work than ours."""
    with open(path, encoding="utf-8") as f:
        dataset = [json.loads(line) for line in f]
    format_errors: dict[str, int] = defaultdict(int)
    for ex in dataset:
        if not isinstance(ex, dict):
            format_errors["data_type"] += 1
            continue
        messages = ex.get("messages", None)
        if not messages:
            format_errors["missing_messages_list"] += 1
            continue
        for message in messages:
            if "role" not in message or "content" not in message:
                format_errors["message_missing_key"] += 1
            if any(k not in ("role", "content", "name", "function_call", "weight") for k in message):
                format_errors["message_unrecognized_key"] += 1
            if message.get("role", None) not in ("system", "user", "assistant", "function"):
                format_errors["unrecognized_role"] += 1
            content = message.get("content", None)
            function_call = message.get("function_call", None)
            if (not content and not function_call) or not isinstance(content, str):
                format_errors["missing_content"] += 1
        if not any(message.get("role", None) == "assistant" for message in messages):
            format_errors["example_missing_assistant_message"] += 1

    def num_tokens_from_messages(messages, tokens_per_message=3, tokens_per_name=1):
        num_tokens = 0
        for message in messages:
            num_tokens += tokens_per_message
            for key, value in message.items():
                num_tokens += len(encoding.encode(value))
                if key == "name":
                    num_tokens += tokens_per_name
        num_tokens += 3
        return num_tokens

    def num_assistant_tokens_from_messages(messages):
        num_tokens = 0
        for message in messages:
            if message["role"] == "assistant":
                num_tokens += len(encoding.encode(message["content"]))
        return num_tokens

    total = 0
    for ex in dataset:
        total += num_tokens_from_messages(ex["messages"])
        if assistant_pass:
            num_assistant_tokens_from_messages(ex["messages"])
    return total, sum(format_errors.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=50_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-validate-") as directory:
        return measure(Path(directory) / "train.jsonl", args.examples)


def measure(path: Path, examples: int) -> int:
    from transforms.model_registry import lookup
    from transforms.tokens import TokenCounter
    from transforms.validate import validate_file

    spec = lookup("gpt-4o-mini-2024-07-18")
    counter = TokenCounter(spec.encoding)
    size = write_file(path, examples)
    os.sync()  # the file's dirty pages reach the disk now, not during a measurement
    counter.texts(["warm up"] * 10)

    start = time.perf_counter()
    baseline_tokens, baseline_errors = cookbook(path, counter.encoding)
    baseline = time.perf_counter() - start

    start = time.perf_counter()
    report = validate_file(path, spec, counter)
    ours = time.perf_counter() - start

    start = time.perf_counter()
    cookbook(path, counter.encoding, assistant_pass=False)
    single_pass = time.perf_counter() - start

    assert baseline_errors == 0 and report.ok, (baseline_errors, dict(report.errors))
    assert sum(report.tokens) == baseline_tokens, (sum(report.tokens), baseline_tokens)
    ratio = baseline / ours
    print(f"{examples:,} examples, {size / 1e6:,.1f} MB, {baseline_tokens:,} tokens (same count both ways)")
    print(f"cookbook serial loop: {baseline:6.2f} s")
    print(f"crawl2tune validate:  {ours:6.2f} s")
    print(f"(the same loop without its second pass over the answers: {single_pass:6.2f} s, "
          f"{single_pass / ours:.2f}× our time)")
    print(f"speed-up {ratio:.2f}× (target ≥ {TARGET}×) {'OK' if ratio >= TARGET else 'MISSED'}")
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
