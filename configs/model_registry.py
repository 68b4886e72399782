"""The fine-tunable models we know: encoding, per-example token limit, training price, format, shutdown date.

One table, one lookup. `check()` refuses a retired model with its date and returns warnings for a model
that retires soon and for OpenAI's end of new fine-tuning jobs, so every command speaks with one voice. A
fine-tuned model (`ft:<base>:<org>:<suffix>:<id>`, continued fine-tuning) is judged by its base's spec and
dates, and the messages name that base.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Iterable, Literal

from base.errors import Crawl2TuneError

Format = Literal["chat", "prompt_completion"]  # the training-file formats a model takes (transforms.formats)

NEW_JOBS_END = date(2027, 1, 6)  # OpenAI accepts no new fine-tuning jobs from this day on
WARN_DAYS = 60
DEFAULT_MODEL = "gpt-4o-mini-2024-07-18"
# The fewest train examples each fine-tuning provider takes (finetune.provider); the local trainer has no minimum.
MIN_TRAIN_EXAMPLES = {"openai": 10, "azure": 10, "together": 1, "fireworks": 3, "local": 0}  # per provider
# What to do about a train split below a provider's minimum (`build` warns, `finetune` refuses with it).
FEW_EXAMPLES_REMEDY = ("crawl more pages, raise dataset.questions_per_document, use granularity: section, "
                       "or lower dataset.test_fraction")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    encoding: str
    max_tokens_per_example: int
    price_per_1m_training_tokens: float  # USD, OpenAI's published training price
    format: Format
    shutdown: date | None


_RETIRED_2026 = date(2026, 10, 23)
_GPT4O_GPT41_SHUTDOWN = date(2027, 1, 14)

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("gpt-4o-mini-2024-07-18", "o200k_base", 65_536, 3.00, "chat", _GPT4O_GPT41_SHUTDOWN),
        ModelSpec("gpt-4o-2024-08-06", "o200k_base", 65_536, 25.00, "chat", _GPT4O_GPT41_SHUTDOWN),
        ModelSpec("gpt-4.1-2025-04-14", "o200k_base", 65_536, 25.00, "chat", _GPT4O_GPT41_SHUTDOWN),
        ModelSpec("gpt-4.1-mini-2025-04-14", "o200k_base", 65_536, 5.00, "chat", _GPT4O_GPT41_SHUTDOWN),
        ModelSpec("gpt-4.1-nano-2025-04-14", "o200k_base", 65_536, 1.50, "chat", _RETIRED_2026),
        ModelSpec("gpt-3.5-turbo-0125", "cl100k_base", 16_385, 8.00, "chat", _RETIRED_2026),
        ModelSpec("gpt-3.5-turbo-1106", "cl100k_base", 16_385, 8.00, "chat", _RETIRED_2026),
        ModelSpec("gpt-3.5-turbo-0613", "cl100k_base", 4_096, 8.00, "chat", _RETIRED_2026),
        ModelSpec("gpt-4-0613", "cl100k_base", 8_192, 90.00, "chat", _RETIRED_2026),
        ModelSpec("babbage-002", "cl100k_base", 16_384, 0.40, "prompt_completion", None),
        ModelSpec("davinci-002", "cl100k_base", 16_384, 6.00, "prompt_completion", None),
    )
}

ALIASES = {
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4o": "gpt-4o-2024-08-06",
    "gpt-4.1": "gpt-4.1-2025-04-14",
    "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
    "gpt-4.1-nano": "gpt-4.1-nano-2025-04-14",
    "gpt-3.5-turbo": "gpt-3.5-turbo-0125",
    "gpt-4": "gpt-4-0613",
}

_FINE_TUNED = re.compile(r"^ft:(?P<base>[^:]+):")
_CHECKPOINT = re.compile(r":ckpt-step-\d+$")


class ModelError(Crawl2TuneError, ValueError):
    """The model is unknown or can no longer be fine-tuned."""


def today() -> date:
    """The clock the registry judges dates by (tests replace it)."""
    return date.today()


def base_of(name: str) -> str | None:
    """`ft:<base>:…` (a fine-tuned model or one of its checkpoints) → <base> as written; None for a base model."""
    match = _FINE_TUNED.match(name)
    return match.group("base") if match else None


def without_checkpoint(name: str) -> str:
    """`ft:…:ckpt-step-N` → the job's final model `ft:…`, which is what a job record knows it by."""
    return _CHECKPOINT.sub("", name)


