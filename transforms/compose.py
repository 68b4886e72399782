"""Documents → examples: fill the templates, cut pages into sections if asked, and split what is over the limit.

Every example's count is exact. A page (or section) that fits is encoded once, in a batch with its neighbours
(one tiktoken call on the counter's threads). Only a page over the limit is cut into blocks and counted again
piece by piece.

Granularity `document` makes one answer of a page (split only to fit); `section` one per ##/### section.
`questions_per_document` asks each answer with that many of the user templates, chosen stably from the URL
and section; `turns_per_example` > 1 chains consecutive answers of a page into one conversation, and with
`train_on: last` only its last assistant turn is trained (the earlier ones carry `weight: 0`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from itertools import islice
from typing import Iterable, Iterator

from crawlers.document import Document
from transforms.chunk import Chunker, sections
from transforms.example import Example
from transforms.formats import Format, completion_text, prompt_text
from transforms.stage import Stage, StageLog
from transforms.tokens import TokenCounter, chat_tokens

BATCH = 256
SECTION_ALLOWANCE = 64  # tokens reserved for a section name in the question of a split page


@lru_cache(maxsize=4096)  # an answer's templates are asked for three times: for its prompts, its fit, its examples
def _stable_int(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("\x00".join(parts).encode("utf-8")).digest()[:8], "big")


def _batches(documents: Iterable[Document], size: int) -> Iterator[list[Document]]:
    documents = iter(documents)
    while batch := list(islice(documents, size)):
        yield batch


@dataclass(frozen=True)
class Unit:
    """One answer: a page, a section or a piece of either, with the exact tokens of its (wrapped) text."""

    section: str | None
    ordinal: int  # 0 for the first piece of a section, 1 for the next…
    text: str
    tokens: int


class ComposeExamples(Stage):
    name = "compose"

    def __init__(self, counter: TokenCounter, system_prompt: str, user_templates: list[str], limit: int, *,
                 granularity: str = "document", questions: int = 1, turns: int = 1, train_on: str = "all",
                 fmt: Format = "chat"):
        if fmt == "prompt_completion" and turns > 1:
            raise ValueError("turns_per_example > 1 needs a chat model; prompt/completion examples have one turn")
        self.counter = counter
        self.system_prompt = system_prompt
        self.user_templates = user_templates
        self.limit = limit
        self.granularity = granularity
        self.questions = min(questions, len(user_templates))
        self.turns = turns
        self.train_on = train_on
        self.fmt = fmt

    # -- counting ----------------------------------------------------------------------------------------

    def _wrapped(self, answer: str) -> str:
        """The text whose tokens are the answer's share of the example in this format."""
        return completion_text(answer) if self.fmt == "prompt_completion" else answer

    def _units_of(self, doc: Document) -> list[tuple[str | None, str]]:
        if self.granularity == "section":
            return [(piece.section, piece.text) for piece in sections(doc.text)]
        return [(None, doc.text)] if doc.text.strip() else []

    def _prompts(self, doc: Document, section: str | None) -> list[str]:
        """The strings `cached` will be asked for when this unit's examples are made."""
        out = []
        for template in self.templates_for(doc.url, section):
            fields = self._fields(doc, section, template)
            system, user = self.system_prompt.format_map(fields), template.format_map(fields)
            out += [prompt_text(system, user)] if self.fmt == "prompt_completion" else [system, user]
        return out

    # -- the stage ---------------------------------------------------------------------------------------

    def __call__(self, documents: Iterable[Document], log: StageLog) -> Iterator[Example]:
        for batch in _batches(documents, BATCH):
            yield from self._compose_batch(batch, log)

    def _compose_batch(self, batch: list[Document], log: StageLog) -> Iterator[Example]:
        """A batch's examples; its answers and the strings `cached` will be asked for are counted in one call."""
        per_doc = [self._units_of(doc) for doc in batch]
        texts = [self._wrapped(text) for units in per_doc for _, text in units]
        prompts = list(dict.fromkeys(
            s for doc, units in zip(batch, per_doc) for section, _ in units for s in self._prompts(doc, section)))
        answers = iter(self.counter.texts(texts + prompts))
        encoded = [[Unit(section, 0, text, next(answers)) for section, text in units] for units in per_doc]
        self.counter.prime(dict(zip(prompts, answers)))
        for doc, units in zip(batch, encoded):
            if not units:
                log.drop(doc, "empty_document" if not doc.text.strip() else "no_content", doc.url)
                continue
            fitting: list[Unit] = []
            for unit in units:
                if self._single_tokens(doc, unit) <= self.limit:
                    fitting.append(unit)
                else:
                    fitting.extend(self._split(doc, unit, log))
            yield from self._examples(doc, fitting, log)

    def _split(self, doc: Document, unit: Unit, log: StageLog) -> list[Unit]:
        overhead = max(self._single_tokens(doc, Unit(unit.section, 0, "", 0), template=t) for t in self.user_templates)
        chunker = Chunker(self.counter.texts, self.limit - overhead - SECTION_ALLOWANCE)
        pieces, too_big = chunker.split(unit.text)
        for excerpt in too_big:
            log.drop(doc, "block_over_limit", f"{doc.url}: {excerpt[:80]}", excerpt=excerpt)
        ordinal: dict[str | None, int] = {}
        out = []
        for piece, n in zip(pieces, self.counter.texts([self._wrapped(p.text) for p in pieces])):
            section = piece.section or unit.section
            ordinal[section] = ordinal.get(section, -1) + 1
            out.append(Unit(section, ordinal[section], piece.text, n))
        return out

    # -- examples ----------------------------------------------------------------------------------------

    def templates_for(self, url: str, section: str | None) -> list[str]:
        """`questions_per_document` templates, chosen by URL and section: stable across builds and re-crawls."""
        n = len(self.user_templates)
        start = _stable_int(url, section or "") % n
        return [self.user_templates[(start + i) % n] for i in range(self.questions)]

    def _fields(self, doc: Document, section: str | None, template: str) -> dict[str, str]:
        title = doc.title if not section or "{section}" in template else f"{doc.title} - {section}"
        return {"title": title, "category": doc.category, "section": section or doc.title, "url": doc.url}

    def _single_tokens(self, doc: Document, unit: Unit, template: str | None = None) -> int:
        """Tokens of a one-turn example of `unit`: with `template`, else the largest of its templates."""
        if template is None:
            return max(self._single_tokens(doc, unit, t) for t in self.templates_for(doc.url, unit.section))
        fields = self._fields(doc, unit.section, template)
        system, user = self.system_prompt.format_map(fields), template.format_map(fields)
        if self.fmt == "prompt_completion":
            return self.counter.cached(prompt_text(system, user)) + unit.tokens
        return self._system_tokens(system) + self._turn_tokens(user, unit.tokens) + chat_tokens(0, 0)

    def _system_tokens(self, system: str) -> int:
        return chat_tokens(1, self.counter.cached("system") + self.counter.cached(system)) - chat_tokens(0, 0)

    def _turn_tokens(self, user: str, answer_tokens: int) -> int:
        cached = self.counter.cached
        values = cached("user") + cached(user) + cached("assistant") + answer_tokens
        return chat_tokens(2, values) - chat_tokens(0, 0)

    def _examples(self, doc: Document, units: list[Unit], log: StageLog) -> Iterator[Example]:
        if self.turns == 1:
            for unit in units:
                for template in self.templates_for(doc.url, unit.section):
                    example = self._example(doc, [unit], [template])
                    if example.tokens <= self.limit:
                        yield example
                    else:  # a piece whose section name made the question longer than allowed for
                        log.drop(example, "over_limit", f"{doc.url} ({example.tokens} tokens)")
            return
        for variant in range(self.questions):
            conversation: list[Unit] = []
            tokens = 0
            for unit in units:
                template = self.templates_for(doc.url, unit.section)[variant]
                user = template.format_map(self._fields(doc, unit.section, template))
                turn = self._turn_tokens(user, unit.tokens)
                if conversation and (len(conversation) == self.turns or tokens + turn > self.limit):
                    yield self._conversation(doc, conversation, variant)
                    conversation = []
                if not conversation:
                    first = self.templates_for(doc.url, unit.section)[variant]
                    system = self.system_prompt.format_map(self._fields(doc, unit.section, first))
                    tokens = chat_tokens(0, 0) + self._system_tokens(system)
                conversation.append(unit)
                tokens += turn
            if conversation:
                yield self._conversation(doc, conversation, variant)

    def _conversation(self, doc: Document, units: list[Unit], variant: int) -> Example:
        return self._example(doc, units, [self.templates_for(doc.url, u.section)[variant] for u in units])

    def _example(self, doc: Document, units: list[Unit], templates: list[str]) -> Example:
        first = units[0]
        fields = self._fields(doc, first.section, templates[0])
        system = self.system_prompt.format_map(fields)
        messages = [{"role": "system", "content": system}]
        tokens = chat_tokens(0, 0) + self._system_tokens(system)
        last = len(units) - 1
        for i, (unit, template) in enumerate(zip(units, templates)):
            user = template.format_map(self._fields(doc, unit.section, template))
            assistant: dict = {"role": "assistant", "content": unit.text}
            if self.train_on == "last" and len(units) > 1:
                assistant["weight"] = int(i == last)
            messages += [{"role": "user", "content": user}, assistant]
            tokens += self._turn_tokens(user, unit.tokens)
        if self.fmt == "prompt_completion":
            tokens = self.counter.cached(prompt_text(system, messages[1]["content"])) + first.tokens
        key = f"{doc.url}\x00{first.section or ''}\x00{first.ordinal}\x00{templates[0]}"
        if len(units) > 1:
            key += "".join(f"\x00{u.section or ''}\x00{u.ordinal}\x00{t}" for u, t in zip(units[1:], templates[1:]))
        return Example(
            example_id=hashlib.sha256(key.encode("utf-8")).hexdigest()[:16],
            document_id=doc.id,
            url=doc.url,
            source=doc.source,
            category=doc.category,
            title=doc.title,
            section=first.section,
            messages=messages,
            tokens=tokens,
            answer_tokens=sum(u.tokens for u in units),
            language=doc.language,
        )
