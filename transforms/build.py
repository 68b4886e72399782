"""`build`: stored documents → examples → dedup → split → checked → a new dataset version with its manifest.

Streams from the SQLite state to the files: memory does not grow with the number of documents beyond
the small per-example bookkeeping (token counts, dedup keys).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

from configs import Config
from crawlers.store import PageStore, state_path
from transforms import estimate, model_registry
from transforms.compose import ComposeExamples
from transforms.dedup import ExactDedup
from transforms.example import Example
from transforms.split import AssignSplit
from transforms.stage import Stage, StageLog, run_stages
from transforms.tokens import TokenCounter
from transforms.validate import MIN_EXAMPLES, check_chat
from transforms.write import DatasetWriter, resolve_version


class BuildError(RuntimeError):
    """The dataset cannot be built from what is stored."""


class CheckFormat(Stage):
    """Every example must pass the same format checks `validate` applies to a file."""

    name = "format"

    def __call__(self, examples: Iterable[Example], log: StageLog) -> Iterator[Example]:
        for example in examples:
            errors = check_chat(example.record())
            if errors:
                log.drop(example, "invalid_format", ", ".join(sorted(errors)))
            else:
                yield example


@dataclass
class BuildResult:
    version_dir: Path
    manifest: dict[str, Any]
    unchanged: bool
    warnings: list[str] = field(default_factory=list)


def datasets_root(config: Config) -> Path:
    return Path(config.output_dir) / "datasets" / config.dataset.name


def config_hash(config: Config) -> str:
    return hashlib.sha256(config.model_dump_json().encode("utf-8")).hexdigest()


def build(config: Config) -> BuildResult:
    """Build a new dataset version from the crawl state (or report that it equals the latest one)."""
    spec, warnings = model_registry.check(config.model)
    state = state_path(config.output_dir)
    if not state.exists():
        raise BuildError(f"no crawl state at {state}; run `python pipeline.py crawl` with this config first")
    counter = TokenCounter(spec.encoding)
    ds = config.dataset
    stages: list[Stage] = [
        ComposeExamples(counter, ds.system_prompt, ds.user_templates, config.token_limit),
        ExactDedup(),
        AssignSplit(ds.test_fraction, ds.seed),
        CheckFormat(),
    ]
    root = datasets_root(config)
    with PageStore(state) as store, DatasetWriter(root) as out:
        examples, logs = run_stages(out.tap_documents(store.documents()), stages, on_drop=out.dropped)
        for example in examples:
            out.add(example)
        if out.documents == 0:
            raise BuildError(f"the crawl state {state} holds no documents; run `python pipeline.py crawl` first")
        n_train, n_test = len(out.tokens["train"]), len(out.tokens["test"])
        if n_train < MIN_EXAMPLES:
            raise BuildError(
                f"the train split would hold {n_train} examples, fewer than the {MIN_EXAMPLES} OpenAI requires; "
                "crawl more pages, add user_templates, or lower dataset.test_fraction"
            )
        if n_test == 0 and ds.test_fraction > 0:
            warnings.append("the test split is empty; raise dataset.test_fraction or crawl more pages")
        n_epochs = estimate.default_epochs(n_train)
        billed = estimate.billed_tokens(out.tokens["train"], config.token_limit, n_epochs)
        price = config.price_per_1m_tokens or spec.price_per_1m_training_tokens
        hashes = out.file_hashes()
        digest = config_hash(config)
        latest = resolve_version(root)
        if out.same_as(latest, hashes, digest):
            manifest = _read_manifest(latest)
            return BuildResult(latest, manifest, unchanged=True, warnings=warnings)
        dropped: Counter = Counter()
        for log in logs:
            dropped.update(log.dropped)
        all_tokens = out.tokens["train"] + out.tokens["test"]
        manifest = {
            "version": None,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "dataset": ds.name,
            "model": spec.name,
            "config_hash": digest,
            "config": config.model_dump(mode="json"),
            "counts": {
                "documents": out.documents,
                "examples": n_train + n_test,
                "train": n_train,
                "test": n_test,
                "dropped": dict(sorted(dropped.items())),
            },
            "stages": {log.name: log.as_dict() for log in logs},
            "tokens": {
                "total": sum(all_tokens),
                "train": sum(out.tokens["train"]),
                "test": sum(out.tokens["test"]),
                "max_example": max(all_tokens, default=0),
                "limit": config.token_limit,
            },
            "n_epochs": n_epochs,
            "billed_tokens": billed,
            "estimated_cost_usd": estimate.cost_usd(billed, price),
            "warnings": warnings,
            "files": hashes,
        }
        version = out.commit(manifest)
    return BuildResult(version, manifest, unchanged=False, warnings=warnings)


def _read_manifest(version: Path) -> dict[str, Any]:
    return json.loads((version / "manifest.json").read_text(encoding="utf-8"))
