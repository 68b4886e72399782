"""Each hosted service's file rules, checked before upload (finetune/targets.py)."""

from __future__ import annotations

import json

import pytest

from finetune.targets import check_file

CHAT = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"},
                     {"role": "assistant", "content": "a", "weight": 1}]}
PAIR = {"input": {"messages": [{"role": "user", "content": "q"}]},
        "preferred_output": [{"role": "assistant", "content": "good"}],
        "non_preferred_output": [{"role": "assistant", "content": "bad"}]}


def write(tmp_path, lines: list, raw: bytes = b""):
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"".join(json.dumps(x).encode() + b"\n" for x in lines) + raw)
    return path


def test_plain_chat_examples_pass_both_services(tmp_path):
    path = write(tmp_path, [CHAT] * 3)
    assert check_file("together", path) == [] and check_file("fireworks", path) == []


def test_fireworks_refuses_tools_and_the_tool_role_that_together_takes(tmp_path):
    tool = {"messages": [{"role": "user", "content": "q"},
                         {"role": "assistant", "content": "", "tool_calls": [{"id": "1"}]},
                         {"role": "tool", "content": "42"}, {"role": "assistant", "content": "42"}]}
    path = write(tmp_path, [CHAT, CHAT, tool])
    assert check_file("together", path) == []
    problems = check_file("fireworks", path)
    assert any(p.startswith("role 'tool'") and "lines 3" in p for p in problems)
    assert any(p.startswith("tool calls") for p in problems)


def test_a_weight_other_than_0_or_1_a_late_system_message_and_bad_utf8_are_named_with_their_lines(tmp_path):
    bad = {"messages": [{"role": "user", "content": "q"}, {"role": "system", "content": "s"},
                        {"role": "assistant", "content": "a", "weight": 0.5}]}
    path = write(tmp_path, [CHAT, bad, CHAT], raw=b'{"messages": "\xff"}\n')
    problems = check_file("together", path)
    assert "weight 0.5 (0 or 1) (1×, lines 2)" in problems
    assert "a system message after the first (1×, lines 2)" in problems
    assert "a line that is not UTF-8 (1×, lines 4)" in problems


def test_preference_pairs_are_checked_for_together_and_refused_by_fireworks(tmp_path):
    broken = {**PAIR, "preferred_output": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}
    path = write(tmp_path, [PAIR, PAIR, broken])
    assert check_file("together", path, dpo=True) == ["preferred_output must be one assistant message (1×, lines 3)"]
    assert any(p.startswith("preference pairs (Fireworks trains supervised only)")
               for p in check_file("fireworks", path, dpo=True))


def test_fireworks_needs_three_examples_and_at_most_three_million(tmp_path, monkeypatch):
    from finetune import targets

    path = write(tmp_path, [CHAT, CHAT])
    assert "2 examples, fewer than Fireworks's 3 (1×)" in check_file("fireworks", path)
    assert targets.TARGETS["fireworks"].max_examples == 3_000_000
    monkeypatch.setitem(targets.TARGETS, "fireworks", targets.TARGETS["fireworks"].__class__(
        **{**targets.TARGETS["fireworks"].__dict__, "max_examples": 1}))
    assert "2 examples, more than Fireworks's 1 (1×)" in check_file("fireworks", path)


def test_together_refuses_a_file_over_its_size_limit(tmp_path, monkeypatch):
    from finetune import targets

    path = write(tmp_path, [CHAT, CHAT])
    monkeypatch.setitem(targets.TARGETS, "together", targets.TARGETS["together"].__class__(
        **{**targets.TARGETS["together"].__dict__, "max_bytes": 10}))
    assert any("over Together's 10" in p for p in check_file("together", path))
