"""The scores `evaluate --set` gives an answer, and the bootstrap interval of a mean.

chrF (character n-gram F-score, sacrebleu's sentence_chrf, scaled to 0–1) is the lexical score that works
for Korean: 설정은 and 설정을 share their characters though not their word. Token F1 over \\w+ words is kept
for comparison with the earlier reports. On the refusal set an answer scores 1 when it declines.
"""

from __future__ import annotations

import random
import re
from typing import Sequence

from finetune.evaluate import similarity

_DECLINE = re.compile(r"not sure|don't know|do not know|does not cover|doesn't cover|not covered|cannot find|"
                      r"can't find|no information|모르|알 수 없|(?:정보|내용|자료)(?:이|가|는|은)? 없|다루지 않|나와 있지 않|"
                      r"찾을 수 없", re.I)


def token_f1(answer: str, reference: str) -> float:
    return similarity(answer, reference)


def chrf(answer: str, reference: str) -> float:
    """chrF of the answer against the reference, 0–1."""
    from sacrebleu.metrics import CHRF

    if not answer.strip() or not reference.strip():
        return float(answer.strip() == reference.strip())
    return CHRF().sentence_score(answer, [reference]).score / 100


def declines(answer: str) -> bool:
    """Whether the answer declines (says it does not know, or that the documentation does not cover it)."""
    return bool(_DECLINE.search(answer))


def bootstrap_interval(values: Sequence[float], rounds: int = 1000, seed: int = 0) -> tuple[float, float]:
    """The 95 % percentile bootstrap interval of the mean of `values` (fixed seed: the report is reproducible)."""
    if not values:
        return (0.0, 0.0)
    rng, n = random.Random(seed), len(values)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(rounds))
    return (means[int(0.025 * rounds)], means[min(rounds - 1, int(0.975 * rounds))])
