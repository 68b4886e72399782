"""`generate`: grounded question-answer pairs for every section of the stored documents, from any
OpenAI-compatible chat model, cached in the state so a re-crawl pays only for new and changed sections.

A section is what `granularity: section` cuts (the page's ##/### sections; the intro is named by the title). Its
request carries the heading path (page title › section) and the text the build will see (PII already redacted),
so the evidence the model quotes can be checked against the same text. The cache key is the section's text,
the generator model, the prompt's version and the settings that change the answer; each section's pairs are
committed as they arrive, so an interrupted run resumes without paying twice. The openai SDK is imported only
when a request is to be sent.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import string
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from base.errors import Crawl2TuneError
from base.state import connect, migrate, now, state_path
from configs import Config, GenerateConfig, model_registry
from crawlers.document import Document
from crawlers.store import PageStore
from transforms.chunk import sections
from transforms.filters import script_language
from transforms.stage import run_stages
from transforms.tokens import TokenCounter, chat_tokens, count_text

PROMPTS = Path(__file__).resolve().parent.parent / "configs" / "prompts"
ESTIMATE_ENCODING = "o200k_base"  # counts for a model whose encoding is unknown (marked as estimated)
OUTPUT_TOKENS_PER_QUESTION = 40  # expected tokens of a question (or paraphrase) in the reply
OUTPUT_TOKENS_PER_ANSWER = 110  # expected tokens of an answer with its evidence and style

PAIRS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"pairs": {"type": "array", "items": {
        "type": "object",
        "properties": {
            "question": {"type": "string"},
            "paraphrases": {"type": "array", "items": {"type": "string"}},
            "answer": {"type": "string"},
            "evidence": {"type": "array", "items": {"type": "string"}},
            "style": {"type": "string"},
        },
        "required": ["question", "paraphrases", "answer", "evidence", "style"],
        "additionalProperties": False,
    }}},
    "required": ["pairs"],
    "additionalProperties": False,
}

SCHEMA = """
CREATE TABLE IF NOT EXISTS generated (
    key TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    section TEXT,
    model TEXT NOT NULL,
    prompt_version TEXT NOT NULL,
    status TEXT NOT NULL,
    pairs TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS generated_url ON generated (url);
CREATE TABLE IF NOT EXISTS judged (
    key TEXT NOT NULL,
    judge TEXT NOT NULL,
    scores TEXT NOT NULL,
    cost_usd REAL NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (key, judge)
);
"""

SCORES_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"scores": {"type": "array", "items": {
        "type": "object",
        "properties": {name: {"type": "integer"} for name in ("index", "faithfulness", "usefulness", "clarity")},
        "required": ["index", "faithfulness", "usefulness", "clarity"],
        "additionalProperties": False,
    }}},
    "required": ["scores"],
    "additionalProperties": False,
}


class GenerateError(Crawl2TuneError, RuntimeError):
    """Pairs cannot be generated: no key, an unreadable prompt, a refused request."""


# -- prompts and sections ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prompt:
    """A prompt file: `version: N` on the first line, the system message, a `---` line, the user message.

    Placeholders ($heading, $text, $n, $paraphrases, $styles, $language) are filled by string.Template, so the
    braces of JSON in the prompt and in a section's text stay as they are."""

    version: str
    system: str
    user: str

    @classmethod
    def load(cls, path: Path) -> "Prompt":
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise GenerateError(f"prompt file {path}: {exc.strerror or exc}; point dataset.generate.prompt at a "
                                "readable file") from None
        first, _, rest = text.partition("\n")
        system, sep, user = rest.partition("\n---\n")
        match = re.fullmatch(r"version:\s*(\S+)\s*", first)
        if not match or not sep:
            raise GenerateError(f"prompt file {path}: expected `version: N` on the first line and a `---` line "
                                "between the system and the user message (see configs/prompts/generate-en.md)")
        return cls(match.group(1), system.strip(), user.strip())

    @property
    def digest(self) -> str:
        """The version and the text: an edit that forgets to bump the version still misses the cache."""
        return hashlib.sha256(f"{self.version}\x00{self.system}\x00{self.user}".encode("utf-8")).hexdigest()[:16]

    def messages(self, **fields: Any) -> list[dict[str, str]]:
        fill = {k: str(v) for k, v in fields.items()}
        return [{"role": "system", "content": string.Template(self.system).safe_substitute(fill)},
                {"role": "user", "content": string.Template(self.user).safe_substitute(fill)}]


LANGUAGE_NAMES = {"ko": "Korean", "en": "English", "ja": "Japanese", "zh": "Chinese"}


def section_language(text: str, configured: str) -> str:
    """The language pairs are asked in: the configured one, else the section's script (English by default)."""
    if configured != "auto":
        return configured
    return script_language(text) or "en"


@dataclass(frozen=True)
class SectionText:
    """One section of a document as it is sent to the generator."""

    url: str
    title: str
    section: str | None
    text: str
    language: str

    @property
    def heading(self) -> str:
        return f"{self.title} › {self.section}" if self.section else self.title


def document_sections(doc: Document, configured_language: str) -> list[SectionText]:
    return [SectionText(doc.url, doc.title, piece.section, piece.text, section_language(piece.text, configured_language))
            for piece in sections(doc.text) if piece.text.strip()]


class Generator:
    """What decides a section's pairs: the settings, the prompts per language, the counter, and the key."""

    def __init__(self, gen: GenerateConfig):
        self.gen = gen
        self.prompts: dict[str, Prompt] = {}
        encoding = model_registry.generation_encoding(gen.model)
        self.exact = encoding is not None
        self.counter = TokenCounter(encoding or ESTIMATE_ENCODING)
        decisive = gen.model_dump(mode="json", include={
            "provider", "model", "questions_per_section", "tokens_per_question", "min_questions", "max_questions",
            "paraphrases", "styles", "language", "temperature", "seed", "max_tokens"})
        self.settings = hashlib.sha256(json.dumps(decisive, sort_keys=True).encode("utf-8")).hexdigest()[:16]
        self.price_in, self.price_out = self._prices(gen.model)
        self.judge_prompt = Prompt.load(gen.judge.prompt or PROMPTS / "judge-pairs.md") if gen.judge else None
        self.judge_id = (f"{gen.judge.model}:{self.judge_prompt.digest}" if gen.judge and self.judge_prompt
                         else None)  # the judge model and its prompt: another judge scores again
        self.judge_price_in, self.judge_price_out = self._prices(gen.judge.model) if gen.judge else (0.0, 0.0)

    def _prices(self, model: str) -> tuple[float, float]:
        """The configured prices (they apply to the judge too), else the registry's, else 0."""
        listed = model_registry.GENERATION_PRICES.get(model, (0.0, 0.0))
        return (self.gen.price_per_1m_input_tokens if self.gen.price_per_1m_input_tokens is not None else listed[0],
                self.gen.price_per_1m_output_tokens if self.gen.price_per_1m_output_tokens is not None else listed[1])

    def judge_messages(self, section: SectionText, pairs: list[dict[str, Any]]) -> list[dict[str, str]]:
        assert self.judge_prompt is not None
        listed = "\n\n".join(f"[{i}] Q: {p['question']}\nA: {p['answer']}" for i, p in enumerate(pairs))
        return self.judge_prompt.messages(heading=section.heading, text=section.text, pairs=listed)

    def judge_cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.judge_price_in + output_tokens * self.judge_price_out) / 1_000_000

    def prompt(self, language: str) -> Prompt:
        path = self.gen.prompt or PROMPTS / f"generate-{'ko' if language == 'ko' else 'en'}.md"
        if str(path) not in self.prompts:
            self.prompts[str(path)] = Prompt.load(path)
        return self.prompts[str(path)]

    def questions(self, section: SectionText) -> int:
        if self.gen.questions_per_section != "auto":
            return self.gen.questions_per_section
        n = round(self.counter.cached(section.text) / self.gen.tokens_per_question)
        return max(self.gen.min_questions, min(self.gen.max_questions, n))

    def key(self, section: SectionText) -> str:
        text = hashlib.sha256(section.text.encode("utf-8")).hexdigest()
        parts = (text, section.heading, section.language, self.prompt(section.language).digest, self.settings)
        return hashlib.sha256("\x00".join(parts).encode("utf-8")).hexdigest()

    def messages(self, section: SectionText) -> list[dict[str, str]]:
        return self.prompt(section.language).messages(
            heading=section.heading, text=section.text, n=self.questions(section), paraphrases=self.gen.paraphrases,
            styles=", ".join(self.gen.styles), language=LANGUAGE_NAMES.get(section.language, section.language))

    def input_tokens(self, messages: list[dict[str, str]]) -> int:
        """Exact tokens of a request's messages as the chat API counts them (count_messages); the roles and the
        system message, the same for every section, are counted once."""
        values = sum(self.counter.cached(m["role"]) + (self.counter.cached(m["content"]) if m["role"] == "system"
                                                      else count_text(self.counter.encoding, m["content"]))
                     for m in messages)
        return chat_tokens(len(messages), values)

    def expected_output(self, section: SectionText) -> int:
        n = self.questions(section)
        return min(self.gen.max_tokens, n * (OUTPUT_TOKENS_PER_QUESTION * (1 + self.gen.paraphrases)
                                            + OUTPUT_TOKENS_PER_ANSWER) + 10)

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.price_in + output_tokens * self.price_out) / 1_000_000


