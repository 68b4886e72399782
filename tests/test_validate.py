import json

import pytest

from conftest import chat, write_jsonl
from pipeline import main
from configs.model_registry import lookup
from transforms.tokens import TokenCounter
from transforms.validate import validate_file, validate_lines

SPEC = lookup("gpt-4o-mini-2024-07-18")
COUNTER = TokenCounter(SPEC.encoding)


def report_for(rows, tmp_path, **kwargs):
    return validate_file(write_jsonl(tmp_path / "data.jsonl", rows), SPEC, COUNTER, **kwargs)


def ten_good():
    return [chat(f"질문 {i}", f"답변 {i}") for i in range(10)]


BAD_LINES = {
    "invalid_json": '{"messages": [',
    "data_type": [1, 2, 3],
    "missing_messages_list": {"messages": "HTTP 관련 내용"},
    "example_unrecognized_key": {**chat(), "metadata": {"url": "x"}},
    "message_missing_key": {"messages": [{"content": "no role"}, {"role": "assistant", "content": "a"}]},
    "message_unrecognized_key": {"messages": [{"role": "user", "content": "q", "url": "x"},
                                              {"role": "assistant", "content": "a"}]},
    "unrecognized_role": {"messages": [{"role": "bot", "content": "q"}, {"role": "assistant", "content": "a"}]},
    "missing_content": {"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "a"}]},
    "example_missing_assistant_message": {"messages": [{"role": "user", "content": "q"}]},
    "invalid_weight": {"messages": [{"role": "user", "content": "q"},
                                    {"role": "assistant", "content": "a", "weight": 0.5}]},
    "invalid_tools": {"messages": [{"role": "user", "content": "q"},
                                   {"role": "assistant", "tool_calls": [{"id": 3}]}]},
}


@pytest.mark.parametrize("category", sorted(BAD_LINES))
def test_each_category_is_reported_with_its_line_number(category, tmp_path):
    rows = ten_good()
    rows.insert(6, BAD_LINES[category])
    report = report_for(rows, tmp_path)
    assert report.errors == {category: 1}
    assert report.first_lines[category] == [7]


def test_too_many_tokens_uses_the_limit(tmp_path):
    rows = ten_good() + [chat("긴 질문", "가나다 " * 300)]
    report = report_for(rows, tmp_path, limit=200)
    assert report.errors == {"too_many_tokens": 1}
    assert report.first_lines["too_many_tokens"] == [11]


def test_fewer_than_ten_examples_is_an_error(tmp_path):
    report = report_for(ten_good()[:9], tmp_path)
    assert report.errors == {"insufficient_examples": 1}


def test_current_api_chat_extensions_are_not_flagged(tmp_path):
    tool_example = {
        "messages": [
            {"role": "system", "content": "You look up channel settings."},
            {"role": "user", "content": "Sync 채널 타임아웃은?"},
            {"role": "assistant", "content": None, "weight": 0, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_setting", "arguments": "{\"k\": 1}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "30s"},
            {"role": "assistant", "content": "30초입니다.", "weight": 1},
        ],
        "tools": [{"type": "function", "function": {"name": "get_setting", "parameters": {"type": "object"}}}],
        "parallel_tool_calls": False,
    }
    function_example = {
        "messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}},
            {"role": "function", "name": "f", "content": "{}"},
            {"role": "assistant", "content": "done"},
        ],
        "functions": [{"name": "f", "parameters": {"type": "object"}}],
    }
    report = report_for(ten_good() + [tool_example, function_example], tmp_path)
    assert report.errors == {}
    assert report.examples == 12


@pytest.mark.parametrize("line", ["42", "null", "[]", '"text"', "true", "[" * 100_000 + "]" * 100_000,
                                  '{"messages": null}', '{"messages": [null, 1, "x"]}',
                                  '{"messages": [{"role": null, "content": 5}]}', '{"messages": {"role": "user"}}',
                                  "\ufeff{}", '{"messages": [{"role": ["user"], "content": "x"}]}'])
def test_odd_input_never_crashes(line, tmp_path):
    report = report_for(ten_good() + [line], tmp_path)
    assert report.errors and "insufficient_examples" not in report.errors


def test_token_statistics_epochs_and_cost(tmp_path):
    report = report_for(ten_good() * 5, tmp_path)
    assert report.ok and report.examples == 50
    assert report.n_epochs == 3  # 50 × 3 = 150 ≥ 100
    assert report.billed_tokens == sum(report.tokens) * 3
    assert report.estimated_cost_usd == round(report.billed_tokens * 3.00 / 1e6, 4)
    small = validate_lines([json.dumps(chat()) for _ in range(10)], SPEC, COUNTER)
    assert small.n_epochs == 10  # 10 examples: 100 // 10


def test_cli_json_output_and_exit_codes(tmp_path, capsys):
    good = write_jsonl(tmp_path / "good.jsonl", ten_good())
    assert main(["validate", str(good), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["examples"] == 10 and out["errors"] == {}
    assert {"tokens_total", "n_epochs", "estimated_cost_usd"} <= set(out)

    bad = write_jsonl(tmp_path / "bad.jsonl", ten_good() + ['{"messages": ['])
    assert main(["validate", str(bad)]) == 1
    text = capsys.readouterr().out
    assert "invalid_json" in text and "lines 11" in text


def test_cli_refuses_a_retired_model(tmp_path, capsys):
    good = write_jsonl(tmp_path / "good.jsonl", ten_good())
    assert main(["validate", str(good), "--model", "gpt-3.5-turbo-0613"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "retired on 2026-10-23" in err


def test_a_large_file_checked_in_parts_reports_the_same_as_in_one_piece(tmp_path, monkeypatch):
    import transforms.validate as validate

    rows = ten_good() * 30
    for at, bad in ((3, BAD_LINES["invalid_json"]), (150, BAD_LINES["missing_content"]),
                    (290, BAD_LINES["invalid_weight"])):
        rows.insert(at, bad)
    path = write_jsonl(tmp_path / "big.jsonl", rows)
    whole = validate_file(path, SPEC, COUNTER)
    monkeypatch.setattr(validate, "PARALLEL_BYTES", 1)
    parts = validate_file(path, SPEC, COUNTER, processes=2)
    assert parts.as_dict() == whole.as_dict()
    assert parts.first_lines == {"invalid_json": [4], "missing_content": [151], "invalid_weight": [291]}
