"""Dataset versions: `resolve` by name, `latest` or folder, and manifests of earlier builds still load."""

import json
import os

from transforms.version import resolve

# The manifest of the first builds (git history of transforms/build.py): no format, pii, dedup, review, split,
# fraction, quality or crawl blocks yet.
FIRST_MANIFEST = {
    "version": "v0001", "created_at": "2025-01-02T03:04:05+00:00", "dataset": "guide",
    "model": "gpt-4o-mini-2024-07-18", "config_hash": "ab" * 32, "config": {"model": "gpt-4o-mini-2024-07-18"},
    "counts": {"documents": 3, "examples": 12, "train": 10, "test": 2, "dropped": {"too_short": 1}},
    "stages": {"compose": {"in": 3, "out": 12, "dropped": {}}},
    "tokens": {"total": 1200, "train": 1000, "test": 200, "max_example": 150, "limit": 65536},
    "n_epochs": 10, "billed_tokens": 10000, "estimated_cost_usd": 0.03, "warnings": [],
    "files": {"train.jsonl": "cd" * 32},
}


def test_a_manifest_of_the_first_builds_loads_as_a_full_chat_version(tmp_path):
    folder = tmp_path / "v0001"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps(FIRST_MANIFEST), encoding="utf-8")
    version = resolve(tmp_path, "v0001")
    assert version.dir == folder.resolve()
    assert (version.name, version.version, version.label) == ("guide", "v0001", "guide v0001")
    assert version.fraction == 1.0
    assert version.manifest.format is None and version.manifest.pii == {}
    assert version.manifest.counts["train"] == 10 and version.manifest.n_epochs == 10


def test_resolve_finds_latest_a_name_and_a_folder_and_nothing_else(tmp_path):
    for name in ("v0001", "v0002"):
        (tmp_path / name).mkdir()
    assert resolve(tmp_path).dir.name == "v0002"  # no `latest` link: the highest number
    os.symlink("v0001", tmp_path / "latest")
    assert resolve(tmp_path, "latest").dir.name == "v0001"
    assert resolve(tmp_path, str(tmp_path / "v0002")).version == "v0002"
    assert resolve(tmp_path, "v0003") is None
    assert resolve(tmp_path / "empty") is None


def test_docs_list_every_manifest_field_with_its_description():
    from pathlib import Path

    from transforms.version import Manifest

    docs = (Path(__file__).resolve().parent.parent / "docs" / "dataset.md").read_text(encoding="utf-8")
    section = docs.split("## Manifest fields", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert rows == [f"| `{name}` | {field.description} |" for name, field in Manifest.model_fields.items()]