# -- parsing -------------------------------------------------------------------------------------------

_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"```(?:json)?\s*\n?(.*?)```", re.DOTALL)


def parse_pairs(text: str | None) -> list[dict[str, Any]] | None:
    """The pairs of a reply, or None when it holds no {"pairs": [...]} object: reasoning (<think> blocks, an
    unclosed one included), code fences and text around the JSON are skipped; a pair missing a field is left out."""
    if not text:
        return None
    text = _THINK.sub("", text)
    if "<think>" in text.lower():
        return None  # the reasoning never ended: the reply was cut off
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    for candidate in candidates:
        for start in (i for i, ch in enumerate(candidate) if ch == "{"):
            try:
                obj, _ = decoder.raw_decode(candidate, start)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict) and isinstance(obj.get("pairs"), list):
                return [p for p in (_pair(raw) for raw in obj["pairs"]) if p is not None]
    return None


def parse_scores(text: str | None, n: int) -> list[int | None] | None:
    """A judge reply → the lowest of each pair's three scores (clipped to 1-5; None for a pair it skipped), or
    None when the reply holds no {"scores": [...]} object."""
    if not text:
        return None
    text = _THINK.sub("", text)
    decoder = json.JSONDecoder()
    for candidate in [m.group(1) for m in _FENCE.finditer(text)] + [text]:
        for start in (i for i, ch in enumerate(candidate) if ch == "{"):
            try:
                obj, _ = decoder.raw_decode(candidate, start)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict) and isinstance(obj.get("scores"), list):
                scores: list[int | None] = [None] * n
                for entry in obj["scores"]:
                    values = [entry.get(k) for k in ("faithfulness", "usefulness", "clarity")] if isinstance(
                        entry, dict) else []
                    index = entry.get("index") if isinstance(entry, dict) else None
                    if isinstance(index, int) and 0 <= index < n and all(isinstance(v, int) for v in values):
                        scores[index] = max(1, min(5, min(values)))
                return scores
    return None


