"""The training-file line of an example in each format the fine-tuning API takes for supervised training.

chat (every current model): `{"messages": [...]}`. prompt_completion (babbage-002, davinci-002): the system
and user messages joined into the prompt, ending with a fixed separator so the model learns where the
question ends, and the answer as the completion, starting with a space and ending with a stop sequence, as
OpenAI's guide for completion models advises.
"""

from __future__ import annotations

from typing import Any

from configs.model_registry import Format

PROMPT_SEPARATOR = "\n\n###\n\n"
COMPLETION_STOP = " END"


def prompt_text(system: str, user: str) -> str:
    return f"{system}\n\n{user}{PROMPT_SEPARATOR}" if system else f"{user}{PROMPT_SEPARATOR}"


def completion_text(answer: str) -> str:
    return f" {answer}{COMPLETION_STOP}"


def record(messages: list[dict[str, Any]], fmt: Format) -> dict[str, Any]:
    """The JSONL object for one example: only keys the API accepts for `fmt`."""
    if fmt == "chat":
        return {"messages": messages}
    system = next((m["content"] for m in messages if m["role"] == "system"), "")
    user = next(m["content"] for m in messages if m["role"] == "user")
    answer = next(m["content"] for m in reversed(messages) if m["role"] == "assistant")
    return {"prompt": prompt_text(system, user), "completion": completion_text(answer)}