def lookup(name: str, named: Iterable[ModelSpec] = ()) -> ModelSpec:
    """The spec for a model name, alias or `ft:<base>:…` fine-tune (which inherits its base's spec).

    `named` are the base models a config names itself (`finetune.base_models`): they come first."""
    own = next((spec for spec in named if spec.name == name), None)
    if own is not None:
        return own
    base = base_of(name) or name
    base = ALIASES.get(base, base)
    spec = MODELS.get(base)
    if spec is None:
        raise ModelError(
            f"unknown model {name!r}; use one of: {', '.join(sorted(MODELS))} (or an ft:<base>:… model), or name it "
            "with its context limit in finetune.base_models"
        )
    return spec


def check(name: str, *, on: date | None = None, hosted: bool = True,
          named: Iterable[ModelSpec] = ()) -> tuple[ModelSpec, list[str]]:
    """Spec and warnings for fine-tuning `name` on a date; raises ModelError for a retired model.

    With `hosted=False` (a dataset trained elsewhere, e.g. the local backend) the model only lends its
    encoding, limit and format: OpenAI's dates neither refuse nor warn. Neither do they for a model the
    config names itself (`named`): it is some other service's, with dates of its own.
    """
    on = on or today()
    named = tuple(named)
    spec = lookup(name, named)
    if not hosted or spec in named:
        return spec, []
    # a fine-tune lives and dies with its base: the dates and the messages are the base's
    subject = f"base model {spec.name} of {name}" if base_of(name) else f"model {spec.name}"
    if spec.shutdown and spec.shutdown <= on:
        alive = [m.name for m in MODELS.values() if not m.shutdown or m.shutdown > on]
        advice = f"choose one of: {', '.join(alive)}" if alive else "use a non-OpenAI backend"
        raise ModelError(f"{subject} was retired on {spec.shutdown.isoformat()}; {advice}")
    warnings = []
    if spec.shutdown and (spec.shutdown - on).days <= WARN_DAYS:
        warnings.append(
            f"{subject} retires on {spec.shutdown.isoformat()} "
            f"({(spec.shutdown - on).days} days left); plan a move to another model or backend"
        )
    if on >= NEW_JOBS_END:
        warnings.append(
            f"OpenAI accepts no new fine-tuning jobs since {NEW_JOBS_END.isoformat()}; "
            "build datasets for another backend"
        )
    elif (NEW_JOBS_END - on).days <= WARN_DAYS:
        warnings.append(
            f"OpenAI accepts no new fine-tuning jobs from {NEW_JOBS_END.isoformat()} "
            f"({(NEW_JOBS_END - on).days} days left)"
        )
    return spec, warnings


# Inference prices (USD per 1M input, output tokens) of models that generate training pairs (`generate`).
GENERATION_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60), "gpt-4o-mini-2024-07-18": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00), "gpt-4o-2024-08-06": (2.50, 10.00),
    "gpt-4.1": (2.00, 8.00), "gpt-4.1-2025-04-14": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60), "gpt-4.1-mini-2025-04-14": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40), "gpt-4.1-nano-2025-04-14": (0.10, 0.40),
}


def generation_encoding(model: str) -> str | None:
    """The tiktoken encoding of an OpenAI chat model by its name; None for another vendor's (counts estimated)."""
    if re.match(r"^(gpt-4o|gpt-4\.1|gpt-5|o\d)", model):
        return "o200k_base"
    if re.match(r"^(gpt-3\.5|gpt-4)(-|$)", model):
        return "cl100k_base"
    return None
