"""Line formats: the writer's output against the API schema, golden files, and validate for DPO,
prompt/completion and tool-calling examples with line numbers.

Refresh the golden files only on purpose: CRAWL2TUNE_REFRESH_GOLDEN=1 python -m pytest tests/test_formats.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema
import pytest

from conftest import chat, write_jsonl
from dataset_state import guide_pages, make_config, page, write_pages
from transforms.build import build
from configs.model_registry import lookup
from transforms.tokens import TokenCounter
from transforms.validate import validate_file

GOLDEN = Path(__file__).parent / "golden"
SCHEMA_FILE = Path(__file__).with_name("openai_schemas.json")
GPT4O_MINI = lookup("gpt-4o-mini-2024-07-18")
BABBAGE = lookup("babbage-002")


def schema_validator(name: str):
    spec = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    schema = dict(spec["x-training-input-schemas"][name]["schema"])
    schema["components"] = spec["components"]
    return jsonschema.Draft202012Validator(schema)


def golden_pages():
    pages = guide_pages(12)
    pages.append(page("sections", "# 섹션 문서\n\n소개 문단입니다. 연계 플랫폼의 채널을 소개합니다.\n\n## 설정\n\n"
                      "설정 방법입니다. 타임아웃은 30초입니다.\n\n```yaml\ntimeout: 30\n```\n\n### 재시도\n\n"
                      "재시도는 세 번까지 합니다. 문의: ops@corp.example.com", title="섹션 문서"))
    return pages


@pytest.mark.parametrize("model,schema,golden", [
    ("gpt-4o-mini-2024-07-18", "FineTuneChatRequestInput", "chat"),
    ("babbage-002", "FineTuneCompletionRequestInput", "prompt_completion"),
])
def test_written_lines_match_the_api_schema_and_the_golden_files(tmp_path, model, schema, golden):
    write_pages(tmp_path / "out", golden_pages())
    config = make_config(tmp_path, """
        test_fraction: 0.2
        granularity: section
        questions_per_document: 2
        user_templates: ["{title} 관련 내용을 알려줘.", "{title}의 {section}은?"]
    """, top=f"model: {model}")
    version = build(config).version_dir
    validator = schema_validator(schema)
    for split in ("train", "test"):
        data = (version / f"{split}.jsonl").read_bytes()
        for line in data.decode("utf-8").splitlines():
            validator.validate(json.loads(line))
        path = GOLDEN / f"{golden}.{split}.jsonl"
        if os.environ.get("CRAWL2TUNE_REFRESH_GOLDEN"):
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(data)
        assert data == path.read_bytes(), f"{path} differs; refresh with CRAWL2TUNE_REFRESH_GOLDEN=1 if intended"
    report = validate_file(version / "train.jsonl", lookup(model), TokenCounter(lookup(model).encoding))
    assert report.ok and report.format == golden


def test_multi_turn_weighted_examples_match_the_chat_schema(tmp_path):
    write_pages(tmp_path / "out", golden_pages())
    config = make_config(tmp_path, "granularity: section\nturns_per_example: 3\ntrain_on: last\ntest_fraction: 0.1")
    version = build(config).version_dir
    validator = schema_validator("FineTuneChatRequestInput")
    lines = [json.loads(l) for l in (version / "train.jsonl").read_text("utf-8").splitlines()]
    assert any(m.get("weight") == 0 for line in lines for m in line["messages"])
    for line in lines:
        validator.validate(line)


def dpo(question="Sync 채널 타임아웃은?", good="30초입니다.", bad="모릅니다."):
    return {"input": {"messages": [{"role": "system", "content": "가이드 도우미"},
                                   {"role": "user", "content": question}]},
            "preferred_output": [{"role": "assistant", "content": good}],
            "non_preferred_output": [{"role": "assistant", "content": bad}]}


def pc(prompt="Sync 채널 타임아웃은?\n\n###\n\n", completion=" 30초입니다. END"):
    return {"prompt": prompt, "completion": completion}


def report_for(tmp_path, rows, spec=GPT4O_MINI, **kwargs):
    return validate_file(write_jsonl(tmp_path / "data.jsonl", rows), spec, TokenCounter(spec.encoding), **kwargs)


def test_a_valid_preference_file_passes_and_matches_the_schema(tmp_path):
    rows = [dpo(f"질문 {i}") for i in range(10)]
    rows.append({**dpo(), "input": {**dpo()["input"], "tools": [
        {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
        "parallel_tool_calls": False}})
    report = report_for(tmp_path, rows)
    assert report.ok and report.format == "preference" and report.examples == 11
    validator = schema_validator("FineTunePreferenceRequestInput")
    for row in rows:
        validator.validate(row)
    counter = TokenCounter(GPT4O_MINI.encoding)
    assert report.tokens[0] == max(
        3 + 3 * 3 + sum(counter.texts(["system", "가이드 도우미", "user", "질문 0", "assistant", answer]))
        for answer in ("30초입니다.", "모릅니다."))


BAD_DPO = {
    "example_unrecognized_key": {**dpo(), "metadata": {}},
    "missing_messages_list": {**dpo(), "input": {"messages": []}},
    "invalid_preference_output": {**dpo(), "non_preferred_output": [{"role": "assistant", "content": "a"},
                                                                    {"role": "assistant", "content": "b"}]},
    "message_unrecognized_key": {**dpo(), "preferred_output": [{"role": "assistant", "content": "a", "weight": 1}]},
    "unrecognized_role": {**dpo(), "input": {"messages": [{"role": "robot", "content": "q"}]}},
    "missing_content": {**dpo(), "preferred_output": [{"role": "assistant", "content": " "}]},
    "invalid_tools": {**dpo(), "input": {**dpo()["input"], "tools": [{"type": "function"}]}},
}


@pytest.mark.parametrize("category", sorted(BAD_DPO))
def test_each_preference_error_is_reported_with_its_line(tmp_path, category):
    rows = [dpo(f"질문 {i}") for i in range(10)]
    rows.insert(4, BAD_DPO[category])
    report = report_for(tmp_path, rows)
    assert report.errors == {category: 1} and report.first_lines[category] == [5]


BAD_PC = {
    "missing_prompt_or_completion": {"prompt": "q"},
    "example_unrecognized_key": {**pc(), "suffix": "x"},
    "data_type": ["prompt", "completion"],
    "invalid_json": '{"prompt": "q", ',
}


@pytest.mark.parametrize("category", sorted(BAD_PC))
def test_each_prompt_completion_error_is_reported_with_its_line(tmp_path, category):
    rows = [pc(f"질문 {i}\n\n###\n\n") for i in range(10)]
    rows.insert(2, BAD_PC[category])
    report = report_for(tmp_path, rows, spec=BABBAGE)
    assert report.errors == {category: 1} and report.first_lines[category] == [3]


def test_prompt_completion_counts_and_passes_for_babbage(tmp_path):
    report = report_for(tmp_path, [pc() for _ in range(10)], spec=BABBAGE)
    counter = TokenCounter(BABBAGE.encoding)
    assert report.ok and report.format == "prompt_completion"
    assert report.tokens[0] == sum(counter.texts(list(pc().values())))


def test_a_format_the_model_cannot_train_on_is_named(tmp_path):
    chat_for_babbage = report_for(tmp_path, [chat() for _ in range(10)], spec=BABBAGE)
    assert chat_for_babbage.errors == {"wrong_format_for_model": 10}
    pc_for_gpt = report_for(tmp_path, [pc() for _ in range(10)])
    assert pc_for_gpt.errors == {"wrong_format_for_model": 10}
    assert pc_for_gpt.first_lines["wrong_format_for_model"] == [1, 2, 3, 4, 5]


BAD_TOOLS = {
    "tool message without tool_call_id": {"messages": [
        {"role": "user", "content": "q"},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                               "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "content": "30"}, {"role": "assistant", "content": "a"}]},
    "tool call without a function name": {"messages": [
        {"role": "user", "content": "q"},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"arguments": "{}"}}]}]},
    "parallel_tool_calls not a boolean": {**chat(), "parallel_tool_calls": "yes"},
    "functions empty": {**chat(), "functions": []},
    "weight on a user message": {"messages": [{"role": "user", "content": "q", "weight": 1},
                                              {"role": "assistant", "content": "a"}]},
}
EXPECTED_TOOLS = {
    "tool message without tool_call_id": "message_missing_key",
    "tool call without a function name": "invalid_tools",
    "parallel_tool_calls not a boolean": "invalid_tools",
    "functions empty": "invalid_tools",
    "weight on a user message": "invalid_weight",
}


@pytest.mark.parametrize("case", sorted(BAD_TOOLS))
def test_tool_calling_errors_are_reported_with_their_line(tmp_path, case):
    rows = [chat(f"q{i}", f"a{i}") for i in range(10)]
    rows.insert(9, BAD_TOOLS[case])
    report = report_for(tmp_path, rows)
    category = EXPECTED_TOOLS[case]
    assert report.errors == {category: 1} and report.first_lines[category] == [10]
