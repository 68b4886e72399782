from transforms.chunk import Chunker, parse_blocks
from transforms.tokens import TokenCounter

COUNTER = TokenCounter("o200k_base")

CODE = "```json\n{\n  \"channel\": \"sync\",\n\n    \"timeout\": 30\n}\n```"
TABLE = "| 항목 | 값 |\n| --- | --- |\n| timeout | 30 |\n| retry | 3 |"


def long_page(sections: int = 12) -> str:
    parts = ["# Sync 채널 설정", "Sync 채널은 요청과 응답을 동기로 처리합니다."]
    for i in range(sections):
        parts.append(f"## 섹션 {i}")
        parts.extend(f"섹션 {i}의 문단 {j}: 타임아웃과 재시도 정책을 설정합니다. 값은 환경마다 다릅니다." * 3 for j in range(6))
        if i % 3 == 0:
            parts.append(CODE)
        if i % 4 == 1:
            parts.append(TABLE)
    return "\n\n".join(parts)


def test_blocks_keep_code_and_tables_whole():
    blocks = parse_blocks("intro\n\n" + CODE + "\n\n" + TABLE + "\n\nafter")
    assert [b.kind for b in blocks] == ["paragraph", "code", "table", "paragraph"]
    assert blocks[1].text == CODE and blocks[2].text == TABLE


def test_page_several_times_the_limit_splits_into_pieces_within_it():
    page = long_page()
    budget = 300
    assert COUNTER.texts([page])[0] > 5 * budget
    pieces, too_big = Chunker(COUNTER.texts, budget).split(page)
    assert too_big == []
    assert all(n <= budget for n in COUNTER.texts([p.text for p in pieces]))
    joined = "\n\n".join(p.text for p in pieces)
    assert joined.count(CODE) == page.count(CODE) and joined.count(TABLE) == page.count(TABLE)
    assert all(p.text.count("```") % 2 == 0 for p in pieces)
    assert pieces[1].section is not None and pieces[1].section.startswith("섹션")


def test_a_section_too_long_splits_by_paragraph_then_sentence():
    sentence = "이 문장은 충분히 길어서 토큰 예산을 빠르게 채웁니다. "
    page = "## 긴 섹션\n\n" + sentence * 200
    pieces, too_big = Chunker(COUNTER.texts, 120).split(page)
    assert too_big == [] and len(pieces) > 5
    assert all(n <= 120 for n in COUNTER.texts([p.text for p in pieces]))
    assert all(p.section == "긴 섹션" for p in pieces)


def test_a_block_that_cannot_fit_is_reported_not_cut():
    huge_code = "```\n" + "x = 1\n" * 500 + "```"
    pieces, too_big = Chunker(COUNTER.texts, 100).split("## 코드\n\n" + huge_code + "\n\n짧은 문단.")
    assert len(too_big) == 1 and too_big[0].startswith("```")
    assert all("x = 1" not in p.text for p in pieces)
