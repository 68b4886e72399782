"""Chat examples → token ids and a loss mask, laid out by the model's own chat template.

The mask follows OpenAI's rule for the `messages` format: every assistant message is trained unless it carries
`weight: 0`; system, user and tool messages never are. A trained message's span runs from where its generation
prompt ends to the end of the message as the template renders it (its end-of-turn token included, so the model
learns to stop). The spans are found by rendering the conversation up to each assistant message, which needs a
template that renders earlier turns the same whatever follows; one that does not is refused with the reason, and
so is one that renders a trained assistant message as no tokens (the template named with its sha256).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from finetune.backend import FinetuneError

KEPT_KEYS = ("role", "content", "name", "tool_calls", "tool_call_id")


class TemplateError(FinetuneError):
    """The chat template cannot lay out the examples with a stable prefix."""


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    assistant_masks: list[int]  # 1 where the token is trained


def text_of(content: Any) -> Any:
    """OpenAI allows content as a list of text parts; templates expect a string."""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "" if content is None else content


def template_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages as a chat template expects them: no `weight`, string content."""
    out = []
    for m in messages:
        clean = {k: m[k] for k in KEPT_KEYS if k in m and m[k] is not None}
        clean["content"] = text_of(m.get("content"))
        out.append(clean)
    return out


def is_trained(message: dict[str, Any]) -> bool:
    return message.get("role") == "assistant" and message.get("weight", 1) != 0


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def encode(tokenizer: Any, example: dict[str, Any]) -> Encoded:
    messages = example["messages"]
    tools = example.get("tools") or None

    def render(upto: int, generation_prompt: bool) -> list[int]:
        return list(tokenizer.apply_chat_template(template_messages(messages[:upto]), tools=tools,
                                                  add_generation_prompt=generation_prompt, tokenize=True,
                                                  return_dict=True)["input_ids"])

    full = render(len(messages), False)
    mask = [0] * len(full)
    for i, message in enumerate(messages):
        if not is_trained(message):
            continue
        through = render(i + 1, False)
        if full[:len(through)] != through:
            raise TemplateError(
                "the chat template renders earlier turns differently once later turns follow (message "
                f"{i + 1} of a {len(messages)}-message example), so the trained spans cannot be found; use "
                "single-turn examples (dataset.turns_per_example: 1) or a model whose template keeps earlier turns"
            )
        start = common_prefix(render(i, True), through)
        if start >= len(through):
            from finetune.local.pins import template_label

            raise TemplateError(
                f"{template_label(tokenizer)} renders assistant message {i + 1} of a {len(messages)}-message example "
                "as no tokens after its generation prompt, so nothing of it would be trained (the empty mask TRL's "
                "assistant-only loss gives a template without {% generation %} markers); use a template that "
                "renders assistant turns"
            )
        for k in range(start, len(through)):
            mask[k] = 1
    return Encoded(full, mask)
