"""Epochs and cost, by the rule of OpenAI's fine-tuning cookbook."""

from __future__ import annotations

from typing import Iterable

TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
MIN_DEFAULT_EPOCHS = 1
MAX_DEFAULT_EPOCHS = 25


def default_epochs(n_train: int) -> int:
    """3 epochs, adjusted so examples × epochs stays within [100, 25,000] and epochs within [1, 25]."""
    if n_train <= 0:
        return TARGET_EPOCHS
    if n_train * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_DEFAULT_EPOCHS, MIN_TARGET_EXAMPLES // n_train)
    if n_train * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(MIN_DEFAULT_EPOCHS, MAX_TARGET_EXAMPLES // n_train)
    return TARGET_EPOCHS


def billed_tokens(token_counts: Iterable[int], limit: int, n_epochs: int) -> int:
    """Σ min(limit, tokens of example) × epochs: what a job over these examples is charged for."""
    return sum(min(limit, n) for n in token_counts) * n_epochs


def cost_usd(billed: int, price_per_1m: float) -> float:
    return round(billed * price_per_1m / 1_000_000, 4)
