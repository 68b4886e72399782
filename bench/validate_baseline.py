"""The baseline of bench/validate_speed.py: a plain serial loop over a chat JSONL file, as one would write it.

json.loads per line, the same checks as `validate` (transforms.validate.check_example), then tiktoken's
`encode` once per message value, one call at a time, totalled with the cookbook's per-message overhead.
Prints `<examples> <errors> <tokens>`.

    python bench/validate_baseline.py FILE
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from configs.model_registry import lookup  # noqa: E402
from transforms.tokens import chat_tokens, get_encoding, message_strings  # noqa: E402
from transforms.validate import check_example  # noqa: E402


def main(path: str) -> None:
    encoding = get_encoding(lookup("gpt-4o-mini-2024-07-18").encoding)
    examples = errors = tokens = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            examples += 1
            example = json.loads(line)
            if check_example(example):
                errors += 1
                continue
            values = names = 0
            for message in example["messages"]:
                for key, text in message_strings(message):
                    values += len(encoding.encode(text, disallowed_special=()))
                    names += key == "name"
            tokens += chat_tokens(len(example["messages"]), values, names)
    print(examples, errors, tokens)


if __name__ == "__main__":
    main(sys.argv[1])
