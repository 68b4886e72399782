from pathlib import Path

import pytest

from configs import DEFAULT_CONFIG, ConfigError, load_config
from pipeline import main

BASE = """
output_dir: out
sources:
  - name: guide
    start_urls: ["http://127.0.0.1:8000/"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_example_config_loads_and_paths_are_relative_to_the_file():
    config = load_config(DEFAULT_CONFIG)
    assert config.output_dir == DEFAULT_CONFIG.parent.parent / "data" / "output"
    assert config.sources[0].serve_dir == DEFAULT_CONFIG.parent.parent / "data" / "sample_site"
    assert config.token_limit == 4096


def test_defaults_fill_the_dataset_section(tmp_path):
    config = load_config(write(tmp_path, BASE))
    assert config.model == "gpt-4o-mini-2024-07-18"
    assert config.dataset.user_templates == ["{title} 관련 내용을 알려줘."]
    assert config.sources[0].domains == ["127.0.0.1"]
    assert config.token_limit == 65_536


@pytest.mark.parametrize("extra,where", [
    ("dataset:\n  test_fracton: 0.1\n", "dataset.test_fracton: unknown key"),
    ("dataset:\n  test_fraction: 2\n", "dataset.test_fraction: Input should be less than 1"),
    ("model: gpt-5\n", "model: unknown model 'gpt-5'"),
    ("dataset:\n  max_tokens_per_example: 100000\n", "exceeds gpt-4o-mini-2024-07-18's limit of 65536"),
    ("dataset:\n  user_templates: ['{titel} 알려줘']\n", "dataset.user_templates: unknown placeholder {titel}"),
])
def test_errors_name_the_file_and_the_field_path(tmp_path, extra, where):
    path = write(tmp_path, BASE + extra)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: ")
    assert where in str(err.value)


def test_bad_source_fields_are_named(tmp_path):
    path = write(tmp_path, "sources:\n  - name: x\n    start_urls: [ftp://h/]\n    include: ['(']\n")
    message = str(pytest.raises(ConfigError, load_config, path).value)
    assert "sources.0.start_urls: Value error, 'ftp://h/' is not an absolute http(s) URL" in message.replace(
        "Value error, ", "Value error, ") or "sources.0.start_urls" in message
    assert "sources.0.include" in message and "not a valid regex" in message


def test_missing_file_and_bad_yaml_get_one_line(tmp_path, capsys):
    assert main(["build", "--config", str(tmp_path / "nope.yaml")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not found" in err and "--config" in err
    bad = write(tmp_path, "sources: [\n")
    assert main(["build", "--config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot read YAML" in err


def _paths(node, where=()):
    """Every (path, value) of a parsed YAML tree, sections and leaves, list items by index."""
    yield where, node
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        yield from _paths(value, (*where, key))


def _replaced(node, where, value):
    if not where:
        return value
    copy = dict(node) if isinstance(node, dict) else list(node)
    copy[where[0]] = _replaced(node[where[0]], where[1:], value)
    return copy


def test_a_value_of_any_wrong_type_anywhere_in_the_example_is_a_config_error(tmp_path):
    import yaml

    example = yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8"))
    tried = 0
    for where, _ in _paths(example):
        if not where:
            continue
        for wrong in (3, "x", [1], {"k": 1}, None, True):
            path = tmp_path / "config.yaml"
            path.write_text(yaml.safe_dump(_replaced(example, where, wrong)), encoding="utf-8")
            tried += 1
            try:
                load_config(path)
            except ConfigError as exc:
                assert "\n" not in str(exc)
    assert tried > 100
