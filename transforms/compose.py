"""Documents → examples: fill the templates, cut pages into sections if asked, and split what is over the limit.

Every example's count is exact. A page (or section) that fits is encoded once, in a batch with its neighbours;
the next batches are counted in a helper process while this one flows through the later stages. Only a page
over the limit is cut into blocks and counted again piece by piece. The helper also does a later stage's
work that depends on an answer alone (`AnswerWork`: dedup's fingerprints) for the answers it foresees.

Granularity `document` makes one answer of a page (split only to fit); `section` one per ##/### section.
`questions_per_document` asks each answer with that many of the user templates, chosen stably from the URL
and section; `turns_per_example` > 1 chains consecutive answers of a page into one conversation, and with
`train_on: last` only its last assistant turn is trained (the earlier ones carry `weight: 0`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Iterable, Iterator, Protocol

from crawlers.document import Document
from transforms.chunk import Chunker, sections
from transforms.example import Example
from transforms.formats import Format, completion_text, prompt_text
from transforms.helper import BatchHelper, batches, pipelined
from transforms.stage import Stage, StageLog
from transforms.tokens import TokenCounter, chat_tokens, count_with, get_encoding

BATCH = 256
SECTION_ALLOWANCE = 64  # tokens reserved for a section name in the question of a split page


@lru_cache(maxsize=4096)  # an answer's templates are asked for three times: for its prompts, its fit, its examples
def _stable_int(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("\x00".join(parts).encode("utf-8")).digest()[:8], "big")


class AnswerWork(Protocol):
    """A later stage's work that depends on an answer alone, done in compose's helper process for the answers
    of a batch (every unit's text, when it is the answer of its examples) as far as the helper keeps up
    (`_share`), so the two processes stay about equally busy and the counts are never delayed; `remember` is
    handed the results in the main thread before the batch's examples are made. The stage does the work
    itself for answers it was not handed."""

    @property
    def precompute(self) -> Callable[[list[str]], list[Any]]: ...  # picklable

    def remember(self, answers: list[str], results: list[Any]) -> None: ...


def _share(answers: list[str], backlog: int) -> list[str]:
    """The answers the helper is given the work of: all when it has no batch left to finish, half with one,
    none with more (it is behind; counting comes first). The stage does the rest in the main thread."""
    return answers[: len(answers) * max(0, 2 - backlog) // 2]


def _count_and_precompute(batch: tuple[list[str], list[str]], encoding_name: str,
                          precompute: Callable[[list[str]], list[Any]] | None) -> tuple[list[int], list[Any] | None]:
    """A batch's work in the helper: the counts of its texts, and `precompute` of its answers."""
    texts, answers = batch
    return count_with(texts, encoding_name), precompute(answers) if precompute else None


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
                 fmt: Format = "chat", answer_work: AnswerWork | None = None):
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
        self.answer_work = answer_work if turns == 1 else None  # a conversation's answers are its turns joined

    # -- counting ----------------------------------------------------------------------------------------

    def _wrapped(self, answer: str) -> str:
        """The text whose tokens are the answer's share of the example in this format."""
        return completion_text(answer) if self.fmt == "prompt_completion" else answer

    def _units_of(self, doc: Document) -> list[tuple[str | None, str]]:
        if self.granularity == "section":
            return [(piece.section, piece.text) for piece in sections(doc.text)]
        return [(None, doc.text)] if doc.text.strip() else []

    def _prepare(self, batch: list[Document]) -> tuple:
        """A batch's units of each document, the strings `cached` will be asked for, every text to count (all
        texts of the batch are counted in one call) and the answers for `answer_work`."""
        per_doc = [self._units_of(doc) for doc in batch]
        answers = [text for units in per_doc for _, text in units]
        texts = [self._wrapped(text) for text in answers]
        prompts = list(dict.fromkeys(
            s for doc, units in zip(batch, per_doc) for section, _ in units for s in self._prompts(doc, section)))
        return batch, per_doc, prompts, texts + prompts, answers if self.answer_work else []

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
        name = self.counter.name
        precompute = self.answer_work.precompute if self.answer_work else None
        with BatchHelper(_count_and_precompute, name, precompute, warm_up=get_encoding,
                         warm_up_args=(name,)) as helper:
            def prepared() -> Iterator[tuple]:
                for batch in batches(documents, BATCH):
                    if len(batch) == BATCH:  # more batches are likely: the helper starts up beside this one
                        helper.start()
                    yield self._prepare(batch)

            for (batch, per_doc, prompts, _, answers), (counts, results) in pipelined(
                    prepared(), lambda p: helper.submit((p[3], _share(p[4], helper.backlog())))):
                if results:
                    self.answer_work.remember(answers, results)  # of the first len(results) answers
                yield from self._compose_batch(batch, per_doc, prompts, counts, log)

    def _compose_batch(self, batch: list[Document], per_doc: list[list[tuple[str | None, str]]], prompts: list[str],
                       counts: list[int], log: StageLog) -> Iterator[Example]:
        answers = iter(counts)
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
