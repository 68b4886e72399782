"""What each hosted open-weights service accepts in a training file, checked here before anything is uploaded.

`validate` checks a file against OpenAI's rules; Together and Fireworks differ in roles, `weight`, tools,
preference pairs, file size and example count (their fine-tuning guides). `check_file` reads the file once
and names each rule broken with the first lines that break it.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from configs.model_registry import MIN_TRAIN_EXAMPLES

GB = 1024 ** 3
FIRST_LINES = 3


@dataclass(frozen=True)
class Target:
    name: str
    roles: frozenset[str]
    tools: bool
    preference: bool
    max_bytes: int | None  # None: the service documents no limit on a file's size
    min_examples: int
    max_examples: int | None = None


TARGETS = {
    "together": Target("Together", frozenset({"system", "user", "assistant", "tool"}), tools=True, preference=True,
                       max_bytes=25 * GB, min_examples=MIN_TRAIN_EXAMPLES["together"]),
    "fireworks": Target("Fireworks", frozenset({"system", "user", "assistant"}), tools=False, preference=False,
                        max_bytes=None, min_examples=MIN_TRAIN_EXAMPLES["fireworks"], max_examples=3_000_000),
}


def _message_problems(messages: Any, target: Target) -> list[str]:
    if not isinstance(messages, list) or not messages:
        return ["messages missing or empty"]
    problems = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            problems.append("a message is not an object")
            continue
        if m.get("role") not in target.roles:
            problems.append(f"role {m.get('role')!r} ({target.name} takes {', '.join(sorted(target.roles))})")
        if m.get("role") == "system" and i > 0:
            problems.append("a system message after the first")
        if "weight" in m and m["weight"] not in (0, 1):
            problems.append(f"weight {m['weight']!r} (0 or 1)")
        if ("tool_calls" in m or m.get("role") == "tool") and not target.tools:
            problems.append(f"tool calls ({target.name} trains plain chat only)")
    if not any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages):
        problems.append("no assistant message to train on")
    return problems


def _example_problems(example: Any, target: Target, dpo: bool) -> list[str]:
    if not isinstance(example, dict):
        return ["a line that is not a JSON object"]
    if dpo:
        if set(example) != {"input", "preferred_output", "non_preferred_output"}:
            return ["a preference pair needs exactly input, preferred_output, non_preferred_output"]
        problems = [p for p in _message_problems((example["input"] or {}).get("messages"), target)
                    if p != "no assistant message to train on"]
        for side in ("preferred_output", "non_preferred_output"):
            out = example[side]
            if not (isinstance(out, list) and len(out) == 1 and isinstance(out[0], dict)
                    and out[0].get("role") == "assistant"):
                problems.append(f"{side} must be one assistant message")
        return problems
    if "tools" in example and not target.tools:
        return [f"tools ({target.name} trains plain chat only)"]
    return _message_problems(example.get("messages"), target)


def check_file(provider: str, path: Path, *, dpo: bool = False) -> list[str]:
    """Every rule of `provider` that `path` breaks, each with its count and first lines; [] when it may go."""
    target = TARGETS[provider]
    problems: dict[str, list[int]] = defaultdict(list)
    size = path.stat().st_size
    if target.max_bytes is not None and size > target.max_bytes:
        problems[f"file of {size:,} bytes, over {target.name}'s {target.max_bytes:,}"].append(0)
    if dpo and not target.preference:
        problems[f"preference pairs ({target.name} trains supervised only)"].append(0)
    examples = 0
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            examples += 1
            try:
                example = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                problems["a line that is not UTF-8"].append(number)
                continue
            except json.JSONDecodeError:
                problems["a line that is not JSON"].append(number)
                continue
            for problem in dict.fromkeys(_example_problems(example, target, dpo)):
                problems[problem].append(number)
    if examples < target.min_examples:
        problems[f"{examples} examples, fewer than {target.name}'s {target.min_examples}"].append(0)
    if target.max_examples is not None and examples > target.max_examples:
        problems[f"{examples:,} examples, more than {target.name}'s {target.max_examples:,}"].append(0)
    return [f"{problem} ({len(lines)}×" + (f", lines {', '.join(map(str, lines[:FIRST_LINES]))})" if any(lines)
                                           else ")")
            for problem, lines in problems.items()]
