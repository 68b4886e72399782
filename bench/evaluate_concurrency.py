"""`evaluate --set --rag` with a judge: model and judge requests overlap up to `concurrency`.

Against the test suite's fake OpenAI server on 127.0.0.1 with a fixed latency per chat completion, the wall
time of a scorecard (two models, with and without retrieved context, every answer judged) is compared with
the ideal, requests × latency ÷ concurrency, computed from the requests the server actually received; the
target is wall ≤ 1.2 × ideal. The baseline in the same script is concurrency 1 (fully serial). The fake runs
in this process and spends some CPU on every request (schema checks), which does not overlap; at a latency
of 0.2 s (real APIs take longer) that share is small, at 0.05 s it is about a quarter of each request.

    python bench/evaluate_concurrency.py [--questions 40] [--latency 0.2] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from fake_openai import JUDGE_MODEL, FakeOpenAI  # noqa: E402

from configs import EvaluationConfig, FinetuneConfig, JudgeConfig  # noqa: E402
from finetune import retrieval, scorecard  # noqa: E402
from finetune.judge import Judge  # noqa: E402
from finetune.openai_backend import OpenAIBackend  # noqa: E402
from transforms.version import DatasetVersion  # noqa: E402

TARGET = 1.2


def write_version(root: Path, n: int) -> DatasetVersion:
    version = root / "datasets" / "bench" / "v0001"
    version.mkdir(parents=True)
    tests, meta = [], []
    for i in range(n):
        answer = f"작업 {i}은 관리 화면에서 등록하고 저장 버튼을 누르면 끝납니다. 재시도는 {i % 5}번입니다."
        tests.append({"messages": [{"role": "user", "content": f"작업 {i} 등록 방법을 알려줘"},
                                   {"role": "assistant", "content": answer}]})
        meta.append({"split": "test", "line": i + 1, "url": f"http://bench.internal/{i}", "section": None,
                     "title": f"작업 {i}", "category": "bench"})
    (version / "test.jsonl").write_text("".join(json.dumps(t, ensure_ascii=False) + "\n" for t in tests), "utf-8")
    (version / "train.jsonl").write_text("", encoding="utf-8")
    (version / "metadata.jsonl").write_text("".join(json.dumps(m, ensure_ascii=False) + "\n" for m in meta), "utf-8")
    return DatasetVersion(dir=version)


def run(fake: FakeOpenAI, root: Path, questions: int, concurrency: int) -> tuple[float, int]:
    out = root / f"c{concurrency}"
    ds = write_version(out, questions)
    backend = OpenAIBackend.from_config(FinetuneConfig(base_url=fake.base_url))
    settings = EvaluationConfig(concurrency=concurrency, judge=JudgeConfig(model=JUDGE_MODEL))
    index = retrieval.build_in_memory(retrieval.version_sections(ds), "bigram")
    judge = Judge(backend, JUDGE_MODEL, out)
    before = len(fake.find_requests("POST", "/v1/chat/completions"))
    started = time.perf_counter()
    scorecard.run(backend, ds, {"base": "gpt-4o-mini", "tuned": "gpt-4.1-mini"}, ["heldout"], settings,
                  index=index, k=3, judge=judge, out=out / "evaluation")
    wall = time.perf_counter() - started
    return wall, len(fake.find_requests("POST", "/v1/chat/completions")) - before


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--questions", type=int, default=40)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()
    with FakeOpenAI(chat_latency=args.latency) as fake, tempfile.TemporaryDirectory() as tmp:
        os.environ["OPENAI_API_KEY"] = fake.api_key
        os.environ.pop("OPENAI_BASE_URL", None)
        serial, serial_requests = run(fake, Path(tmp), args.questions, 1)
        wall, requests = run(fake, Path(tmp), args.questions, args.concurrency)
    ideal = requests * args.latency / args.concurrency
    print(f"concurrency 1: {serial_requests} requests in {serial:.2f} s ({serial / serial_requests * 1000:.0f} ms "
          f"each; latency {args.latency * 1000:.0f} ms)")
    print(f"concurrency {args.concurrency}: {requests} requests (model and judge) in {wall:.2f} s; ideal "
          f"{ideal:.2f} s; ratio {wall / ideal:.2f} (target <= {TARGET}); {serial / wall:.1f}x faster than serial")


if __name__ == "__main__":
    main()