def _pair(raw: Any) -> dict[str, Any] | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("question"), str) or not isinstance(raw.get("answer"), str):
        return None
    strings = lambda v: [s for s in v if isinstance(s, str) and s.strip()] if isinstance(v, list) else []  # noqa: E731
    if not raw["question"].strip() or not raw["answer"].strip():
        return None
    return {"question": raw["question"].strip(), "paraphrases": strings(raw.get("paraphrases")),
            "answer": raw["answer"].strip(), "evidence": strings(raw.get("evidence")),
            "style": str(raw.get("style") or "factual")}


# -- the cache ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cached:
    status: str  # ok | unparsable
    pairs: list[dict[str, Any]]
    model: str


class GenerationStore:
    """The `generated` table of the state: one row per section key, written as each reply arrives."""

    def __init__(self, path: Path):
        self.db = connect(Path(path))
        migrate(self.db, SCHEMA, "generated", {})

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "GenerationStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, key: str) -> Cached | None:
        row = self.db.execute("SELECT status, pairs, model FROM generated WHERE key = ?", (key,)).fetchone()
        return Cached(row[0], json.loads(row[1]), row[2]) if row else None

    def keys(self) -> set[str]:
        return {row[0] for row in self.db.execute("SELECT key FROM generated")}

    def put(self, key: str, section: SectionText, *, model: str, prompt_version: str, status: str,
            pairs: list[dict[str, Any]], input_tokens: int, output_tokens: int, cost_usd: float) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO generated VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (key, section.url, section.section, model, prompt_version, status, json.dumps(pairs, ensure_ascii=False),
             input_tokens, output_tokens, cost_usd, now()))

    def retire(self, current: set[str]) -> int:
        """Delete the pairs of sections that are gone (removed pages, changed text, other settings)."""
        stale = self.keys() - current
        self.db.executemany("DELETE FROM generated WHERE key = ?", [(k,) for k in stale])
        self.db.execute("DELETE FROM judged WHERE key NOT IN (SELECT key FROM generated)")
        return len(stale)

    def scores(self, key: str, judge: str) -> list[int | None] | None:
        row = self.db.execute("SELECT scores FROM judged WHERE key = ? AND judge = ?", (key, judge)).fetchone()
        return json.loads(row[0]) if row else None

    def put_scores(self, key: str, judge: str, scores: list[int | None], cost_usd: float) -> None:
        self.db.execute("INSERT OR REPLACE INTO judged VALUES (?, ?, ?, ?, ?)",
                        (key, judge, json.dumps(scores), cost_usd, now()))

    def spent(self) -> float:
        return self.db.execute("SELECT (SELECT COALESCE(SUM(cost_usd), 0) FROM generated) + "
                               "(SELECT COALESCE(SUM(cost_usd), 0) FROM judged)").fetchone()[0]


