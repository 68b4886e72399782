"""Write a dataset version atomically: everything goes to a hidden temp folder renamed into place at the end.

Layout: `<datasets>/<name>/v0001/` with train.jsonl, test.jsonl (only keys the API accepts, in the model's
format), metadata.jsonl (the per-example sidecar), documents.jsonl, dropped.jsonl, review.csv, report.html and
manifest.json, and when they have lines eval_recall.jsonl and preference.jsonl; `latest` is a symlink to the newest full version (a fraction build, a subset for scaling
experiments, gets a version number but leaves `latest` alone). An interrupted build leaves only a
`.building-*` folder behind, never a half version.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from array import array
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator

import orjson

from crawlers.document import Document
from transforms.example import Example
from transforms.formats import Format
from transforms.stage import Dropped
from transforms.version import (PREFERENCE_FILE, RECALL_FILE, SPLITS, DatasetVersion, Manifest, read_manifest, versions,
                                write_manifest)

DATA_FILES = ("train.jsonl", "test.jsonl", "metadata.jsonl", "documents.jsonl", "dropped.jsonl")
OPTIONAL_FILES = (RECALL_FILE, PREFERENCE_FILE)


def jsonl(obj: Any) -> bytes:
    """One JSON line: UTF-8 with real characters, no \\uXXXX escapes."""
    return orjson.dumps(obj, option=orjson.OPT_APPEND_NEWLINE)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class DatasetWriter:
    """Collects one version's files in a temp folder; `commit` publishes it, leaving the context discards it."""

    def __init__(self, root: Path, fmt: Format = "chat"):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=self.root))
        self.fmt = fmt
        self.files: dict[str, BinaryIO] = {name: open(self.tmp / name, "wb", buffering=1 << 20) for name in DATA_FILES}
        self.tokens: dict[str, array] = {split: array("l") for split in SPLITS}  # 8 bytes an example
        self.recalled = 0
        self.preferences = 0
        self.documents = 0
        self.committed: Path | None = None

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self._close()
        if self.committed is None:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def _close(self) -> None:
        for f in self.files.values():
            f.close()

    def tap_documents(self, documents: Iterable[Document],
                      keep: Callable[[str], bool] | None = None) -> Iterator[Document]:
        """Pass documents through, writing each (each whose URL `keep` accepts) to documents.jsonl on the way.

        A fraction build passes every document on, since dedup must see them all, but lists only its own."""
        out = self.files["documents.jsonl"]
        for doc in documents:
            if keep is None or keep(doc.url):
                out.write(jsonl({"url": doc.url, "title": doc.title, "category": doc.category, "text": doc.text,
                                 "content_hash": doc.content_hash, "fetched_at": doc.fetched_at,
                                 "source": doc.source, "language": doc.language, "document_id": doc.id}))
                self.documents += 1
            yield doc

    def add(self, example: Example) -> bytes:
        """Write the example to its split and the sidecar; returns its train/test line."""
        assert example.split in SPLITS
        tokens = self.tokens[example.split]
        line = jsonl(example.record(self.fmt))
        self.files[f"{example.split}.jsonl"].write(line)
        self.files["metadata.jsonl"].write(jsonl({**example.metadata(), "line": len(tokens) + 1}))
        tokens.append(example.tokens)
        pair = example.preference() if example.split == "train" and self.fmt == "chat" else None
        if pair is not None:
            self._optional(PREFERENCE_FILE).write(jsonl(pair))
            self.preferences += 1
        return line

    def _optional(self, name: str) -> BinaryIO:
        """An optional data file, opened with its first line."""
        if name not in self.files:
            self.files[name] = open(self.tmp / name, "wb", buffering=1 << 20)
        return self.files[name]

    def recall(self, example: Example) -> None:
        """Write a held-out paraphrase to eval_recall.jsonl (opened with the first one): the train lines' form with
        its `metadata` (what `evaluate --set recall` needs: the source section, the style) in the same line, since
        the file is asked, never trained on; metadata.jsonl stays the sidecar of train and test only."""
        self.recalled += 1
        self._optional(RECALL_FILE).write(jsonl({**example.record(self.fmt), "metadata": example.metadata()}))

    def dropped(self, drop: Dropped) -> None:
        record = drop.record
        ident = {"example_id": record.example_id} if isinstance(record, Example) else {}
        self.files["dropped.jsonl"].write(jsonl({
            "stage": drop.stage, "reason": drop.reason, "detail": drop.detail,
            "url": getattr(record, "url", None), **ident, **drop.data,
        }))

    def file_hashes(self) -> dict[str, str]:
        for f in self.files.values():
            f.flush()
        return {name: sha256_file(self.tmp / name) for name in DATA_FILES + tuple(n for n in self.files if n in OPTIONAL_FILES)}

    @staticmethod
    def same_as(version: DatasetVersion | None, hashes: dict[str, str], config_hash: str) -> bool:
        """Same data files and config as `version` (the report and review sheet are views, not data)."""
        if version is None or not version.manifest_path.exists():
            return False
        old = version.manifest
        old_files = {name: digest for name, digest in old.files.items() if name in DATA_FILES + OPTIONAL_FILES}
        return old_files == hashes and old.config_hash == config_hash

    def find_same(self, hashes: dict[str, str], config_hash: str) -> DatasetVersion | None:
        """The newest version of any number with the same data files and config (a fraction build's reuse)."""
        candidates = (DatasetVersion(dir=v.resolve(), manifest=read_manifest(v)) for v in reversed(versions(self.root)))
        return next((v for v in candidates if self.same_as(v, hashes, config_hash)), None)

    def commit(self, manifest: Manifest, before_publish: Callable[[Path, Manifest], list[str]] | None = None, *,
               latest: bool = True) -> Path:
        """Write the manifest and rename the temp folder to the next version; point `latest` at it (unless
        `latest` is false).

        `before_publish(folder, manifest)` writes files that need the version's name (the report) and
        returns their names; their sha256 join the manifest's `files`.
        """
        self._close()
        existing = versions(self.root)
        number = int(existing[-1].name[1:]) + 1 if existing else 1
        while True:
            target = self.root / f"v{number:04d}"
            manifest.version = target.name
            if before_publish is not None:
                for name in before_publish(self.tmp, manifest):
                    manifest.files[name] = sha256_file(self.tmp / name)
            write_manifest(self.tmp, manifest)
            try:
                os.rename(self.tmp, target)  # atomic; fails if a concurrent build took the number
                break
            except OSError:
                if not target.exists():
                    raise
                number += 1
        self.committed = target
        if not latest:
            return target
        link = self.root / f".latest.{os.getpid()}"
        link.unlink(missing_ok=True)
        link.symlink_to(target.name)
        os.replace(link, self.root / "latest")
        return target
