"""Documents → examples: templates, questions per document, granularity, multi-turn, weights, exact counts."""

from __future__ import annotations

import json

from crawlers.document import Document
from dataset_state import guide_pages, korean_paragraph, make_config, page, write_pages
from transforms.build import build
from transforms.compose import ComposeExamples
from transforms.formats import COMPLETION_STOP, PROMPT_SEPARATOR
from transforms.stage import run_stages
from transforms.tokens import TokenCounter, count_messages

O200K = TokenCounter("o200k_base")
CL100K = TokenCounter("cl100k_base")
CODE = "```python\nfor attempt in range(3):\n\n    send(message)\n```"
TABLE = "| 항목 | 값 |\n| --- | --- |\n| timeout | 30 |"


def doc(text: str, url: str = "http://guide.example.internal/sync.html", title: str = "Sync 채널",
        category: str = "[온라인] 업무 가이드") -> Document:
    return Document(url=url, source="guide", title=title, category=category, text=text, content_hash="h",
                    fetched_at="2026-11-01T00:00:00+00:00", language="ko")


def compose(docs, limit=4096, counter=O200K, **kwargs):
    system = kwargs.pop("system", "Category: {category}")
    templates = kwargs.pop("templates", ["{title} 관련 내용을 알려줘."])
    stage = ComposeExamples(counter, system, templates, limit, **kwargs)
    out, logs = run_stages(docs, [stage])
    return list(out), logs[0]


SECTIONED = (f"# Sync 채널\n\n{korean_paragraph(1)}\n\n## 타임아웃\n\n{korean_paragraph(2)}\n\n"
             f"### 재시도\n\n{korean_paragraph(3)}\n\n{CODE}\n\n## 모니터링\n\n{korean_paragraph(4)}")


def test_placeholders_fill_system_and_question_and_counts_are_exact():
    examples, _ = compose([doc("본문입니다. " * 20)], system="[{category}] {title} · {url} · {section}",
                          templates=["{title}({category}) 문서 {url}의 {section} 설명"])
    [example] = examples
    system, user, assistant = example.messages
    assert system["content"] == "[[온라인] 업무 가이드] Sync 채널 · http://guide.example.internal/sync.html · Sync 채널"
    assert user["content"] == "Sync 채널([온라인] 업무 가이드) 문서 http://guide.example.internal/sync.html의 Sync 채널 설명"
    assert assistant["content"] == "본문입니다. " * 20
    assert example.tokens == count_messages(O200K.encoding, example.messages)


def test_questions_per_document_picks_distinct_templates_the_same_way_every_time():
    templates = ["{title} 알려줘.", "{title}란?", "{title} 설명해줘.", "{title} 요약해줘."]
    docs = [doc(f"본문 {i}.", url=f"http://guide.example.internal/p{i}.html", title=f"P{i}") for i in range(20)]
    first, _ = compose(docs, templates=templates, questions=2)
    again, _ = compose(docs, templates=templates, questions=2)
    assert len(first) == 40
    assert [e.example_id for e in first] == [e.example_id for e in again]
    assert [e.question for e in first] == [e.question for e in again]
    for a, b in zip(first[::2], first[1::2]):
        assert a.url == b.url and a.answer == b.answer and a.question != b.question
    used = {e.question.split("P", 1)[1].lstrip("0123456789") for e in first}
    assert len(used) == 4  # the rotation's start depends on the page, so every template is used somewhere


def test_section_granularity_makes_one_example_per_section_naming_page_and_section():
    examples, _ = compose([doc(SECTIONED)], granularity="section")
    assert [e.section for e in examples] == [None, "타임아웃", "타임아웃 > 재시도", "모니터링"]
    assert [e.question for e in examples] == [
        "Sync 채널 관련 내용을 알려줘.", "Sync 채널 - 타임아웃 관련 내용을 알려줘.",
        "Sync 채널 - 타임아웃 > 재시도 관련 내용을 알려줘.", "Sync 채널 - 모니터링 관련 내용을 알려줘."]
    assert CODE in examples[2].answer and examples[2].answer.startswith("### 재시도\n\n")
    assert examples[1].answer.startswith("## 타임아웃\n\n") and "재시도\n" not in examples[1].answer
    assert len({e.example_id for e in examples}) == 4
    assert all(e.tokens == count_messages(O200K.encoding, e.messages) for e in examples)


def test_section_placeholder_keeps_the_title_plain():
    examples, _ = compose([doc(SECTIONED)], granularity="section", templates=["{title}의 {section}은?"])
    assert examples[1].question == "Sync 채널의 타임아웃은?"