# -- requests ------------------------------------------------------------------------------------------


def make_client(gen: GenerateConfig) -> Any:
    """The openai SDK client for the generator (imported here: `--help` and `validate` never load it), or for
    `local` the local model behind the same call."""
    if gen.provider == "local":
        from transforms.local_chat import LocalChat

        return LocalChat(gen.model, gen.concurrency)
    import openai

    key = (os.environ.get("AZURE_OPENAI_API_KEY") if gen.provider == "azure" else None) or os.environ.get(gen.api_key_env)
    base_url = gen.base_url or os.environ.get("OPENAI_BASE_URL")
    if not key:
        if gen.provider == "azure" or not base_url:
            raise GenerateError(f"dataset.generate.provider {gen.provider} needs an API key in ${gen.api_key_env}; "
                                "export it, or set dataset.generate.base_url to a local server")
        key = "unused"  # a local server (vLLM, Ollama, llama.cpp) that takes no key
    common: dict[str, Any] = dict(api_key=key, timeout=gen.timeout_s, max_retries=gen.max_retries)
    if gen.provider == "azure":
        if not base_url:
            raise GenerateError("dataset.generate.provider azure needs dataset.generate.base_url: the resource "
                                "endpoint, e.g. https://NAME.openai.azure.com")
        return openai.AzureOpenAI(azure_endpoint=base_url, api_version=gen.api_version
                                  or os.environ.get("OPENAI_API_VERSION") or "2024-10-21", **common)
    return openai.OpenAI(base_url=base_url, **common)


