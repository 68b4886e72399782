"""The CLI as a user runs it, in a subprocess: light commands load no heavy library, every failure is one line."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import chat, write_jsonl
from sites import Page, Site, html_page, write_config

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("scrapy", "twisted", "torch", "openai")
CONFIG = ("output_dir: out\nsources:\n  - name: guide\n    start_urls: ['http://guide.example.internal/']\n"
          "dataset:\n  name: guide\n")


def python(code: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, **kwargs)


def loaded_after(argv: list[str]) -> tuple[int, set[str]]:
    """Exit code of `pipeline.main(argv)` and which heavy libraries it imported."""
    done = python(f"import sys, pipeline\ntry:\n    code = pipeline.main({argv!r})\nexcept SystemExit as e:\n"
                  f"    code = e.code\nprint(code, *[m for m in {HEAVY!r} if m in sys.modules])")
    assert done.returncode == 0, done.stderr
    code, *heavy = done.stdout.split("\n")[-2].split()
    return int(code), set(heavy)


def test_help_validate_and_runs_load_no_crawler_model_or_sdk(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [chat(f"질문 {i}", f"답변 {i}") for i in range(10)])
    (tmp_path / "config.yaml").write_text(CONFIG, encoding="utf-8")
    assert loaded_after(["--help"]) == (0, set())
    assert loaded_after(["validate", str(tmp_path / "train.jsonl"), "--config", "config.yaml"]) == (0, set())
    assert loaded_after(["runs", "--config", "config.yaml"]) == (0, set())


def test_help_constants_match_the_modules_they_stand_for():
    import configs
    import pipeline
    from transforms import export, validate

    assert pipeline.DEFAULT_CONFIG == configs.DEFAULT_CONFIG.resolve()
    assert pipeline.EXPORT_FORMATS == export.FORMATS
    assert pipeline.VALIDATE_FORMATS == validate.FORMATS


def test_evaluate_help_still_lists_the_sampling_flags():
    from configs import SamplingConfig
    from pipeline import parser

    text = parser()._subparsers._group_actions[0].choices["evaluate"].format_help()
    for name in SamplingConfig.model_fields:
        assert "--" + name.replace("_", "-") in text


def test_expected_error_is_one_line_and_exit_1(tmp_path):
    done = python(f"import sys, pipeline; sys.exit(pipeline.main(['validate', {str(tmp_path / 'none.jsonl')!r}]))")
    assert done.returncode == 1
    assert done.stderr.splitlines() == [f"error: {tmp_path / 'none.jsonl'} is not a file; pass the JSONL file to check"]


def test_unexpected_exception_is_one_line_naming_the_log_with_the_traceback(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [chat() for _ in range(10)])
    (tmp_path / "config.yaml").write_text(CONFIG, encoding="utf-8")
    done = python("import sys, pipeline, transforms.validate as v\n"
                  "def broken(*args, **kwargs):\n    raise ZeroDivisionError('a bug')\n"
                  "v.validate_file = broken\n"
                  "sys.exit(pipeline.main(['validate', 'train.jsonl', '--config', 'config.yaml']))", cwd=tmp_path)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: unexpected failure (ZeroDivisionError)")
    log = Path(lines[0].split("the traceback is in ")[1].split(" — ")[0])
    assert log.parent == tmp_path / "out" / "logs"
    text = log.read_text(encoding="utf-8")
    assert "Traceback (most recent call last)" in text and "ZeroDivisionError: a bug" in text and "broken" in text


def test_unexpected_exception_in_the_crawl_child_is_one_line_naming_the_log_with_the_traceback(tmp_path):
    # `ns|p` is a valid CSS selector (config validation passes) whose namespace prefix lxml cannot resolve: the
    # extractor, in the crawl's child process (and its extraction worker), raises XPathEvalError on the page.
    site = Site({"/": Page(html_page("Home", "<p>The one page of this site, with a few words on it.</p>"))})
    with site:
        write_config(tmp_path, f'  - name: docs\n    start_urls: ["{site.base}/"]\n    content_selector: "ns|p"\n',
                     crawl='  progress: "off"')
        done = python("import sys, pipeline; sys.exit(pipeline.main(['crawl', '--config', 'config.yaml']))",
                      cwd=tmp_path)
    assert done.returncode == 0, done.stderr  # the page is dropped (empty), the crawl goes on
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"content extraction failed for {site.base}/ (XPathEvalError); the traceback is in ")
    log = Path(lines[0].split("the traceback is in ")[1])
    assert log.parent == tmp_path / "out" / "logs" and log.name.startswith("crawl-")
    text = log.read_text(encoding="utf-8")
    assert "Traceback (most recent call last)" in text and "XPathEvalError: Undefined namespace prefix" in text


def test_ctrl_c_during_a_build_prints_one_line_from_the_whole_process_group(tmp_path):
    (tmp_path / "config.yaml").write_text(CONFIG, encoding="utf-8")
    started = tmp_path / "started"
    code = ("import sys, time, pathlib, pipeline, transforms.build as b\n"
            f"def slow(config):\n    pathlib.Path({str(started)!r}).touch()\n    time.sleep(60)\n"
            "b.build = slow\n"
            "sys.exit(pipeline.main(['build', '--config', 'config.yaml']))")
    child = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.monotonic() + 60
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(child.pid, signal.SIGINT)  # as a terminal's Ctrl-C does: every process of the command
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130
    assert err.splitlines() == ["interrupted: nothing half-written was kept, the previous dataset is intact; run the "
                                "same command again to continue"]


def test_ctrl_c_while_the_crawl_process_starts_prints_one_line(tmp_path):
    """The spawned crawl child is held in its start-up (a sitecustomize on its path sleeps there) when the
    whole process group gets SIGINT: neither process prints a traceback, the command prints its one line."""
    with Site({"/": Page(html_page("시작", "<h1>시작</h1><p>안내 문서입니다.</p>"))}) as site:
        config = write_config(tmp_path, f'  - name: docs\n    start_urls: ["{site.url("/")}"]')
        hooks = tmp_path / "hooks"
        hooks.mkdir()
        starting = tmp_path / "child-starting"
        (hooks / "sitecustomize.py").write_text(
            "import sys, time, pathlib\n"
            "if '--multiprocessing-fork' in sys.orig_argv:\n"
            f"    pathlib.Path({str(starting)!r}).touch()\n    time.sleep(2)\n", encoding="utf-8")
        child = subprocess.Popen([sys.executable, str(REPO / "pipeline.py"), "crawl", "--config", str(config)],
                                 cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 start_new_session=True, env={**os.environ, "PYTHONPATH": f"{hooks}:{REPO}"})
        deadline = time.monotonic() + 60
        while not starting.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert starting.exists()
        os.killpg(child.pid, signal.SIGINT)  # as a terminal's Ctrl-C does
        _, err = child.communicate(timeout=60)
    assert child.returncode == 130, err
    assert err.splitlines() == ["interrupted: nothing half-written was kept, the previous dataset is intact; run the "
                                "same command again to continue"]
    assert [hit.path for hit in site.hits if hit.path != "/robots.txt"] == []  # it stopped before crawling


def test_a_usage_error_is_one_line_naming_the_command_and_exits_1():
    for argv, named in ((["evaluate", "--set", "bogus"], "pipeline.py evaluate: argument --set: invalid choice"),
                        (["jobs", "show"], "pipeline.py jobs show: the following arguments are required: id"),
                        (["bogus"], "pipeline.py: argument COMMAND: invalid choice")):
        done = subprocess.run([sys.executable, str(REPO / "pipeline.py"), *argv], capture_output=True, text=True,
                              timeout=60, cwd=REPO)
        assert done.returncode == 1 and done.stdout == ""
        assert done.stderr.count("\n") == 1 and done.stderr.startswith(f"error: {named}")
        assert done.stderr.rstrip().endswith("--help")
