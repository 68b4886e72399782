"""Check a fine-tuning JSONL file the way the platform will, before anything is uploaded.

Covers every check of OpenAI's cookbook (data_type, missing_messages_list, message_missing_key,
message_unrecognized_key, unrecognized_role, missing_content, example_missing_assistant_message) with the
current API's chat extensions understood (tools, tool_calls, tool role, function_call, functions,
parallel_tool_calls, weight), plus unparseable lines, bad weights, examples over the model's token limit
and too few examples. Never crashes on odd input. Token counts are exact and batched.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import orjson

from transforms import estimate
from transforms.model_registry import ModelSpec
from transforms.tokens import TokenCounter, chat_tokens, message_strings

MIN_EXAMPLES = 10
FIRST_LINES = 5
COUNT_BATCH = 4096  # examples whose strings are encoded together (bounded memory, threaded batches)

CATEGORIES = {
    "invalid_json": "line is not valid JSON",
    "data_type": "example (or message) is not a JSON object",
    "missing_messages_list": "no non-empty `messages` list",
    "example_unrecognized_key": "example has a key the API does not accept",
    "message_missing_key": "message lacks `role` or `content`",
    "message_unrecognized_key": "message has a key its role does not accept",
    "unrecognized_role": "role is not system, developer, user, assistant, tool or function",
    "missing_content": "content is empty or not text / content parts",
    "example_missing_assistant_message": "no assistant message to learn from",
    "invalid_weight": "`weight` is not 0 or 1, or is set on a non-assistant message",
    "invalid_tools": "`tools`, `functions`, `tool_calls` or `parallel_tool_calls` malformed",
    "too_many_tokens": "example is over the model's per-example token limit",
    "insufficient_examples": "fewer than 10 examples",
}

EXAMPLE_KEYS = {"messages", "tools", "parallel_tool_calls", "functions"}
ROLE_KEYS = {
    "system": {"role", "content", "name"},
    "developer": {"role", "content", "name"},
    "user": {"role", "content", "name"},
    "assistant": {"role", "content", "name", "weight", "tool_calls", "function_call", "refusal", "audio"},
    "tool": {"role", "content", "tool_call_id"},
    "function": {"role", "content", "name"},
}


@dataclass
class Report:
    """What validation found: error counts with first line numbers, and token statistics."""

    examples: int = 0
    errors: Counter = field(default_factory=Counter)
    first_lines: dict[str, list[int]] = field(default_factory=dict)
    tokens: list[int] = field(default_factory=list)
    limit: int = 0
    n_epochs: int = 0
    billed_tokens: int = 0
    estimated_cost_usd: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.errors

    def add_error(self, category: str, line: int) -> None:
        self.errors[category] += 1
        lines = self.first_lines.setdefault(category, [])
        if len(lines) < FIRST_LINES and line not in lines:
            lines.append(line)

    def token_stats(self) -> dict[str, Any]:
        if not self.tokens:
            return {"total": 0, "min": 0, "max": 0, "mean": 0, "median": 0}
        return {
            "total": sum(self.tokens),
            "min": min(self.tokens),
            "max": max(self.tokens),
            "mean": round(statistics.fmean(self.tokens), 1),
            "median": statistics.median(self.tokens),
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "examples": self.examples,
            "errors": dict(sorted(self.errors.items())),
            "first_lines": {k: self.first_lines[k] for k in sorted(self.first_lines)},
            "tokens_total": sum(self.tokens),
            "tokens": self.token_stats(),
            "token_limit": self.limit,
            "n_epochs": self.n_epochs,
            "billed_tokens": self.billed_tokens,
            "estimated_cost_usd": self.estimated_cost_usd,
        }


def _is_content_parts(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) > 0
        and all(isinstance(p, dict) and isinstance(p.get("type"), str) for p in value)
    )


def _tool_calls_ok(calls: Any) -> bool:
    return isinstance(calls, list) and len(calls) > 0 and all(
        isinstance(c, dict)
        and isinstance(c.get("id"), str)
        and c.get("type", "function") == "function"
        and isinstance(c.get("function"), dict)
        and isinstance(c["function"].get("name"), str)
        and isinstance(c["function"].get("arguments", ""), str)
        for c in calls
    )


def _tools_ok(example: dict[str, Any]) -> bool:
    tools = example.get("tools")
    if tools is not None and not (
        isinstance(tools, list)
        and all(
            isinstance(t, dict) and t.get("type") == "function"
            and isinstance(t.get("function"), dict) and isinstance(t["function"].get("name"), str)
            for t in tools
        )
    ):
        return False
    functions = example.get("functions")
    if functions is not None and not (
        isinstance(functions, list) and 0 < len(functions) <= 128
        and all(isinstance(f, dict) and isinstance(f.get("name"), str) for f in functions)
    ):
        return False
    parallel = example.get("parallel_tool_calls")
    return parallel is None or isinstance(parallel, bool)


def check_chat(example: Any) -> set[str]:
    """Error categories of one parsed chat example (empty when it is fine)."""
    if not isinstance(example, dict):
        return {"data_type"}
    errors: set[str] = set()
    if set(example) - EXAMPLE_KEYS:
        errors.add("example_unrecognized_key")
    if not _tools_ok(example):
        errors.add("invalid_tools")
    messages = example.get("messages")
    if not isinstance(messages, list) or not messages:
        errors.add("missing_messages_list")
        return errors
    has_assistant = False
    for message in messages:
        if not isinstance(message, dict):
            errors.add("data_type")
            continue
        role = message.get("role")
        if "role" not in message:
            errors.add("message_missing_key")
        elif not isinstance(role, str) or role not in ROLE_KEYS:
            errors.add("unrecognized_role")
            continue
        if role is None:
            continue
        if set(message) - ROLE_KEYS[role]:
            errors.add("message_unrecognized_key")
        content = message.get("content")
        calls_instead = role == "assistant" and ("tool_calls" in message or "function_call" in message)
        if "content" not in message and not calls_instead:
            errors.add("message_missing_key")
        elif not calls_instead and not (
            (isinstance(content, str) and content.strip()) or _is_content_parts(content)
            or (role == "function" and content is None)
        ):
            errors.add("missing_content")
        elif calls_instead and content is not None and not isinstance(content, (str, list)):
            errors.add("missing_content")
        if role == "assistant":
            has_assistant = True
            if "tool_calls" in message and not _tool_calls_ok(message["tool_calls"]):
                errors.add("invalid_tools")
            if "function_call" in message and not (
                isinstance(message["function_call"], dict) and isinstance(message["function_call"].get("name"), str)
            ):
                errors.add("invalid_tools")
        if "weight" in message and (
            role != "assistant" or type(message["weight"]) is not int or message["weight"] not in (0, 1)
        ):
            errors.add("invalid_weight")
        if role == "tool" and not isinstance(message.get("tool_call_id"), str):
            errors.add("message_missing_key")
    if not has_assistant:
        errors.add("example_missing_assistant_message")
    return errors


def _chat_strings(example: dict[str, Any]) -> tuple[list[str], int, int]:
    """Strings to encode, the fixed token overhead, and the number of messages of a valid example."""
    strings: list[str] = []
    names = 0
    for message in example["messages"]:
        for key, text in message_strings(message):
            strings.append(text)
            names += key == "name"
    for key in ("tools", "functions"):
        if example.get(key) is not None:
            strings.append(orjson.dumps(example[key]).decode())
    return strings, names, len(example["messages"])


def validate_lines(lines: Iterable[bytes | str], spec: ModelSpec, counter: TokenCounter,
                   *, limit: int | None = None, price_per_1m: float | None = None,
                   n_epochs: int | None = None) -> Report:
    """Validate JSONL lines (1-based line numbers in the report) for `spec`'s format and limits."""
    report = Report(limit=limit or spec.max_tokens_per_example)
    pending: list[tuple[int, list[str], int, int]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        report.examples += 1
        try:
            example = orjson.loads(line)
        except (orjson.JSONDecodeError, RecursionError):
            report.add_error("invalid_json", number)
            continue
        errors = check_chat(example)
        for category in sorted(errors):
            report.add_error(category, number)
        if not errors:
            pending.append((number, *_chat_strings(example)))
            if len(pending) >= COUNT_BATCH:
                _count(pending, counter, report)
                pending.clear()
    _count(pending, counter, report)
    if report.examples < MIN_EXAMPLES:
        report.add_error("insufficient_examples", 0)
    report.n_epochs = n_epochs or estimate.default_epochs(report.examples)
    report.billed_tokens = estimate.billed_tokens(report.tokens, report.limit, report.n_epochs)
    report.estimated_cost_usd = estimate.cost_usd(report.billed_tokens, price_per_1m or spec.price_per_1m_training_tokens)
    return report


def _count(pending: list[tuple[int, list[str], int, int]], counter: TokenCounter, report: Report) -> None:
    flat = [s for _, strings, _, _ in pending for s in strings]
    counts = iter(counter.texts(flat))
    for number, strings, names, n_messages in pending:
        total = sum(next(counts) for _ in strings)
        tokens = chat_tokens(n_messages, total, names)
        report.tokens.append(tokens)
        if tokens > report.limit:
            report.add_error("too_many_tokens", number)


def validate_file(path: Path, spec: ModelSpec, counter: TokenCounter, **kwargs: Any) -> Report:
    with open(path, "rb") as f:
        return validate_lines(f, spec, counter, **kwargs)