@dataclass
class Reply:
    status: str  # ok | unparsable
    pairs: list[dict[str, Any]]
    input_tokens: int
    output_tokens: int
    requests: int
    scores: list[int | None] | None = None  # the judge's, one per pair
    judge_input: int = 0
    judge_output: int = 0


class Requester:
    """Sends one section's request; retries an unparsable reply once; falls back to plain text for a server
    that refuses response_format. 429, 5xx and timeouts are retried by the SDK (backoff, Retry-After)."""

    def __init__(self, client: Any, gen: GenerateConfig):
        self.client = client
        self.gen = gen
        self.structured = gen.response_format

    def _create(self, messages: list[dict[str, str]], *, judge: bool = False) -> Any:
        import openai

        model = self.gen.judge.model if judge and self.gen.judge else self.gen.model
        options: dict[str, Any] = dict(model=model, messages=messages, max_tokens=self.gen.max_tokens,
                                       temperature=0.0 if judge else self.gen.temperature)
        if self.gen.seed is not None:
            options["seed"] = self.gen.seed
        if self.structured:
            name, schema = ("scores", SCORES_SCHEMA) if judge else ("pairs", PAIRS_SCHEMA)
            options["response_format"] = {"type": "json_schema", "json_schema": {
                "name": name, "strict": True, "schema": schema}}
        try:
            return self.client.chat.completions.create(**options)
        except openai.BadRequestError as exc:
            if self.structured and "response_format" in str(exc):
                self.structured = False  # this server takes no JSON schema: ask in words, parse the text
                return self._create(messages, judge=judge)
            raise GenerateError(f"the generator refused the request: {_api_message(exc)}") from None
        except openai.AuthenticationError:
            raise GenerateError(f"the generator rejected the API key in ${self.gen.api_key_env}; check it") from None
        except openai.APIStatusError as exc:
            raise GenerateError(f"the generator answered HTTP {exc.status_code} after {self.gen.max_retries} "
                                f"retries: {_api_message(exc)}") from None
        except openai.APIConnectionError as exc:
            kind = "timed out" if isinstance(exc, openai.APITimeoutError) else "could not be reached"
            raise GenerateError(f"the generator at {self.client.base_url} {kind} after {self.gen.max_retries} "
                                "retries; check dataset.generate.base_url and timeout_s") from None

    def _ask(self, messages: list[dict[str, str]], parse: Callable[[str | None], Any], *,
             judge: bool = False) -> tuple[Any, int, int, int]:
        """(parsed reply or None, input tokens, output tokens, requests): an unparsable reply is asked again once."""
        tokens_in = tokens_out = 0
        for attempt in (1, 2):
            response = self._create(messages, judge=judge)
            usage = response.usage
            tokens_in += usage.prompt_tokens if usage else 0
            tokens_out += usage.completion_tokens if usage else 0
            parsed = parse(response.choices[0].message.content if response.choices else None)
            if parsed is not None:
                return parsed, tokens_in, tokens_out, attempt
        return None, tokens_in, tokens_out, 2

    def __call__(self, messages: list[dict[str, str]] | None, cached: list[dict[str, Any]] | None,
                 judge: Callable[[list[dict[str, Any]]], list[dict[str, str]]] | None) -> Reply:
        """Generate (unless `cached` holds the pairs), then with `judge` (the judge's messages for the pairs)
        score the pairs."""
        reply = Reply("ok", cached or [], 0, 0, 0)
        if cached is None:
            pairs, reply.input_tokens, reply.output_tokens, reply.requests = self._ask(messages or [], parse_pairs)
            reply.status, reply.pairs = ("ok", pairs) if pairs is not None else ("unparsable", [])
        if judge is not None and reply.pairs:
            n = len(reply.pairs)
            scores, reply.judge_input, reply.judge_output, asked = self._ask(
                judge(reply.pairs), lambda text: parse_scores(text, n), judge=True)
            reply.scores = scores if scores is not None else [None] * n
            reply.requests += asked
        return reply


def _api_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    message = body.get("message") if isinstance(body, dict) else None
    return " ".join(str(message or exc).split())[:300]


