"""The documentation cannot drift from the code: the config reference is the generator's output, and every
command and option of pipeline.py is documented in docs/."""

from __future__ import annotations

import argparse
import contextlib
import io
import re
from pathlib import Path

import pytest

from configs.reference import COMMAND, reference
from pipeline import main, parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = "\n".join(p.read_text(encoding="utf-8") for p in sorted((ROOT / "docs").glob("*.md")))


def _commands(p: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and sub-command of the parser, as the words typed after `pipeline.py`."""
    found = [path] if path else []
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found += _commands(child, path + (name,))
    return found


COMMANDS = _commands(parser())


def _help(argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit:
        main([*argv, "--help"])
    assert exit.value.code == 0
    return out.getvalue()


def test_config_reference_is_the_generators_output():
    written = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    assert written == reference(), f"docs/config.md is out of date with configs/__init__.py; run `{COMMAND}`"


def test_every_command_is_walked():
    assert {("run",), ("review", "apply"), ("jobs", "checkpoints"), ("models", "delete")} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_and_option_is_documented(command):
    text = _help(list(command))
    assert f"usage: pipeline.py {' '.join(command)}" in text
    assert re.search(rf"\b{re.escape(' '.join(command))}\b", DOCS), f"`{' '.join(command)}` is not in docs/"
    options = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text)) - {"--help"}
    missing = sorted(o for o in options if not re.search(rf"{re.escape(o)}(?![\w-])", DOCS))
    assert not missing, f"options of `pipeline.py {' '.join(command)}` not in docs/: {missing}"


def test_top_level_options_are_documented():
    options = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", _help([]))) - {"--help"}
    assert options == {"--log-format"} and "--log-format" in DOCS
