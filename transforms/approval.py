"""The one approval gate: `approve VERSION` records a person's approval, bound to the sha256 of the version's
manifest (a version changed afterwards is not approved); fine-tuning calls `check_approval`."""

from __future__ import annotations

import getpass
import hashlib
import json
from contextlib import closing
from pathlib import Path
from typing import Any

from base.errors import Crawl2TuneError
from base.state import now, state_path
from transforms.build import datasets_root
from transforms.review_state import ReviewError, open_state
from transforms.version import DatasetVersion, read_manifest, resolve as resolve_version


class NotApproved(Crawl2TuneError, RuntimeError):
    """Fine-tuning was asked for a dataset version nobody approved (with finetune.require_approval)."""


def manifest_sha256(version_dir: Path) -> str:
    return hashlib.sha256((Path(version_dir) / "manifest.json").read_bytes()).hexdigest()


def approve(state: Path, version_dir: Path, by: str | None = None) -> dict[str, Any]:
    """Record the approval of a version in the state and beside it (approval.json); returns the record."""
    version_dir = Path(version_dir)
    manifest = read_manifest(version_dir)
    record = {"dataset": manifest.dataset, "version": manifest.version,
              "manifest_sha256": manifest_sha256(version_dir), "approved_at": now("seconds"),
              "approved_by": by or _user()}
    with closing(open_state(state)) as db:
        db.execute("INSERT OR REPLACE INTO approvals VALUES (:dataset, :version, :manifest_sha256, :approved_at, "
                   ":approved_by)", record)
    (version_dir / "approval.json").write_text(json.dumps(record, ensure_ascii=False, indent=2) + "\n",
                                               encoding="utf-8")
    return record


def _user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


def approval_of(state: Path, version_dir: Path) -> dict[str, Any] | None:
    """The approval record of a version, if one was made for exactly its current manifest."""
    version_dir = Path(version_dir)
    if not Path(state).exists() or not (version_dir / "manifest.json").exists():
        return None
    manifest = read_manifest(version_dir)
    with closing(open_state(state)) as db:
        row = db.execute("SELECT manifest_sha256, approved_at, approved_by FROM approvals "
                         "WHERE dataset = ? AND version = ?", (manifest.dataset, manifest.version)).fetchone()
    if row is None or row[0] != manifest_sha256(version_dir):
        return None
    return {"dataset": manifest.dataset, "version": manifest.version, "manifest_sha256": row[0],
            "approved_at": row[1], "approved_by": row[2]}


def resolve(config: Any, version: str | Path = "latest") -> DatasetVersion:
    """`version` ('v0003', 'latest' or a path) of the config's dataset, with its manifest; raises ReviewError."""
    root = datasets_root(config)
    found = resolve_version(root, version)
    if found is None or not found.manifest_path.exists():
        raise ReviewError(f"no dataset version {version!r} under {root}; run `python pipeline.py build` first "
                          "or name one of the v000N folders there")
    return found


def is_approved(config: Any, version: str | Path = "latest") -> bool:
    """True when `version` of the config's dataset was approved with `approve` and has not changed since."""
    try:
        version_dir = resolve(config, version).dir
    except ReviewError:
        return False
    return approval_of(state_path(config.output_dir), version_dir) is not None


def check_approval(config: Any, version: str | Path = "latest", label: str | None = None) -> Path:
    """The version's folder; with finetune.require_approval, raises NotApproved (with the command to run) unless
    a person approved exactly this version."""
    version_dir = resolve(config, version).dir
    if config.finetune.require_approval and not is_approved(config, version_dir):
        raise NotApproved(
            f"{label or config.dataset.name + ' ' + version_dir.name} is not approved and finetune.require_approval "
            f"is on; review {version_dir / 'report.html'}, then run `python pipeline.py approve {version_dir.name}`; "
            "nothing was uploaded"
        )
    return version_dir
