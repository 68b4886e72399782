"""`python pipeline.py validate` on a 50,000-example chat file against a plain serial loop script: target ≥ 3×.

Whole process against whole process, startup included, as a user runs them: the baseline is
bench/validate_baseline.py (json.loads per line, the same checks, tiktoken's `encode` once per message value),
ours is `python pipeline.py validate FILE --json`. Both must count the same tokens (checked). The file is
../shared/bench-data/validate-chat-50000.jsonl where that exists (for --examples 50000), else generated
(deterministic: seed 7) and flushed to disk before either is timed; each is run `--repeat` times,
alternating, and the median time of each counts (the machine is shared: the spread is printed too).

    python bench/validate_speed.py [--examples 50000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_FILE = REPO.parent / "shared" / "bench-data" / "validate-chat-{examples}.jsonl"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from build_memory import CATEGORIES, synthetic_page  # noqa: E402

TARGET = 3.0


def write_file(path: Path, n: int) -> None:
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


def timed(command: list[str]) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + system, of the process and its children) and stdout of a run."""
    cpu = _children_cpu()
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()}")
    return elapsed, _children_cpu() - cpu, done.stdout


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    shared = Path(str(SHARED_FILE).format(examples=args.examples))
    if shared.is_file():
        return measure(shared, args.examples, args.repeat)
    with tempfile.TemporaryDirectory(prefix="bench-validate-") as directory:
        path = Path(directory) / "train.jsonl"
        write_file(path, args.examples)
        os.sync()  # the file's dirty pages reach the disk now, not during a measurement
        return measure(path, args.examples, args.repeat)


def measure(path: Path, examples: int, repeat: int) -> int:
    size = path.stat().st_size
    baseline_cmd = [sys.executable, str(REPO / "bench" / "validate_baseline.py"), str(path)]
    ours_cmd = [sys.executable, str(REPO / "pipeline.py"), "validate", str(path), "--json",
                "--model", "gpt-4o-mini-2024-07-18"]
    baselines, ours, baselines_cpu, ours_cpu = [], [], [], []
    for _ in range(repeat):
        elapsed, cpu, out = timed(baseline_cmd)
        baselines.append(elapsed)
        baselines_cpu.append(cpu)
        n, errors, baseline_tokens = map(int, out.split())
        elapsed, cpu, out = timed(ours_cmd)
        ours.append(elapsed)
        ours_cpu.append(cpu)
        report = json.loads(out.splitlines()[0])
    assert n == report["examples"] == examples and errors == 0 and not report["errors"], (n, errors, report)
    assert report["tokens_total"] == baseline_tokens, (report["tokens_total"], baseline_tokens)
    ratio = statistics.median(baselines) / statistics.median(ours)
    print(f"{path}: {examples:,} examples, {size / 1e6:,.1f} MB, {baseline_tokens:,} tokens (same count both ways)")
    print(f"plain serial loop (python bench/validate_baseline.py FILE): median {statistics.median(baselines):6.2f} s "
          f"({', '.join(f'{t:.2f}' for t in baselines)})")
    print(f"python pipeline.py validate FILE:                       median {statistics.median(ours):6.2f} s "
          f"({', '.join(f'{t:.2f}' for t in ours)})")
    print(f"CPU seconds (user + system), median: plain loop {statistics.median(baselines_cpu):.2f}, "
          f"validate {statistics.median(ours_cpu):.2f} (a loaded machine stretches wall time, not CPU time)")
    print(f"speed-up {ratio:.2f}× (target ≥ {TARGET}×) {'OK' if ratio >= TARGET else 'MISSED'}")
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
