"""Split a markdown page into pieces that each fit a token budget: by headings, then paragraphs, then lines of a
list, then sentences; and cut a page into its ##/### sections for section-sized examples.

Code blocks and tables are atomic: a split never cuts inside one. A piece is checked by an exact count before
it is returned; a block that cannot fit even alone is reported, never cut blindly. Lines and sentences are
joined back with the newline or space they had, so a piece's text is a verbatim stretch of the page.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Sequence

Counter = Callable[[Sequence[str]], list[int]]

_FENCE = re.compile(r"^(\s{0,3})(`{3,}|~{3,})")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_SENTENCE_END = re.compile(r"(?<=[.!?。…])\s+")
_SECTION_LEVELS = (2, 3)
SEPARATOR = "\n\n"


@dataclass(frozen=True)
class Block:
    text: str
    kind: str  # heading | code | table | paragraph
    level: int = 0  # heading level, 0 for other blocks
    glue: str = SEPARATOR  # what joins it to the block before it: a blank line, a newline (list lines), a space


@dataclass(frozen=True)
class Piece:
    text: str
    section: str | None  # the heading the piece starts under, if any


def parse_blocks(markdown: str) -> list[Block]:
    """Markdown → blocks separated by blank lines; fenced code and tables stay whole."""
    blocks: list[Block] = []
    lines = markdown.split("\n")
    i = 0
    para: list[str] = []

    def flush() -> None:
        if para:
            blocks.append(Block("\n".join(para), "paragraph"))
            para.clear()

    while i < len(lines):
        line = lines[i]
        fence = _FENCE.match(line)
        if fence:
            flush()
            marker = fence.group(2)
            end = i + 1
            while end < len(lines) and not lines[end].strip().startswith(marker[0] * len(marker)):
                end += 1
            blocks.append(Block("\n".join(lines[i : end + 1]), "code"))
            i = end + 1
            continue
        heading = _HEADING.match(line)
        if heading:
            flush()
            blocks.append(Block(line, "heading", len(heading.group(1))))
        elif line.lstrip().startswith("|"):
            flush()
            end = i
            while end + 1 < len(lines) and lines[end + 1].lstrip().startswith("|"):
                end += 1
            blocks.append(Block("\n".join(lines[i : end + 1]), "table"))
            i = end
        elif not line.strip():
            flush()
        else:
            para.append(line)
        i += 1
    flush()
    return blocks


def heading_text(block: Block) -> str:
    match = _HEADING.match(block.text)
    return match.group(2) if match else block.text


def _sentences(block: Block) -> list[Block]:
    return [Block(p, "paragraph", glue=" ") for p in _SENTENCE_END.split(block.text) if p.strip()]


def _lines(block: Block) -> list[Block]:
    return [Block(line, "paragraph", glue="\n") for line in block.text.split("\n") if line.strip()]


def join(blocks: Sequence[Block]) -> str:
    """The text of consecutive blocks, each joined by its own glue."""
    if not blocks:
        return ""
    return blocks[0].text + "".join(b.glue + b.text for b in blocks[1:])


class Chunker:
    """Pack blocks into pieces of at most `budget` tokens of text, as counted by `count`."""

    def __init__(self, count: Counter, budget: int):
        self.count = count
        self.budget = budget

    def split(self, markdown: str) -> tuple[list[Piece], list[str]]:
        """Pieces that fit, and excerpts of the blocks that could not fit even alone."""
        blocks = parse_blocks(markdown)
        sizes = dict(zip(blocks, self.count([b.text for b in blocks])))
        too_big: list[str] = []
        groups = self._verified(self._fit(blocks, sizes, too_big), too_big)
        return _with_sections(groups), too_big

    def _total(self, blocks: Sequence[Block], sizes: dict[Block, int]) -> int:
        return sum(sizes[b] for b in blocks) + max(len(blocks) - 1, 0)

    def _fit(self, blocks: list[Block], sizes: dict[Block, int], too_big: list[str]) -> list[list[Block]]:
        if not blocks:
            return []
        if self._total(blocks, sizes) <= self.budget:
            return [blocks]
        levels = sorted({b.level for b in blocks[1:] if b.kind == "heading"})
        if levels:
            groups = _split_at(blocks, levels[0])
        elif len(blocks) > 1:
            groups = [[b] for b in blocks]
        elif blocks[0].kind == "paragraph" and (
            len(parts := _lines(blocks[0])) > 1 or len(parts := _sentences(blocks[0])) > 1
        ):
            parts[0] = Block(parts[0].text, "paragraph", glue=blocks[0].glue)  # keeps the paragraph's own glue
            sizes.update(zip(parts, self.count([p.text for p in parts])))
            groups = [[p] for p in parts]
        else:
            too_big.append(blocks[0].text[:200])
            return []
        fitted = [piece for group in groups for piece in self._fit(group, sizes, too_big)]
        return self._pack(fitted, sizes)

    def _pack(self, pieces: list[list[Block]], sizes: dict[Block, int]) -> list[list[Block]]:
        packed: list[list[Block]] = []
        for piece in pieces:
            if packed and self._total(packed[-1] + piece, sizes) <= self.budget:
                packed[-1] = packed[-1] + piece
            else:
                packed.append(list(piece))
        return packed

    def _verified(self, groups: list[list[Block]], too_big: list[str]) -> list[list[Block]]:
        """Exact count of each joined piece; one over budget (token merges at joins) sheds its last block."""
        counts = self.count([join(g) for g in groups])
        verified: list[list[Block]] = []
        for group, n in zip(groups, counts):
            if n <= self.budget:
                verified.append(group)
            elif len(group) > 1:
                verified.extend(self._verified([group[:-1], group[-1:]], too_big))
            else:
                too_big.append(group[0].text[:200])
        return verified


def _with_sections(groups: list[list[Block]]) -> list[Piece]:
    """Name each piece by the section (## and deeper; # is the page title) it starts in."""
    pieces, section = [], None
    for group in groups:
        if group[0].kind == "heading" and group[0].level > 1:
            section = heading_text(group[0])
        pieces.append(Piece(join(group), section))
        for block in group:
            if block.kind == "heading" and block.level > 1:
                section = heading_text(block)
    return pieces


def _split_at(blocks: list[Block], level: int) -> list[list[Block]]:
    groups: list[list[Block]] = [[]]
    for block in blocks:
        if block.kind == "heading" and block.level <= level and groups[-1]:
            groups.append([])
        groups[-1].append(block)
    return groups


def sections(markdown: str) -> list[Piece]:
    """The page cut at every ## and ### heading: the intro (section None) and one piece per section.

    A ### section is named "parent > child" after the ## it sits in. A heading with no text of its own
    before the next heading is kept as the first line of the section that follows, not made an example.
    """
    pieces: list[Piece] = []
    current: list[Block] = []
    name: str | None = None
    parent: str | None = None

    def has_text() -> bool:
        return any(b.kind != "heading" for b in current)

    for block in parse_blocks(markdown):
        if block.kind == "heading" and block.level in _SECTION_LEVELS:
            if has_text():
                pieces.append(Piece(join(current), name))
                current = []
            current.append(block)
            title = heading_text(block)
            if block.level == _SECTION_LEVELS[0]:
                parent, name = title, title
            else:
                name = f"{parent} > {title}" if parent else title
        else:
            current.append(block)
    if has_text():
        pieces.append(Piece(join(current), name))
    return pieces
