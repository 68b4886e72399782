"""The LLM judge: grades an answer against its reference and source section, and keeps every grade.

The prompt is the versioned file configs/prompts/judge.md; a grade is cached in the state (table
`judge_grades`) under the sha256 of the judge model, the prompt and the four texts, so a second run over the
same answers sends no request, and a changed prompt grades again. The reply is parsed leniently (the first
JSON object in it, in a code fence or not; the grade's spelling normalised); a reply with no grade is not
cached and counts as ungraded.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from base import state as base_state
from configs import JudgeConfig, SamplingConfig
from finetune.backend import Backend, FinetuneError, MissingCredentials

PROMPT_PATH = Path(__file__).resolve().parent.parent / "configs" / "prompts" / "judge.md"
GRADES = {"correct": 1.0, "partly correct": 0.5, "wrong": 0.0, "rightly declined": 1.0}
_SPELLINGS = {"partly_correct": "partly correct", "partially correct": "partly correct", "partial": "partly correct",
              "incorrect": "wrong", "declined": "rightly declined", "rightly_declined": "rightly declined"}
_SCHEMA = """
CREATE TABLE IF NOT EXISTS judge_grades (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    grade TEXT NOT NULL,
    reason TEXT NOT NULL,
    graded_at TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class Grade:
    grade: str | None  # one of GRADES; None when the judge's reply held no grade
    reason: str
    cached: bool = False

    @property
    def score(self) -> float | None:
        return None if self.grade is None else GRADES[self.grade]


def prompt_template() -> str:
    text = PROMPT_PATH.read_text(encoding="utf-8")
    return re.sub(r"\A<!--.*?-->\s*", "", text, flags=re.S)  # the header comment is for people


def judge_messages(template: str, question: str, reference: str, source: str, answer: str) -> list[dict[str, Any]]:
    filled = template
    for name, value in (("question", question), ("reference", reference), ("source", source), ("answer", answer)):
        filled = filled.replace("{{" + name + "}}", value)
    return [{"role": "user", "content": filled}]


def parse_grade(reply: str) -> Grade:
    """The grade and reason of a judge's reply: the first JSON object holding a known grade."""
    for start in (m.start() for m in re.finditer(r"\{", reply)):
        for end in (m.end() for m in re.finditer(r"\}", reply[start:])):
            try:
                obj = json.loads(reply[start:start + end], strict=False)  # a raw newline in the reason
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict) and isinstance(obj.get("grade"), str):
                grade = re.sub(r"\s+", " ", obj["grade"].strip().lower())
                grade = _SPELLINGS.get(grade, grade)
                if grade in GRADES:
                    reason = " ".join(str(obj.get("reason") or "").split())
                    return Grade(grade, reason[:300])
            break
    if not reply.strip():
        return Grade(None, "the judge's reply was empty")
    return Grade(None, "the judge's reply held no grade: " + " ".join(reply.split())[:120])


class Judge:
    """Grades answers with `model` through `backend`, reading and writing the grade cache under `output_dir`."""

    def __init__(self, backend: Backend, model: str, output_dir: Path, max_tokens: int | None = None):
        self.backend, self.model = backend, model
        self.sampling = SamplingConfig(temperature=0, max_tokens=max_tokens)
        self.template = prompt_template()
        self.path = base_state.state_path(output_dir)
        self.requests = 0  # sent by this Judge (not answered from the cache)
        self._lock = threading.Lock()
        db = base_state.connect(self.path)
        try:
            base_state.migrate(db, _SCHEMA, "judge_grades", {})
        finally:
            db.close()

    def key(self, question: str, reference: str, source: str, answer: str) -> str:
        payload = json.dumps([self.model, self.template, question, reference, source, answer], ensure_ascii=False)
        return hashlib.sha256(payload.encode()).hexdigest()

    def cached(self, key: str) -> Grade | None:
        db = base_state.connect(self.path)
        try:
            row = db.execute("SELECT grade, reason FROM judge_grades WHERE key = ?", (key,)).fetchone()
        finally:
            db.close()
        return Grade(row[0], row[1], cached=True) if row else None

    def grade(self, question: str, reference: str, source: str, answer: str) -> Grade:
        """The cached grade, else the judge's (cached when it held one). Safe to call from several threads."""
        key = self.key(question, reference, source, answer)
        if (known := self.cached(key)) is not None:
            return known
        with self._lock:
            self.requests += 1
        messages = judge_messages(self.template, question, reference, source, answer)
        reply = self.backend.chat(self.model, messages, sampling=self.sampling)[0]
        grade = parse_grade(reply.text)
        if grade.grade is not None:
            db = base_state.connect(self.path)
            try:
                db.execute("INSERT OR REPLACE INTO judge_grades VALUES (?, ?, ?, ?, ?)",
                           (key, self.model, grade.grade, grade.reason, base_state.now()))
            finally:
                db.close()
        return grade


def judge_backend(judge: JudgeConfig, finetune: Any, output_dir: Path, default: Backend) -> Backend:
    """The backend the judge is asked through: the models' own unless it names another endpoint or key."""
    if judge.provider == "local" or (judge.base_url is None and judge.api_key_env is None
                                     and judge.provider == finetune.provider):
        if judge.provider == finetune.provider:
            return default
        from finetune.providers import create_backend

        return create_backend(finetune, provider=judge.provider, output_dir=output_dir)
    from finetune.openai_backend import OpenAIBackend, resolve_connection

    env = dict(os.environ)
    if judge.api_key_env:
        if not os.environ.get(judge.api_key_env):
            raise MissingCredentials(f"no API key for the judge: set {judge.api_key_env} in the environment "
                                     "(finetune.evaluation.judge.api_key_env names it)")
        env["OPENAI_API_KEY" if judge.provider == "openai" else "AZURE_OPENAI_API_KEY"] = os.environ[judge.api_key_env]
    if judge.base_url:
        env.pop("OPENAI_BASE_URL", None)
        env.pop("AZURE_OPENAI_ENDPOINT", None)
    try:
        conn = resolve_connection(finetune.model_copy(update={"base_url": judge.base_url or finetune.base_url}),
                                  judge.provider, env)
    except MissingCredentials:
        raise
    except FinetuneError as exc:
        raise FinetuneError(f"the judge: {exc}") from None
    return OpenAIBackend(conn)
