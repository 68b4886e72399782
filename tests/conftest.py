"""Every test runs in its own temp dir and environment, offline, on a fixed calendar day."""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from configs import model_registry  # noqa: E402

TODAY = date(2026, 11, 21)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Own working dir, an empty tiktoken cache, no API keys, and the registry's clock fixed."""
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID", "AZURE_OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(model_registry, "today", lambda: TODAY)
    yield tmp_path


def write_jsonl(path: Path, rows: list) -> Path:
    """Rows are JSON-able objects, or raw strings written as they are."""
    import json

    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(row if isinstance(row, str) else json.dumps(row, ensure_ascii=False))
            f.write("\n")
    return path


def chat(question: str = "HTTP 관련 내용을 알려줘.", answer: str = "HTTP 채널은 요청/응답 방식입니다.") -> dict:
    return {"messages": [
        {"role": "system", "content": "Category: [온라인] 업무 가이드"},
        {"role": "user", "content": question},
        {"role": "assistant", "content": answer},
    ]}
