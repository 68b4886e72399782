"""The record the transform layer produces: one chat example with the metadata a reviewer needs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel


class Example(BaseModel):
    example_id: str  # stable across re-crawls: canonical URL + section + question template
    document_id: str
    url: str
    source: str
    category: str
    title: str
    section: str | None = None
    messages: list[dict[str, Any]]
    tokens: int  # exact, as OpenAI counts the example
    split: Literal["train", "test"] | None = None

    @property
    def answer(self) -> str:
        return next(m["content"] for m in reversed(self.messages) if m["role"] == "assistant")

    @property
    def question(self) -> str:
        return next(m["content"] for m in self.messages if m["role"] == "user")

    def record(self) -> dict[str, Any]:
        """The line written to train/test JSONL: only keys the fine-tuning API accepts."""
        return {"messages": self.messages}

    def metadata(self) -> dict[str, Any]:
        """The sidecar line: everything but the messages."""
        return self.model_dump(exclude={"messages"})
