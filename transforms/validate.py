"""Check a fine-tuning JSONL file the way the platform will, before anything is uploaded.

Covers every check of OpenAI's cookbook (data_type, missing_messages_list, message_missing_key,
message_unrecognized_key, unrecognized_role, missing_content, example_missing_assistant_message) with the
current API's chat extensions understood (tools, tool_calls, tool role, function_call, functions,
parallel_tool_calls, weight), plus unparseable lines, bad weights, examples over the model's token limit
and too few examples. Three line formats, after the schemas in shared/openai-api (x-training-input-schemas):
chat (FineTuneChatRequestInput), preference / DPO (FineTunePreferenceRequestInput: `input` with messages and
tools, one assistant message each in `preferred_output` and `non_preferred_output`) and prompt/completion
(FineTuneCompletionRequestInput, for babbage-002 and davinci-002). A file's format is the model's for
completion models, else detected from its first line. Never crashes on odd input. Token counts are exact,
batched (a large file: one process per core), and each distinct short string of a batch is counted once.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
from concurrent.futures import ProcessPoolExecutor
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Literal

import orjson

from transforms import estimate
from configs.model_registry import MIN_TRAIN_EXAMPLES, ModelSpec
from transforms.example import Example
from transforms.formats import Format
from transforms.stage import Stage, StageLog
from transforms.tokens import TokenCounter, chat_tokens, counter_for, message_strings

FileFormat = Literal["chat", "preference", "prompt_completion"]
FORMATS = ("chat", "preference", "prompt_completion")

MIN_EXAMPLES = MIN_TRAIN_EXAMPLES["openai"]  # `validate` checks a file as OpenAI's API will
FIRST_LINES = 5
COUNT_BATCH = 4096  # examples whose strings are counted together (bounded memory)

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
    "invalid_preference_output": "`preferred_output` / `non_preferred_output` is not a list of one assistant message",
    "missing_prompt_or_completion": "`prompt` is not text, or `completion` is not non-empty text",
    "wrong_format_for_model": "the model cannot be trained on lines of this format",
    "too_many_tokens": "example is over the model's per-example token limit",
    "insufficient_examples": "fewer than 10 examples",
}

EXAMPLE_KEYS = {"messages", "tools", "parallel_tool_calls", "functions"}
PREFERENCE_KEYS = {"input", "preferred_output", "non_preferred_output"}
PREFERENCE_INPUT_KEYS = {"messages", "tools", "parallel_tool_calls"}
COMPLETION_KEYS = {"prompt", "completion"}
ROLE_KEYS = {
    "system": {"role", "content", "name"},
    "developer": {"role", "content", "name"},
    "user": {"role", "content", "name"},
    "assistant": {"role", "content", "name", "weight", "tool_calls", "function_call", "refusal", "audio"},
    "tool": {"role", "content", "tool_call_id"},
    "function": {"role", "content", "name"},
}
OUTPUT_KEYS = ROLE_KEYS["assistant"] - {"weight"}  # ChatCompletionRequestAssistantMessage: no weight


@dataclass
class Report:
    """What validation found: error counts with first line numbers, and token statistics."""

    examples: int = 0
    format: str | None = None  # chat, preference or prompt_completion
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
            "format": self.format,
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


def _check_messages(messages: list[Any], errors: set[str], *, keys: dict[str, set[str]] = ROLE_KEYS) -> bool:
    """Check each message of a list; returns whether there is an assistant message."""
    has_assistant = False
    for message in messages:
        if not isinstance(message, dict):
            errors.add("data_type")
            continue
        role = message.get("role")
        if "role" not in message:
            errors.add("message_missing_key")
        elif not isinstance(role, str) or role not in keys:
            errors.add("unrecognized_role")
            continue
        if role is None:
            continue
        extra = set(message) - keys[role]
        if keys is ROLE_KEYS:
            extra.discard("weight")  # weight on a non-assistant message is `invalid_weight`
        if extra:
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
    return has_assistant


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
    if not _check_messages(messages, errors):
        errors.add("example_missing_assistant_message")
    return errors


def check_preference(example: Any) -> set[str]:
    """Error categories of one preference (DPO) example: an input conversation and two candidate answers."""
    if not isinstance(example, dict):
        return {"data_type"}
    errors: set[str] = set()
    if set(example) - PREFERENCE_KEYS:
        errors.add("example_unrecognized_key")
    given = example.get("input")
    if not isinstance(given, dict):
        errors.add("missing_messages_list")
    else:
        if set(given) - PREFERENCE_INPUT_KEYS:
            errors.add("example_unrecognized_key")
        if not _tools_ok(given):
            errors.add("invalid_tools")
        messages = given.get("messages")
        if not isinstance(messages, list) or not messages:
            errors.add("missing_messages_list")
        else:
            _check_messages(messages, errors)
    for key in ("preferred_output", "non_preferred_output"):
        output = example.get(key)
        if not (isinstance(output, list) and len(output) == 1 and isinstance(output[0], dict)
                and output[0].get("role") == "assistant"):
            errors.add("invalid_preference_output")
            continue
        _check_messages(output, errors, keys={"assistant": OUTPUT_KEYS})
    return errors


def check_prompt_completion(example: Any) -> set[str]:
    """Error categories of one prompt/completion example (babbage-002, davinci-002)."""
    if not isinstance(example, dict):
        return {"data_type"}
    errors: set[str] = set()
    if set(example) - COMPLETION_KEYS:
        errors.add("example_unrecognized_key")
    completion = example.get("completion")
    if not isinstance(example.get("prompt"), str) or not (isinstance(completion, str) and completion.strip()):
        errors.add("missing_prompt_or_completion")
    return errors


CHECKS: dict[str, Callable[[Any], set[str]]] = {
    "chat": check_chat, "preference": check_preference, "prompt_completion": check_prompt_completion,
}


def check_example(example: Any, fmt: FileFormat = "chat") -> set[str]:
    return CHECKS[fmt](example)


def detect_format(example: Any) -> FileFormat:
    """The format a parsed line is written in, judged by its keys (chat when it cannot be told)."""
    if isinstance(example, dict):
        if {"input", "preferred_output", "non_preferred_output"} & set(example):
            return "preference"
        if {"prompt", "completion"} & set(example) and "messages" not in example:
            return "prompt_completion"
    return "chat"


# -- token counting ----------------------------------------------------------------------------------------
# Each valid example becomes the strings to encode and a function from their counts to its token total.

Combine = Callable[[list[int]], int]


def _messages_strings(messages: list[dict[str, Any]]) -> tuple[list[str], int]:
    strings: list[str] = []
    names = 0
    for message in messages:
        for key, text in message_strings(message):
            strings.append(text)
            names += key == "name"
    return strings, names


def _tools_strings(container: dict[str, Any]) -> list[str]:
    return [orjson.dumps(container[key]).decode() for key in ("tools", "functions") if container.get(key) is not None]


def _chat_strings(example: dict[str, Any]) -> tuple[list[str], Combine]:
    strings, names = _messages_strings(example["messages"])
    strings += _tools_strings(example)
    n_messages = len(example["messages"])
    return strings, lambda counts: chat_tokens(n_messages, sum(counts), names)


def _preference_strings(example: dict[str, Any]) -> tuple[list[str], Combine]:
    """The larger of input + preferred and input + non-preferred, each counted as a chat example."""
    given = example["input"]
    head, head_names = _messages_strings(given["messages"])
    head += _tools_strings(given)
    good, good_names = _messages_strings(example["preferred_output"])
    bad, bad_names = _messages_strings(example["non_preferred_output"])
    n, a, b = len(given["messages"]) + 1, len(head), len(head) + len(good)

    def combine(counts: list[int]) -> int:
        base = sum(counts[:a])
        return max(chat_tokens(n, base + sum(counts[a:b]), head_names + good_names),
                   chat_tokens(n, base + sum(counts[b:]), head_names + bad_names))

    return head + good + bad, combine


def _completion_strings(example: dict[str, Any]) -> tuple[list[str], Combine]:
    return [example["prompt"], example["completion"]], sum


STRINGS: dict[str, Callable[[dict[str, Any]], tuple[list[str], Combine]]] = {
    "chat": _chat_strings, "preference": _preference_strings, "prompt_completion": _completion_strings,
}


def allowed_formats(spec: ModelSpec) -> tuple[str, ...]:
    return ("prompt_completion",) if spec.format == "prompt_completion" else ("chat", "preference")


def validate_lines(lines: Iterable[bytes | str], spec: ModelSpec, counter: TokenCounter,
                   *, limit: int | None = None, price_per_1m: float | None = None,
                   n_epochs: int | None = None, fmt: FileFormat | None = None) -> Report:
    """Validate JSONL lines (1-based line numbers in the report) for `spec`'s format and limits.

    `fmt` fixes the line format; by default it is the model's for completion models, else the format of
    the first line that parses. A line of a format the model cannot train on is `wrong_format_for_model`.
    """
    report = _check_lines(lines, spec, counter, limit=limit, fmt=fmt)
    return _finish(report, spec, price_per_1m, n_epochs)


def _check_lines(lines: Iterable[bytes | str], spec: ModelSpec, counter: TokenCounter, *, limit: int | None,
                 fmt: FileFormat | None) -> Report:
    """Checks and token counts of some lines, numbered from 1."""
    report = Report(limit=limit or spec.max_tokens_per_example)
    if fmt is None and spec.format == "prompt_completion":
        fmt = "prompt_completion"
    report.format = fmt
    pending: list[tuple[int, list[str], Combine]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        report.examples += 1
        try:
            example = orjson.loads(line)
        except (orjson.JSONDecodeError, RecursionError):
            report.add_error("invalid_json", number)
            continue
        detected = detect_format(example)
        if report.format is None:
            report.format = detected
        if isinstance(example, dict) and detected not in allowed_formats(spec):
            report.add_error("wrong_format_for_model", number)
            continue
        errors = CHECKS[report.format](example)
        for category in sorted(errors):
            report.add_error(category, number)
        if not errors:
            pending.append((number, *STRINGS[report.format](example)))
            if len(pending) >= COUNT_BATCH:
                _count(pending, counter, report)
                pending.clear()
    _count(pending, counter, report)
    return report


def _finish(report: Report, spec: ModelSpec, price_per_1m: float | None, n_epochs: int | None) -> Report:
    if report.examples < MIN_EXAMPLES:
        report.add_error("insufficient_examples", 0)
    report.n_epochs = n_epochs or estimate.default_epochs(report.examples)
    report.billed_tokens = estimate.billed_tokens(report.tokens, report.limit, report.n_epochs)
    report.estimated_cost_usd = estimate.cost_usd(report.billed_tokens, price_per_1m or spec.price_per_1m_training_tokens)
    return report


SHORT = 256  # strings up to this long (roles, system prompts, questions) repeat; longer ones rarely do


def _count(pending: list[tuple[int, list[str], Combine]], counter: TokenCounter, report: Report) -> None:
    """Count the batch's strings, each distinct short one once, then total each example. Long
    strings are counted as they come: hashing each to find the rare repeat costs more than it saves."""
    distinct = dict.fromkeys(s for _, strings, _ in pending for s in strings if len(s) <= SHORT)
    long = [s for _, strings, _ in pending for s in strings if len(s) > SHORT]
    counted = counter.texts([*distinct, *long])
    counts = dict(zip(distinct, counted))
    long_counts = iter(counted[len(distinct):])
    for number, strings, combine in pending:
        tokens = combine([counts[s] if len(s) <= SHORT else next(long_counts) for s in strings])
        report.tokens.append(tokens)
        if tokens > report.limit:
            report.add_error("too_many_tokens", number)


PARALLEL_BYTES = 32 << 20  # files larger than this are checked by one process per core


def validate_file(path: Path, spec: ModelSpec, counter: TokenCounter, *, limit: int | None = None,
                  price_per_1m: float | None = None, n_epochs: int | None = None,
                  fmt: FileFormat | None = None, processes: int | None = None) -> Report:
    """Validate a JSONL file. A large one is cut at line boundaries into one part per usable core, each
    checked and counted in its own process (parsing and checking hold the GIL; only encoding releases it)."""
    path = Path(path)
    processes = processes or usable_cores()
    if processes < 2 or path.stat().st_size < PARALLEL_BYTES:
        with open(path, "rb") as f:
            return validate_lines(f, spec, counter, limit=limit, price_per_1m=price_per_1m, n_epochs=n_epochs,
                                  fmt=fmt)
    if fmt is None and spec.format != "prompt_completion":
        with open(path, "rb") as f:
            first = next((line for line in f if line.strip()), b"")
        try:
            fmt = detect_format(orjson.loads(first))
        except (orjson.JSONDecodeError, RecursionError):
            fmt = None
    parts = _parts(path, processes)
    context = _pool_context()
    if context.get_start_method() == "fork":
        counter_for(counter.name)  # loaded once here, inherited by every part's process instead of read by each
    with ProcessPoolExecutor(len(parts), mp_context=context) as pool:
        done = list(pool.map(_check_part, [(str(path), start, end, spec, limit, fmt) for start, end in parts]))
    report = Report(limit=done[0][0].limit, format=fmt or done[0][0].format)
    before = 0  # lines in the parts before this one: a part numbers its lines from 1
    for part, lines_in_part in done:
        report.examples += part.examples
        report.tokens += part.tokens
        for category, n in part.errors.items():
            report.errors[category] += n
            lines = report.first_lines.setdefault(category, [])
            lines += [before + line for line in part.first_lines[category] if len(lines) < FIRST_LINES]
        before += lines_in_part
    return _finish(report, spec, price_per_1m, n_epochs)


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, as `taskset` or a container sets it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _pool_context() -> multiprocessing.context.BaseContext:
    """fork where the platform has it: a part's process starts in milliseconds with the encoding already
    loaded, where a spawned one imports the package and reads the encoding file again (about a second)."""
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    return multiprocessing.get_context(method)


def _parts(path: Path, n: int) -> list[tuple[int, int]]:
    """(start byte, end byte) of up to `n` parts of about equal size, each cut after a newline."""
    size = path.stat().st_size
    cuts = [0]
    with open(path, "rb") as f:
        for i in range(1, n):
            f.seek(max(cuts[-1], size * i // n))
            f.readline()
            cuts.append(min(f.tell(), size))
    cuts.append(size)
    return [(start, end) for start, end in zip(cuts, cuts[1:]) if end > start]


def _check_part(job: tuple[str, int, int, ModelSpec, int | None, FileFormat | None]) -> tuple[Report, int]:
    """The report of one part, its lines numbered from 1, and how many lines it has (its newlines: every
    part but the last ends with one), counted here, in parallel, rather than in a pass before the split."""
    path, start, end, spec, limit, fmt = job  # the spec itself: a model named in config is in no registry
    with open(path, "rb") as f:
        f.seek(start)
        report = _check_lines(_lines_of(f, end - start), spec, TokenCounter(spec.encoding, threads=1),
                              limit=limit, fmt=fmt)
        f.seek(start)
        lines, remaining = 0, end - start
        while remaining > 0:
            block = f.read(min(remaining, 1 << 24))
            lines += block.count(b"\n")
            remaining -= len(block)
    return report, lines


def _lines_of(f: BinaryIO, size: int) -> Iterator[bytes]:
    """The lines of the next `size` bytes of `f`, read as they are checked (`size` ends at a line's end)."""
    for line in f:
        yield line
        size -= len(line)
        if size <= 0:
            return


class CheckFormat(Stage):
    """Every example must pass the same format checks `validate` applies to a file."""

    name = "format"

    def __init__(self, fmt: Format = "chat"):
        self.fmt = fmt

    def __call__(self, examples: Iterable[Example], log: StageLog) -> Iterator[Example]:
        for example in examples:
            errors = check_example(example.record(self.fmt), self.fmt)
            if errors:
                log.drop(example, "invalid_format", ", ".join(sorted(errors)))
            else:
                yield example
