"""A dataset version on disk: its folder, its files and its manifest.json, typed; `resolve` finds one by name,
`latest` or folder, and `read_manifest`/`write_manifest` are the one reader and the one (atomic) writer.

Every manifest field has a default, so a version written by an earlier build (no `format`, `pii`, `dedup`,
`review`, `split`, `fraction`, `quality` or `crawl` yet) still loads, and a folder without a manifest loads as
an empty one.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from transforms.formats import Format

SPLITS = ("train", "test")
RECALL_FILE = "eval_recall.jsonl"  # generated builds only: the held-out paraphrases, never trained on
PREFERENCE_FILE = "preference.jsonl"  # chat builds with reviewer edits: the edits of train examples as DPO pairs
_VERSION = re.compile(r"^v(\d{4,})$")


class Manifest(BaseModel):
    """manifest.json: what a version holds and how it was made."""

    model_config = ConfigDict(extra="forbid")

    version: str | None = Field(None, description="the version's name, `v0001`…")
    created_at: str | None = Field(None, description="when it was built (UTC, ISO 8601)")
    dataset: str | None = Field(None, description="`dataset.name`")
    model: str | None = Field(None, description="the model it was built for")
    format: Format | None = Field(None, description="the lines' format: `chat` or `prompt_completion`; absent "
                                                    "before builds had formats (chat)")
    config_hash: str | None = Field(None, description="sha256 of the settings that decide the content "
                                                      "(`model`, `price_per_1m_tokens`, `dataset` less `quality`)")
    config: dict[str, Any] = Field({}, description="the whole resolved config")
    counts: dict[str, Any] = Field({}, description="documents, examples, train, test, dropped per reason, "
                                                   "review exclusions and edits")
    stages: dict[str, Any] = Field({}, description="per stage: in, out, dropped per reason")
    tokens: dict[str, Any] = Field({}, description="total, train, test, max_example, limit")
    n_epochs: int | None = Field(None, description="the epochs OpenAI's default rule gives")
    billed_tokens: int | None = Field(None, description="Σ min(limit, tokens) × epochs over train")
    estimated_cost_usd: float | None = Field(None, description="billed tokens × price")
    pii: dict[str, Any] = Field({}, description="mode and what was found, per kind")
    dedup: dict[str, Any] = Field({}, description="duplicates dropped, with pairs")
    review: dict[str, Any] = Field({}, description="stored decisions applied, excluded, edited, unmatched")
    split: dict[str, Any] = Field({}, description="test_fraction, seed, stratify")
    fraction: dict[str, Any] = Field({}, description="value, documents kept, examples outside it")
    warnings: list[str] = Field([], description="the build's warnings")
    diff: dict[str, Any] = Field({}, description="against the previous version: its name, examples added, "
                                                  "removed and changed")
    quality: dict[str, Any] = Field({}, description="the data-quality checks, see reviewing a dataset")
    crawl: dict[str, Any] = Field({}, description="per source: the latest crawl's responses by status, drops "
                                                  "by reason, bytes, new/changed/unchanged/removed URLs")
    generation: dict[str, Any] = Field({}, description="generated builds: provider, generator model, questions "
                                                       "per style, recall examples and file, cost of generating")
    lineage: dict[str, Any] = Field({}, description="a version of a model's answers (`evaluate --save-dataset`): "
                                                    "the model that answered, when, with which settings, from "
                                                    "which version")
    files: dict[str, str] = Field({}, description="sha256 of every file")

    @property
    def fraction_value(self) -> float:
        """The share of documents the version was built from; 1 for a full build."""
        return float(self.fraction.get("value", 1.0))


class DatasetVersion(BaseModel):
    """One version folder and its manifest, as review, launch, export and the CLI use it."""

    model_config = ConfigDict(frozen=True)

    dir: Path
    manifest: Manifest = Manifest()

    @property
    def name(self) -> str:
        return self.manifest.dataset or self.dir.parent.name

    @property
    def version(self) -> str:
        return self.manifest.version or self.dir.name

    @property
    def train(self) -> Path:
        return self.dir / "train.jsonl"

    @property
    def test(self) -> Path:
        return self.dir / "test.jsonl"

    @property
    def preference(self) -> Path:
        return self.dir / PREFERENCE_FILE

    @property
    def manifest_path(self) -> Path:
        return self.dir / "manifest.json"

    @property
    def fraction(self) -> float:
        return self.manifest.fraction_value

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}" + (f" (fraction {self.fraction:g})" if self.fraction < 1 else "")


def read_manifest(version_dir: Path) -> Manifest:
    """The folder's manifest.json; an empty manifest when there is none."""
    path = Path(version_dir) / "manifest.json"
    return Manifest.model_validate_json(path.read_bytes()) if path.is_file() else Manifest()


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_manifest(version_dir: Path, manifest: Manifest) -> None:
    """Write manifest.json atomically: the fields that were set (an older reader sees the keys it knows)."""
    write_json_atomic(Path(version_dir) / "manifest.json", manifest.model_dump(mode="json", exclude_unset=True))


def versions(root: Path) -> list[Path]:
    found = [p for p in root.glob("v*") if p.is_dir() and _VERSION.match(p.name)]
    return sorted(found, key=lambda p: int(p.name[1:]))


def resolve(root: Path, which: str | Path = "latest") -> DatasetVersion | None:
    """A version by name ('v0003'), 'latest', or a folder, with its manifest; None when there is none."""
    which = str(which)
    if which == "latest":
        link = root / "latest"
        found = (root / os.readlink(link)) if link.is_symlink() else (versions(root) or [None])[-1]
    elif Path(which).is_dir():
        found = Path(which)
    else:
        found = root / which if (root / which).is_dir() else None
    return None if found is None else DatasetVersion(dir=found.resolve(), manifest=read_manifest(found))
