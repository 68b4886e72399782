"""Human review of a dataset version: review.csv out, decisions back in, and the approval fine-tuning checks.

A reviewer writes `exclude` (or an edited answer) in the `decision` column of a version's review.csv and feeds
it back with `python pipeline.py review apply FILE`. Decisions are stored in the crawl state by example_id,
which depends only on the page's URL, section and question template, so every later build honours them,
also after a re-crawl. `python pipeline.py approve VERSION` records that a person approved a version; the
fine-tuning stage calls `is_approved` (or `require_approved`) when `finetune.require_approval` is true. An
approval is bound to the sha256 of the version's manifest, so a version changed afterwards is not approved.
"""

from __future__ import annotations

import csv
import getpass
import hashlib
import json
import re
import sqlite3
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from transforms.example import Example
from transforms.stage import Stage, StageLog
from base.errors import Crawl2TuneError

SCHEMA = """
CREATE TABLE IF NOT EXISTS review_decisions (
    dataset TEXT NOT NULL,
    example_id TEXT NOT NULL,
    decision TEXT NOT NULL,       -- exclude | edit
    answer TEXT,                  -- the edited answer, for `edit`
    url TEXT,
    source_file TEXT,
    decided_at TEXT NOT NULL,
    PRIMARY KEY (dataset, example_id)
);
CREATE TABLE IF NOT EXISTS approvals (
    dataset TEXT NOT NULL,
    version TEXT NOT NULL,
    manifest_sha256 TEXT NOT NULL,
    approved_at TEXT NOT NULL,
    approved_by TEXT,
    PRIMARY KEY (dataset, version)
);
"""

COLUMNS = ["example_id", "split", "category", "url", "title", "section", "tokens", "question", "answer_excerpt",
           "decision"]
EXCERPT_CHARS = 300
CSV_CHUNK = 2000
EXCLUDE = {"exclude", "제외"}
KEEP = {"keep", "ok", "유지"}  # clears an earlier decision
_COMMAND_LIKE = re.compile(r"^[A-Za-z_-]{1,16}$")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class ReviewError(Crawl2TuneError, ValueError):
    """A review file or approval request cannot be used; the message says what to fix."""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def open_state(state: Path) -> sqlite3.Connection:
    from crawlers.store import connect

    db = connect(Path(state))
    db.executescript(SCHEMA)
    return db


# -- review.csv --------------------------------------------------------------------------------------------

