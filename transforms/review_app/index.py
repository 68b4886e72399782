"""A version's examples in one SQLite file with indexes and full-text search, built once per manifest hash, so a
page of a 50,000-example version is one indexed query instead of a read of every JSONL file."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from transforms.approval import manifest_sha256
from transforms.pii import PiiScanner
from transforms.version import read_manifest

FIXED = ("split", "category", "source")
# metadata keys never offered as filters: ids, free text, numbers of every example
_NOT_FILTERS = {"example_id", "document_id", "url", "title", "section", "tokens", "answer_tokens", "line",
                "language", "review", *FIXED}
_MAX_FILTER_VALUES = 50
SCHEMA = """
CREATE TABLE examples (n INTEGER PRIMARY KEY, example_id TEXT UNIQUE, split TEXT, category TEXT, source TEXT,
    url TEXT, title TEXT, section TEXT, question TEXT, answer TEXT, meta TEXT);
CREATE INDEX examples_split ON examples(split, n);
CREATE INDEX examples_category ON examples(category, n);
CREATE INDEX examples_source ON examples(source, n);
CREATE TABLE extra (example_id TEXT, key TEXT, value TEXT);
CREATE INDEX extra_key ON extra(key, value, example_id);
CREATE TABLE documents (document_id TEXT PRIMARY KEY, offset INTEGER);
CREATE VIRTUAL TABLE text USING fts5(question, answer, title, content='examples', content_rowid='n');
"""


def index_path(cache: Path, version_dir: Path) -> Path:
    return Path(cache) / f"{version_dir.parent.name}-{version_dir.name}-{manifest_sha256(version_dir)[:16]}.sqlite"


def open_index(cache: Path, version_dir: Path) -> sqlite3.Connection:
    """The version's index, built on first use (into a temp file renamed into place)."""
    path = index_path(cache, version_dir)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".building")
        tmp.unlink(missing_ok=True)
        _build(tmp, version_dir)
        tmp.rename(path)
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    db.row_factory = sqlite3.Row
    return db


def _last_assistant(record: dict[str, Any]) -> tuple[str, str]:
    if "messages" in record:
        messages = record["messages"]
        question = next((m["content"] for m in messages if m["role"] == "user"), "")
        answer = next((m["content"] for m in reversed(messages) if m["role"] == "assistant"), "")
        return question, answer
    return record.get("prompt", ""), record.get("completion", "")


def _quality_flags(version_dir: Path) -> dict[str, list[str]]:
    """example_id → the data-quality checks whose examples the manifest lists it among (capped per check)."""
    flags: dict[str, list[str]] = {}
    for check, found in (read_manifest(version_dir).quality.get("checks") or {}).items():
        for sample in found.get("examples") or [] if isinstance(found, dict) else []:
            if isinstance(sample, dict) and sample.get("example_id"):
                flags.setdefault(sample["example_id"], []).append(check)
    return flags