# -- the run -------------------------------------------------------------------------------------------


@dataclass
class Progress:
    total: int  # sections to generate in this run
    done: int = 0
    in_flight: int = 0
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


@dataclass
class GenerateReport:
    sections: int  # every section of the live documents
    cached: int  # already generated with these settings
    pending: int  # to generate (before --limit and the cost cap)
    progress: Progress
    unparsable: int = 0
    pairs: int = 0
    retired: int = 0
    stopped: str | None = None  # why the run ended before every pending section
    exact_tokens: bool = True
    estimate: dict[str, Any] = field(default_factory=dict)


def documents_for_generation(config: Config, store: PageStore) -> Iterator[Document]:
    """The live documents as the build sees them after its document stages (PII redaction, language filter)."""
    from transforms.build import document_stages

    docs, _ = run_stages(store.documents(), document_stages(config))
    return docs


Work = tuple[SectionText, "list[dict[str, Any]] | None"]  # a section, and its cached pairs when only the judge is due


def plan(config: Config, generator: Generator, cache: GenerationStore) -> tuple[list[Work], set[str], int]:
    """(sections to generate or judge, the keys of every current section, the number of sections)."""
    state = state_path(config.output_dir)
    pending, current, total = [], set(), 0
    with PageStore(state) as store:
        for doc in documents_for_generation(config, store):
            for section in document_sections(doc, config.dataset.generate.language):
                key = generator.key(section)
                total += 1
                if key in current:
                    continue  # the same section text twice on a page: generated once
                current.add(key)
                cached = cache.get(key)
                if cached is None:
                    pending.append((section, None))
                elif generator.judge_id and cached.pairs and cache.scores(key, generator.judge_id) is None:
                    pending.append((section, cached.pairs))
    return pending, current, total


def generate(config: Config, *, estimate: bool = False, max_cost: float | None = None, limit: int | None = None,
             on_progress: Callable[[Progress], None] | None = None, client: Any = None) -> GenerateReport:
    """Generate and cache the pairs of every section not cached yet; with `estimate`, only count what it would send."""
    gen = config.dataset.generate
    if gen.provider == "none":
        raise GenerateError("dataset.generate.provider is none (the templates); set it to openai, azure or local and "
                            "dataset.generate.model to generate pairs")
    state = state_path(config.output_dir)
    if not state.exists():
        raise GenerateError(f"no crawl state at {state}; run `python pipeline.py crawl` with this config first")
    generator = Generator(gen)
    cap = max_cost if max_cost is not None else gen.max_cost_usd
    with GenerationStore(state) as cache:
        pending, current, total = plan(config, generator, cache)
        report = GenerateReport(total, total - len(pending), len(pending), Progress(len(pending)),
                                exact_tokens=generator.exact)
        if limit is not None:
            pending = pending[:limit]
            report.progress.total = len(pending)
        if estimate:
            report.estimate = _estimate(generator, pending)
            return report
        report.retired = cache.retire(current)
        if pending:
            _send(generator, cache, pending, report, cap, client or make_client(gen), on_progress)
    return report


def _estimate(generator: Generator, pending: list[Work]) -> dict[str, Any]:
    """The generation requests exactly; a judge's requests are counted on top (their input is the section and
    the expected pairs, so estimated)."""
    generating = [s for s, cached in pending if cached is None]
    tokens_in = sum(generator.input_tokens(generator.messages(s)) for s in generating)
    tokens_out = sum(generator.expected_output(s) for s in generating)
    estimate = {"requests": len(generating), "input_tokens": tokens_in, "expected_output_tokens": tokens_out,
                "cost_usd": generator.cost(tokens_in, tokens_out), "exact": generator.exact}
    if generator.judge_id:
        judge_in = sum(generator.input_tokens(generator.messages(s)) + generator.expected_output(s) for s, _ in pending)
        judge_out = sum(20 * generator.questions(s) for s, _ in pending)
        estimate.update(judge_requests=len(pending), judge_input_tokens=judge_in, judge_output_tokens=judge_out)
        estimate["cost_usd"] += generator.judge_cost(judge_in, judge_out)
    return estimate