def _cell(text: str | None) -> str:
    """Spreadsheet-safe text: a crawled value starting like a formula is shown, never evaluated."""
    text = text or ""
    return "'" + text if text.startswith(_FORMULA_START) else text


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """The start of `text`, runs of whitespace as one space, cut to `limit` characters. Only the start is read:
    the first `limit` + 25 % characters nearly always fill it (flattening a prefix gives a prefix of the
    flattened text), else up to three times `limit`."""
    for window in (limit + limit // 4, limit * 3):
        flat = " ".join(text[:window].split())
        if len(flat) > limit:
            return flat[: limit - 1] + "…"
    return flat


class ReviewSheet:
    """review.csv, one row per example, written in chunks with the csv module (the writer pandas' `to_csv`
    uses, without building a DataFrame per chunk; UTF-8 with BOM so Excel reads Korean)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.rows: list[tuple[Any, ...]] = []
        self.started = False

    def add(self, example: Example) -> None:
        self.rows.append((
            example.example_id, example.split, _cell(example.category), _cell(example.url), _cell(example.title),
            _cell(example.section), example.tokens, _cell(excerpt(example.question)),
            _cell(excerpt(example.answer)), "",
        ))
        if len(self.rows) >= CSV_CHUNK:
            self.flush()

    def flush(self) -> None:
        if not self.rows and self.started:
            return
        mode, encoding = ("a", "utf-8") if self.started else ("w", "utf-8-sig")
        with open(self.path, mode, encoding=encoding, newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            if not self.started:
                writer.writerow(COLUMNS)
            writer.writerows(self.rows)
        self.started = True
        self.rows = []


# -- decisions ---------------------------------------------------------------------------------------------

@dataclass
class Applied:
    excluded: int = 0
    edited: int = 0
    cleared: int = 0
    without_decision: int = 0
    unknown_ids: list[str] = field(default_factory=list)


def read_decisions(path: Path) -> list[tuple[int, str, str, str]]:
    """(row number, example_id, url, decision) for every row with a decision; raises ReviewError."""
    import pandas as pd

    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except FileNotFoundError:
        raise ReviewError(f"{path} not found; pass the review.csv of a dataset version") from None
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ReviewError(f"{path}: not a readable CSV file ({' '.join(str(exc).split())}); "
                          "save it as CSV UTF-8 from your spreadsheet") from None
    missing = [c for c in ("example_id", "decision") if c not in frame.columns]
    if missing:
        raise ReviewError(f"{path}: missing column {', '.join(missing)}; keep the columns of the review.csv "
                          "the build wrote and fill in only `decision`")
    rows, bad = [], []
    urls = frame["url"] if "url" in frame.columns else [""] * len(frame)
    for number, (example_id, url, decision) in enumerate(zip(frame["example_id"], urls, frame["decision"]), 2):
        decision = decision.strip()
        if not decision:
            continue
        word = decision.casefold()
        if word not in EXCLUDE | KEEP and _COMMAND_LIKE.match(decision):
            bad.append(f"row {number}: {decision!r}")
        rows.append((number, example_id.strip(), url.lstrip("'"), decision))
    if bad:
        raise ReviewError(f"{path}: unknown decision {'; '.join(bad[:5])}; write `exclude`, `keep`, "
                          "or the whole edited answer")
    return rows


def apply_review(state: Path, dataset: str, path: Path, known_ids: Iterable[str] | None = None) -> Applied:
    """Store the decisions of a filled-in review.csv for `dataset`; `keep` clears an earlier decision."""
    rows = read_decisions(path)
    known = set(known_ids) if known_ids is not None else None
    applied = Applied()
    with closing(open_state(state)) as db:
        db.execute("BEGIN")
        for _, example_id, url, decision in rows:
            word = decision.casefold()
            if known is not None and example_id not in known:
                applied.unknown_ids.append(example_id)
            if word in KEEP:
                applied.cleared += db.execute(
                    "DELETE FROM review_decisions WHERE dataset = ? AND example_id = ?", (dataset, example_id)
                ).rowcount
                continue
            kind, answer = ("exclude", None) if word in EXCLUDE else ("edit", decision)
            db.execute("INSERT OR REPLACE INTO review_decisions VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (dataset, example_id, kind, answer, url, str(path), now()))
            if kind == "exclude":
                applied.excluded += 1
            else:
                applied.edited += 1
        db.execute("COMMIT")
    return applied


def stored_decisions(state: Path, dataset: str) -> dict[str, tuple[str, str | None]]:
    """example_id → (decision, edited answer) for a dataset; empty when nothing was reviewed yet."""
    if not Path(state).exists():
        return {}
    with closing(open_state(state)) as db:
        rows = db.execute("SELECT example_id, decision, answer FROM review_decisions WHERE dataset = ?",
                          (dataset,)).fetchall()
    return {example_id: (decision, answer) for example_id, decision, answer in rows}


class ApplyDecisions(Stage):
    """Drop examples a reviewer excluded; put a reviewer's edited answer in place (recounted exactly)."""

    name = "review"

    def __init__(self, decisions: dict[str, tuple[str, str | None]],
                 recount: Callable[[list[dict[str, Any]]], tuple[int, int]],
                 redact: Callable[[str], str] | None = None):
        self.decisions = decisions
        self.recount = recount
        self.redact = redact
        self.matched: set[str] = set()
        self.counts = {"excluded": 0, "edited": 0}

    def __call__(self, examples: Iterable[Example], log: StageLog) -> Iterator[Example]:
        for example in examples:
            decision = self.decisions.get(example.example_id) if self.decisions else None
            if decision is None:
                yield example
                continue
            self.matched.add(example.example_id)
            kind, answer = decision
            if kind == "exclude":
                self.counts["excluded"] += 1
                log.drop(example, "review_excluded", f"{example.url}: excluded by a reviewer")
                continue
            answer = self.redact(answer) if self.redact else answer
            messages = [dict(m) for m in example.messages]
            last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
            messages[last]["content"] = answer
            tokens, answer_tokens = self.recount(messages)
            self.counts["edited"] += 1
            yield example.model_copy(update={"messages": messages, "tokens": tokens, "answer_tokens": answer_tokens,
                                             "review": "edited"})

    def summary(self) -> dict[str, int]:
        return {**self.counts, "stored": len(self.decisions), "unmatched": len(self.decisions) - len(self.matched)}


# -- approval ----------------------------------------------------------------------------------------------

class NotApproved(Crawl2TuneError, RuntimeError):
    """Fine-tuning was asked for a dataset version nobody approved (with finetune.require_approval)."""


def manifest_sha256(version_dir: Path) -> str:
    return hashlib.sha256((Path(version_dir) / "manifest.json").read_bytes()).hexdigest()


def approve(state: Path, version_dir: Path, by: str | None = None) -> dict[str, Any]:
    """Record the approval of a version in the state and beside it (approval.json); returns the record."""
    version_dir = Path(version_dir)
    manifest = json.loads((version_dir / "manifest.json").read_text(encoding="utf-8"))
    record = {"dataset": manifest["dataset"], "version": manifest["version"],
              "manifest_sha256": manifest_sha256(version_dir), "approved_at": now(),
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
    manifest = json.loads((version_dir / "manifest.json").read_text(encoding="utf-8"))
    with closing(open_state(state)) as db:
        row = db.execute("SELECT manifest_sha256, approved_at, approved_by FROM approvals "
                         "WHERE dataset = ? AND version = ?", (manifest.get("dataset"), manifest.get("version"))
                         ).fetchone()
    if row is None or row[0] != manifest_sha256(version_dir):
        return None
    return {"dataset": manifest["dataset"], "version": manifest["version"], "manifest_sha256": row[0],
            "approved_at": row[1], "approved_by": row[2]}


def resolve(config: Any, version: str | Path = "latest") -> Path:
    """The folder of `version` ('v0003', 'latest' or a path) of the config's dataset; raises ReviewError."""
    from transforms.build import datasets_root
    from transforms.write import resolve_version

    root = datasets_root(config)
    found = resolve_version(root, str(version))
    if found is None or not (found / "manifest.json").exists():
        raise ReviewError(f"no dataset version {version!r} under {root}; run `python pipeline.py build` first "
                          "or name one of the v000N folders there")
    return found


def is_approved(config: Any, version: str | Path = "latest") -> bool:
    """True when `version` of the config's dataset was approved with `approve` and has not changed since."""
    from crawlers.store import state_path

    try:
        version_dir = resolve(config, version)
    except ReviewError:
        return False
    return approval_of(state_path(config.output_dir), version_dir) is not None


def require_approved(config: Any, version: str | Path = "latest") -> Path:
    """The version's folder when it is approved; raises NotApproved with the command to run otherwise."""
    version_dir = resolve(config, version)
    if not is_approved(config, version_dir):
        raise NotApproved(
            f"dataset {config.dataset.name} {version_dir.name} is not approved (finetune.require_approval is on); "
            f"review {version_dir / 'report.html'}, then run `python pipeline.py approve {version_dir.name}`"
        )
    return version_dir
