"""The run ledger records every run with its counts, version and errors; a run that fails half-way leaves the
previous dataset byte-identical; `--log-format json` writes one redacted JSON object per line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from base import logs
from ops.ledger import Ledger
from ops_site import config, docs_site, runs, snapshot
from pipeline import main
from sites import Site
from test_finetune import fake, the_job  # noqa: F401  (shared fixtures)
from transforms import write


@pytest.fixture(autouse=True)
def text_logs_afterwards(monkeypatch):
    """`main(["--log-format", "json", ...])` sets the process's format; later tests expect plain text."""
    monkeypatch.setenv(logs.ENV_FORMAT, "text")
    yield
    logs.configure("text")


def test_failed_build_half_way_leaves_the_previous_dataset_byte_identical(tmp_path, capsys, monkeypatch):
    with Site(docs_site(3, 4)) as site:
        cfg = config(tmp_path, site.base)
        assert main(["run", "--config", str(cfg)]) == 0
        datasets = tmp_path / "out" / "datasets"
        before = snapshot(datasets)
        assert before["guide/latest"] == "-> v0001"

        site.pages.update(docs_site(3, 4, version=2))  # every page changed: the next build is a new version
        assert main(["crawl", "--config", str(cfg)]) == 0
        written = []
        real_add = write.DatasetWriter.add

        def add_then_fail(self, example):
            if len(written) == 5:
                raise OSError(28, "No space left on device")
            written.append(example)
            return real_add(self, example)

        monkeypatch.setattr(write.DatasetWriter, "add", add_then_fail)
        capsys.readouterr()
        assert main(["build", "--config", str(cfg)]) == 1
        assert capsys.readouterr().err == "error: [Errno 28] No space left on device\n"
        assert len(written) == 5  # it failed half-way through writing examples

        assert snapshot(datasets) == before  # nothing changed, nothing half-written left behind
        last = runs(tmp_path / "out")[-1]
        assert (last["command"], last["status"], last["dataset_version"]) == ("build", "failed", None)
        assert last["error"] == "OSError: [Errno 28] No space left on device"

        monkeypatch.undo()
        assert main(["build", "--config", str(cfg)]) == 0
        assert (datasets / "guide" / "latest").resolve().name == "v0002"


def test_ledger_records_each_run_with_stage_counts_and_runs_lists_and_shows_them(tmp_path, capsys):
    with Site(docs_site(3, 4)) as site:
        cfg = config(tmp_path, site.base)
        assert main(["run", "--config", str(cfg)]) == 0
        assert main(["build", "--config", str(cfg)]) == 0
        assert main(["crawl", "--config", str(cfg)]) == 0
    capsys.readouterr()

    rows = runs(tmp_path / "out")
    assert [(r["id"], r["command"], r["trigger"], r["status"]) for r in rows] == [
        (1, "run", "manual", "ok"), (2, "build", "manual", "ok"), (3, "crawl", "manual", "ok")]
    first = rows[0]
    assert first["dataset_version"] == "v0001" and first["started_at"] < first["finished_at"]
    assert first["counts"]["crawl"]["docs"]["new"] == 16 and first["counts"]["crawl"]["docs"]["finish_reason"] == "finished"
    build = first["counts"]["build"]
    assert build["documents"] == 16 and build["train"] + build["test"] == build["examples"]
    assert build["stages"]["compose"]["in"] == 16 and not build["unchanged"]
    assert rows[1]["counts"]["build"]["unchanged"] and rows[1]["dataset_version"] == "v0001"

    assert main(["runs", "--config", str(cfg), "--limit", "2"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[:4] for line in listed] == [["3", "ok", "manual", "crawl"], ["2", "ok", "manual", "build"]]

    assert main(["runs", "show", "1", "--config", str(cfg)]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("run 1: ok (run, manual)\n")
    assert "  dataset version: v0001; fine-tuning job: -\n" in shown
    assert "  crawl docs: 17 responses, new 16 · changed 0 · unchanged 0 · removed 0 (finished)\n" in shown  # + robots.txt
    assert f"  build v0001: 16 documents → {build['examples']} examples" in shown

    assert main(["runs", "show", "99", "--config", str(cfg)]) == 1
    assert capsys.readouterr().err.startswith("error: no run 99 in ")


def test_fine_tuning_stage_records_its_job_id(tmp_path, fake, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", fake.api_key)
    sample = Path(__file__).resolve().parents[1] / "data" / "sample_site"
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"""
output_dir: out
sources:
  - name: guide
    serve_dir: {sample}
    start_urls: ["http://guide.example.internal/index.html"]
dataset:
  name: guide
  test_fraction: 0.2
  max_tokens_per_example: 4096
finetune:
  base_url: {fake.base_url}
  poll_interval: 0
""", encoding="utf-8")
    assert main(["run", "--finetune", "--config", str(cfg)]) == 0
    with Ledger(tmp_path / "out") as ledger:
        (record,) = ledger.list()
    assert (record.status, record.job_id) == ("ok", the_job(fake).id)


def test_json_log_format_writes_one_redacted_object_per_line_with_run_id_and_stage(tmp_path, capfd, monkeypatch):
    secret = "sk-proj-" + "x7" * 20
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    with Site(docs_site(3, 4)) as site:
        cfg = config(tmp_path, site.base, progress="log")  # plain progress lines from the crawl's child process
        cfg.write_text(cfg.read_text().replace(f'"{site.base}/"', f'"{site.base}/?key={secret}"'))
        assert main(["--log-format", "json", "run", "--config", str(cfg)]) == 0
    out, err = capfd.readouterr()  # the crawl's child process writes to the same file descriptors
    assert secret not in out + err
    progress = [json.loads(line) for line in err.splitlines()]
    assert progress and all(p["stage"] == "crawl" and p["run_id"] == 1 for p in progress)
    assert any(p["message"].startswith("crawl docs: ") for p in progress)
    lines = [json.loads(line) for line in out.splitlines()]
    assert {tuple(sorted(line)) for line in lines} == {("level", "message", "run_id", "stage", "ts")}
    assert {line["run_id"] for line in lines} == {1}
    assert [line["stage"] for line in lines][0] == "crawl" and "build" in {line["stage"] for line in lines}
    assert any(line["message"].startswith("crawled docs: ") for line in lines)
    assert any("key=sk-proj***" in line["message"] or "key=***" in line["message"] for line in lines)
    assert {line["level"] for line in lines} <= {"info", "warning"}

    assert main(["build", "--config", str(tmp_path / "missing.yaml"), "--log-format", "json"]) == 1
    error = json.loads(capfd.readouterr().err)
    assert error["level"] == "error" and error["message"].startswith("error: config file ")