def _send(generator: Generator, cache: GenerationStore, pending: list[Work], report: GenerateReport,
          cap: float | None, client: Any, on_progress: Callable[[Progress], None] | None) -> None:
    """Keep `concurrency` requests in flight; store each section's pairs as its reply arrives; stop before a
    request whose worst case (its exact input and max_tokens of output) could take the spend past the cap."""
    gen = generator.gen
    requester = Requester(client, gen)
    progress = report.progress
    queue = iter(pending)
    running: dict[Future, tuple[SectionText, float, bool]] = {}  # → section, worst-case cost, generating
    reserved = 0.0
    failure: BaseException | None = None  # the first refused request: what is in flight is still stored
    with ThreadPoolExecutor(max_workers=gen.concurrency, thread_name_prefix="generate") as pool:
        try:
            while True:
                while len(running) < gen.concurrency and report.stopped is None and failure is None:
                    work = next(queue, None)
                    if work is None:
                        break
                    section, cached = work
                    messages = generator.messages(section)
                    tokens = generator.input_tokens(messages)
                    worst = generator.cost(tokens, gen.max_tokens) if cached is None else 0.0
                    if generator.judge_id:  # its input: the section and the pairs (at most max_tokens of them)
                        worst += generator.judge_cost(tokens + gen.max_tokens, gen.max_tokens)
                    if cap is not None and progress.cost_usd + reserved + worst > cap:
                        report.stopped = (f"max_cost_usd ${cap:.2f}: stopped before section {progress.done + len(running) + 1} "
                                          f"of {progress.total} (spent ${progress.cost_usd:.4f})")
                        break
                    reserved += worst
                    judge = (lambda pairs, s=section: generator.judge_messages(s, pairs)) if generator.judge_id else None
                    running[pool.submit(requester, messages if cached is None else None, cached, judge)] = (
                        section, worst, cached is None)
                progress.in_flight = len(running)
                if on_progress:
                    on_progress(progress)
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    section, worst, generating = running.pop(future)
                    reserved -= worst
                    refused = _store(future, section, generating, generator, cache, report)
                    failure = failure or refused
        except BaseException:  # Ctrl-C: what is not sent yet is dropped; what is in flight is paid, so stored
            for future in running:
                future.cancel()
            for future in wait(running).done:
                if not future.cancelled():
                    section, _, generating = running[future]
                    _store(future, section, generating, generator, cache, report)
            raise
    if failure is not None:
        raise GenerateError(f"{failure} (the {progress.done} sections answered before are stored; run again to "
                            "continue)")


def _store(future: Future, section: SectionText, generating: bool, generator: Generator, cache: GenerationStore,
           report: GenerateReport) -> GenerateError | None:
    """Cache a finished request's pairs and scores and count it; its error, if the request was refused."""
    try:
        reply = future.result()
    except GenerateError as exc:
        return exc
    gen, progress = generator.gen, report.progress
    key = generator.key(section)
    cost = generator.cost(reply.input_tokens, reply.output_tokens)
    if generating:
        cache.put(key, section, model=gen.model, prompt_version=generator.prompt(section.language).version,
                  status=reply.status, pairs=reply.pairs, input_tokens=reply.input_tokens,
                  output_tokens=reply.output_tokens, cost_usd=cost)
    if reply.scores is not None and generator.judge_id:
        judged = generator.judge_cost(reply.judge_input, reply.judge_output)
        cache.put_scores(key, generator.judge_id, reply.scores, judged)
        cost += judged
    progress.done += 1
    progress.requests += reply.requests
    progress.input_tokens += reply.input_tokens + reply.judge_input
    progress.output_tokens += reply.output_tokens + reply.judge_output
    progress.cost_usd += cost
    report.pairs += len(reply.pairs) if generating else 0
    report.unparsable += reply.status == "unparsable"
    return None
