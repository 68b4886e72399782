"""Train/test split by document, stable across re-crawls: a document's side depends on its URL and the seed."""

from __future__ import annotations

import hashlib
from typing import Iterable, Iterator

from transforms.example import Example
from transforms.stage import Stage, StageLog


def position(url: str, seed: int) -> float:
    """A number in [0, 1) fixed by URL and seed: below `test_fraction` means test."""
    digest = hashlib.sha256(f"{seed}\x00{url}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class AssignSplit(Stage):
    name = "split"

    def __init__(self, test_fraction: float, seed: int):
        self.test_fraction = test_fraction
        self.seed = seed

    def __call__(self, examples: Iterable[Example], log: StageLog) -> Iterator[Example]:
        for example in examples:
            side = "test" if position(example.url, self.seed) < self.test_fraction else "train"
            yield example.model_copy(update={"split": side})