def test_multi_turn_chains_sections_and_trains_on_the_last_turn_only():
    examples, _ = compose([doc(SECTIONED)], granularity="section", turns=3, train_on="last")
    assert [len(e.messages) for e in examples] == [7, 3]
    roles = [m["role"] for m in examples[0].messages]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user", "assistant"]
    assert [m.get("weight") for m in examples[0].messages if m["role"] == "assistant"] == [0, 0, 1]
    assert "weight" not in examples[1].messages[-1]  # a one-turn conversation needs no weights
    for example in examples:
        assert example.tokens == count_messages(O200K.encoding, example.messages)


def test_multi_turn_conversations_stay_within_the_limit():
    long_doc = doc("\n\n".join(f"## 섹션 {i}\n\n{korean_paragraph(i, 6)}" for i in range(12)))
    examples, _ = compose([long_doc], granularity="section", turns=10, limit=600)
    assert len(examples) > 2
    assert all(count_messages(O200K.encoding, e.messages) == e.tokens <= 600 for e in examples)


def test_a_page_several_times_the_limit_is_split_with_every_example_within_it():
    sections = []
    for i in range(10):
        sections.append(f"## 섹션 {i}\n\n" + "\n\n".join(korean_paragraph(i * 10 + j, 5) for j in range(4)))
        if i % 3 == 0:
            sections.append(CODE)
        if i % 4 == 1:
            sections.append(TABLE)
    text = "# 긴 문서\n\n" + "\n\n".join(sections)
    limit = 400
    assert O200K.texts([text])[0] > 5 * limit
    examples, log = compose([doc(text)], limit=limit, templates=["{title} 알려줘.", "{title}의 {section}?"],
                            questions=2)
    assert not log.dropped
    assert len(examples) >= 10
    for example in examples:
        assert count_messages(O200K.encoding, example.messages) == example.tokens <= limit
        assert example.answer.count("```") % 2 == 0
    answers = {e.answer for e in examples}
    assert sum(a.count(CODE) for a in answers) == text.count(CODE)
    assert sum(a.count(TABLE) for a in answers) == text.count(TABLE)


def test_what_cannot_fit_is_dropped_with_a_reason():
    huge_code = "```\n" + "value = compute(value)\n" * 400 + "```"
    examples, log = compose([doc(f"# 코드\n\n짧은 설명입니다.\n\n{huge_code}\n\n끝 문단입니다.")], limit=300)
    assert log.dropped == {"block_over_limit": 1}
    assert all("compute(value)" not in e.answer for e in examples)
    assert all(e.tokens <= 300 for e in examples)


def test_babbage_gets_prompt_completion_lines_with_exact_counts():
    examples, _ = compose([doc("Sync 채널은 동기 방식입니다.")], counter=CL100K, fmt="prompt_completion")
    [example] = examples
    line = example.record("prompt_completion")
    assert set(line) == {"prompt", "completion"}
    assert line["prompt"] == f"Category: [온라인] 업무 가이드\n\nSync 채널 관련 내용을 알려줘.{PROMPT_SEPARATOR}"
    assert line["completion"] == f" Sync 채널은 동기 방식입니다.{COMPLETION_STOP}"
    assert example.tokens == sum(len(CL100K.encoding.encode_ordinary(v)) for v in line.values())


def test_build_for_babbage_writes_prompt_completion_files(tmp_path):
    write_pages(tmp_path / "out", guide_pages(14))
    config = make_config(tmp_path, "test_fraction: 0.1", top="model: babbage-002")
    result = build(config)
    lines = [json.loads(line) for line in (result.version_dir / "train.jsonl").read_text("utf-8").splitlines()]
    assert lines and all(set(line) == {"prompt", "completion"} for line in lines)
    assert result.manifest.format == "prompt_completion"


def test_empty_pages_are_dropped_with_a_reason():
    examples, log = compose([doc("   \n"), doc("내용", url="http://guide.example.internal/b.html")])
    assert len(examples) == 1 and log.dropped == {"empty_document": 1}


def test_example_ids_do_not_depend_on_the_page_text():
    before, _ = compose([doc(SECTIONED)], granularity="section")
    after, _ = compose([doc(SECTIONED.replace("모니터링\n\n", "모니터링\n\n바뀐 문장입니다. "))], granularity="section")
    assert [e.example_id for e in before] == [e.example_id for e in after]
    assert page("x", "y")["url"].endswith("/x.html")


def test_batches_of_any_size_give_the_same_examples(monkeypatch):
    docs = [doc(f"{korean_paragraph(i)}\n\n본문 {i}.", url=f"http://guide.example.internal/p{i}.html", title=f"P{i}")
            for i in range(40)]
    here, _ = compose(docs)
    monkeypatch.setattr("transforms.compose.BATCH", 3)  # 14 batches, the last one short
    batched, _ = compose(docs)
    assert [e.model_dump() for e in batched] == [e.model_dump() for e in here]
    assert all(e.tokens == count_messages(O200K.encoding, e.messages) for e in batched)