def _build(path: Path, version_dir: Path) -> None:
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)
    scanner, flags = PiiScanner(), _quality_flags(version_dir)
    lines = {split: (version_dir / f"{split}.jsonl").open(encoding="utf-8") for split in ("train", "test")}
    try:
        rows, extra = [], []
        with (version_dir / "metadata.jsonl").open(encoding="utf-8") as meta_file:
            for meta_line in meta_file:
                meta = json.loads(meta_line)
                question, answer = _last_assistant(json.loads(lines[meta["split"]].readline()))
                rows.append((meta["example_id"], meta["split"], meta.get("category"), meta.get("source"),
                             meta.get("url"), meta.get("title"), meta.get("section"), question, answer,
                             meta_line))
                ident = meta["example_id"]
                extra += [(ident, "pii_found", kind) for kind in scanner.find(f"{question}\n{answer}")]
                extra += [(ident, "quality_warning", check) for check in flags.get(ident, [])]
                for key, value in meta.items():
                    if key not in _NOT_FILTERS and value is not None and not isinstance(value, dict):
                        for one in value if isinstance(value, list) else [value]:
                            extra.append((meta["example_id"], key, str(one)))
        db.executemany("INSERT INTO examples (example_id, split, category, source, url, title, section, question, "
                       "answer, meta) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        db.executemany("INSERT INTO extra VALUES (?, ?, ?)", extra)
        db.executemany("INSERT OR IGNORE INTO documents VALUES (?, ?)", _document_offsets(version_dir))
        db.execute("INSERT INTO text(text) VALUES ('rebuild')")
        db.commit()
    finally:
        for f in lines.values():
            f.close()
        db.close()


def _document_offsets(version_dir: Path) -> list[tuple[str, int]]:
    offsets, offset = [], 0
    with (version_dir / "documents.jsonl").open("rb") as f:
        for line in f:
            offsets.append((json.loads(line)["document_id"], offset))
            offset += len(line)
    return offsets


def document(db: sqlite3.Connection, version_dir: Path, document_id: str) -> dict[str, Any] | None:
    """The source page of an example, read at its offset in documents.jsonl."""
    row = db.execute("SELECT offset FROM documents WHERE document_id = ?", (document_id,)).fetchone()
    if row is None:
        return None
    with (version_dir / "documents.jsonl").open("rb") as f:
        f.seek(row[0])
        return json.loads(f.readline())


def filter_values(db: sqlite3.Connection) -> dict[str, list[str]]:
    """Every filter the records allow (split, category, source, and any small-valued metadata key such as a
    generated style or a judge score) with its values."""
    found = {key: [r[0] for r in db.execute(f"SELECT DISTINCT {key} FROM examples WHERE {key} IS NOT NULL "
                                            f"ORDER BY 1 LIMIT {_MAX_FILTER_VALUES + 1}")] for key in FIXED}
    for (key,) in db.execute("SELECT DISTINCT key FROM extra ORDER BY 1").fetchall():
        values = [r[0] for r in db.execute("SELECT DISTINCT value FROM extra WHERE key = ? ORDER BY 1 LIMIT ?",
                                           (key, _MAX_FILTER_VALUES + 1))]
        found[key] = values
    return {key: values[:_MAX_FILTER_VALUES] for key, values in found.items() if values}


def query(db: sqlite3.Connection, filters: dict[str, str], search: str, decided: dict[str, str],
          decision: str, page: int, per_page: int) -> tuple[list[sqlite3.Row], int]:
    """One page of examples matching the filters (and the total); `decided` maps example_id → decision kind."""
    where, params = _where(filters, search, decided, decision)
    total = db.execute(f"SELECT count(*) FROM examples e WHERE {where}", params).fetchone()[0]
    rows = db.execute(f"SELECT * FROM examples e WHERE {where} ORDER BY n LIMIT ? OFFSET ?",
                      (*params, per_page, (page - 1) * per_page)).fetchall()
    return rows, total


def matching_ids(db: sqlite3.Connection, filters: dict[str, str], search: str, decided: dict[str, str],
                 decision: str) -> list[tuple[str, str]]:
    """(example_id, url) of every example the filters match: what bulk exclude acts on."""
    where, params = _where(filters, search, decided, decision)
    return db.execute(f"SELECT example_id, url FROM examples e WHERE {where}", params).fetchall()


def _where(filters: dict[str, str], search: str, decided: dict[str, str], decision: str) -> tuple[str, list[Any]]:
    clauses, params = ["1"], []
    for key, value in filters.items():
        if key in FIXED:
            clauses.append(f"e.{key} = ?")
            params.append(value)
        else:
            clauses.append("e.example_id IN (SELECT example_id FROM extra WHERE key = ? AND value = ?)")
            params += [key, value]
    if search.strip():
        clauses.append("e.n IN (SELECT rowid FROM text WHERE text MATCH ?)")
        params.append(" ".join('"' + word.replace('"', '""') + '"' for word in search.split()))
    if decision:
        ids = [i for i, kind in decided.items() if kind == decision] if decision != "none" else list(decided)
        clauses.append(f"e.example_id {'NOT ' if decision == 'none' else ''}IN (SELECT value FROM json_each(?))")
        params.append(json.dumps(ids))  # one parameter however many decisions there are
    return " AND ".join(clauses), params
