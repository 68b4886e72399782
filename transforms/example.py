"""The record the transform layer produces: one chat example with the metadata a reviewer needs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from transforms.formats import Format, record


class Example(BaseModel):
    example_id: str  # stable across re-crawls: canonical URL + section + ordinal + question template
    document_id: str
    url: str
    source: str
    category: str
    title: str
    section: str | None = None
    messages: list[dict[str, Any]]
    tokens: int  # exact, as OpenAI counts the example in the dataset's format
    answer_tokens: int = 0  # exact tokens of the assistant content (all turns)
    language: str | None = None
    review: Literal["edited"] | None = None  # the answer is a reviewer's edit
    original_answer: str | None = None  # an edited example's answer before the edit
    split: Literal["train", "test", "recall"] | None = None  # recall: held out of train into eval_recall.jsonl
    generated: dict[str, Any] | None = None  # a generated pair's question_id, variant, style, evidence, model, judge

    @property
    def answer(self) -> str:
        """The last assistant message: the answer the question asked for."""
        return next(m["content"] for m in reversed(self.messages) if m["role"] == "assistant")

    @property
    def answers(self) -> str:
        """Every assistant message of the conversation, in order (what dedup and PII look at)."""
        return "\n\n".join(m["content"] for m in self.messages if m["role"] == "assistant")

    @property
    def question(self) -> str:
        return next(m["content"] for m in self.messages if m["role"] == "user")

    def record(self, fmt: Format = "chat") -> dict[str, Any]:
        """The line written to train/test JSONL: only keys the fine-tuning API accepts."""
        return record(self.messages, fmt)

    def metadata(self) -> dict[str, Any]:
        """The sidecar line: everything but the messages (`generated` only for a generated pair,
        `original_answer` only for an edited one)."""
        unset = {name for name in ("generated", "original_answer") if getattr(self, name) is None}
        return self.model_dump(exclude={"messages"} | unset)

    def preference(self) -> dict[str, Any] | None:
        """A reviewer's edit as a DPO pair (OpenAI's and Together's preference line): the conversation up to the
        answer, the edited answer preferred to the original; None for an example nobody edited."""
        if self.review != "edited" or not self.original_answer or self.original_answer == self.answer:
            return None
        last = max(i for i, m in enumerate(self.messages) if m["role"] == "assistant")
        given = [{k: v for k, v in m.items() if k != "weight"} for m in self.messages[:last]]
        return {"input": {"messages": given},
                "preferred_output": [{"role": "assistant", "content": self.answer}],
                "non_preferred_output": [{"role": "assistant", "content": self.original_answer}]}
