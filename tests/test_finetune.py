"""`finetune` through the real openai SDK against the local fake: refusals, idempotent uploads, the wait, errors.

The fixtures here (a started fake, and a project with a dataset version built by the pipeline from stored
documents) are shared with test_jobs.py and test_evaluate.py, which import them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import openai
import pytest

from conftest import TODAY
from crawlers.document import Document, text_hash
from base.state import state_path
from crawlers.store import PageStore
from fake_openai import FakeOpenAI
from pipeline import main

WRONG_KEY = "sk-wrong-0123456789abcdefghijklmnopWXYZ"


@pytest.fixture
def fake():
    with FakeOpenAI(today=TODAY) as server:
        yield server
    assert server.schema_violations == []


def documents(n: int = 20) -> list[Document]:
    docs = []
    for i in range(n):
        text = (f"# 주제 {i} 안내\n\n주제 {i}는 배치 작업 {i}번을 등록하는 방법을 설명합니다. 관리 화면에서 작업 {i}을 "
                f"선택하고 저장 버튼을 누르면 등록이 끝납니다. Retry policy number {i} applies to failed transfers, "
                f"and the operator checks the monitoring page for job {i} every morning.")
        docs.append(Document(url=f"http://guide.example.internal/topic-{i:02d}.html", source="guide",
                             title=f"주제 {i} 안내", category="[배치] 운영 가이드", text=text, language="ko",
                             content_hash=text_hash(text), fetched_at="2026-11-20T00:00:00+00:00"))
    return docs


@dataclass
class Project:
    root: Path
    config: Path
    fake: FakeOpenAI

    @property
    def version(self) -> Path:
        return (self.root / "out" / "datasets" / "guide" / "latest").resolve()

    def write_config(self, finetune: str = "", model: str = "gpt-4o-mini-2024-07-18") -> None:
        self.config.write_text(f"""
output_dir: out
model: {model}
sources:
  - name: guide
    start_urls: ["http://guide.example.internal/index.html"]
dataset:
  name: guide
  test_fraction: 0.2
finetune:
  base_url: {self.fake.base_url}
  poll_interval: 0
  suffix: guide
  seed: 7
{finetune}""", encoding="utf-8")

    def run(self, *argv: str) -> int:
        return main([*argv, "--config", str(self.config)])

    def uploads(self) -> list:
        return self.fake.find_requests("POST", "/v1/files") + self.fake.find_requests("POST", "/v1/uploads")


@pytest.fixture
def project(tmp_path, fake, monkeypatch) -> Project:
    """A config pointing at the fake, the key in the environment, and dataset v0001 built by the pipeline."""
    from configs import load_config
    from transforms.build import build

    monkeypatch.setenv("OPENAI_API_KEY", fake.api_key)
    p = Project(tmp_path, tmp_path / "config.yaml", fake)
    p.write_config()
    with PageStore(state_path(tmp_path / "out")) as store:
        for doc in documents():
            store.save_document(doc, status=200, etag=None, last_modified=None)
    result = build(load_config(p.config))
    assert result.manifest.counts["train"] >= 10 and result.manifest.counts["test"] >= 2
    return p


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def the_job(fake: FakeOpenAI):
    (job,) = fake.jobs.values()
    return job


# --------------------------------------------------------------------------------------------------
# the happy path


def test_finetune_wait_uploads_both_splits_creates_a_supervised_job_and_follows_it_to_success(project, capsys):
    assert project.run("finetune", "--wait") == 0
    out = capsys.readouterr().out

    fake = project.fake
    train_post, test_post = fake.find_requests("POST", "/v1/files")
    assert train_post.body["purpose"] == test_post.body["purpose"] == "fine-tune"
    assert train_post.body["file"].filename == "guide-v0001-train.jsonl"
    assert train_post.body["file"].data == (project.version / "train.jsonl").read_bytes()
    assert test_post.body["file"].data == (project.version / "test.jsonl").read_bytes()

    (create,) = fake.find_requests("POST", "/v1/fine_tuning/jobs")
    files = {k: create.body.pop(k) for k in ("training_file", "validation_file")}
    assert create.body == {
        "model": "gpt-4o-mini-2024-07-18",
        "method": {"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto"}}},
        "suffix": "guide",
        "seed": 7,
        "metadata": {"dataset": "guide", "dataset_version": "v0001"},
    }
    job = the_job(fake)
    assert fake.files[files["training_file"]].data == train_post.body["file"].data
    assert fake.files[files["validation_file"]].data == test_post.body["file"].data

    assert "checked guide v0001 for gpt-4o-mini-2024-07-18: train " in out
    assert f"created job {job.id} on openai: gpt-4o-mini-2024-07-18" in out
    assert "  Files validated, moving job to queued state" in out
    assert "[queued]" in out
    total = job.plan.total_steps
    assert any(l.startswith("[running] step ") and f"/{total} · train loss " in l for l in out.splitlines())
    final_loss = job.plan.step_metrics[-1]
    assert (f"[succeeded] step {total}/{total} · train loss {final_loss['train_loss']:.4f} · "
            f"valid loss {final_loss['valid_loss']:.4f}") in out
    assert f"succeeded: {job.fine_tuned_model} ({job.trained_tokens:,} trained tokens)" in out
    assert f"python pipeline.py evaluate --model {job.fine_tuned_model}" in out

    results = project.version / "finetune" / job.id
    assert (results / "step_metrics.csv").read_text(encoding="utf-8").startswith("step,train_loss,")
    assert (results / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((results / "job.json").read_text(encoding="utf-8"))["fine_tuned_model"] == job.fine_tuned_model


def test_configured_hyperparameters_and_wandb_integration_are_sent(project, capsys):
    project.write_config("  n_epochs: 2\n  batch_size: 4\n  learning_rate_multiplier: 0.5\n"
                         "  wandb: {project: crawl2tune, tags: [guide]}\n")
    assert project.run("finetune") == 0
    (create,) = project.fake.find_requests("POST", "/v1/fine_tuning/jobs")
    assert create.body["method"]["supervised"]["hyperparameters"] == {
        "n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 0.5}
    assert create.body["integrations"] == [{"type": "wandb", "wandb": {"project": "crawl2tune", "tags": ["guide"]}}]
    assert "n_epochs 2" in capsys.readouterr().out


@pytest.mark.parametrize("setting, message", [
    ("n_epochs: 51", "finetune.n_epochs: expected 'auto' or an integer from 1 to 50, got 51"),
    ("batch_size: 0", "finetune.batch_size: expected 'auto' or an integer from 1 to 256, got 0"),
    ("learning_rate_multiplier: -1", "finetune.learning_rate_multiplier: expected 'auto' or a number > 0"),
    ("suffix: " + "x" * 65, "finetune.suffix: 'xxxxx"),
    ("provider: vertex", "finetune.provider: Input should be 'openai', 'azure', 'together', 'fireworks' or 'local'"),
    ("provider: local", "finetune: provider local needs finetune.base_model"),
])
def test_bad_finetune_settings_fail_with_the_field_path(project, capsys, setting, message):
    text = project.config.read_text(encoding="utf-8").replace("  suffix: guide\n", "")
    project.config.write_text(text + f"  {setting}\n", encoding="utf-8")
    assert project.run("finetune") == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert project.uploads() == []


# --------------------------------------------------------------------------------------------------
# refusals before anything is sent


def _bad_line(version: Path) -> None:
    with open(version / "train.jsonl", "a", encoding="utf-8") as f:
        f.write('{"messages": [{"role": "user", "content": "no answer"}]}\n{not json\n')


def _too_few(version: Path) -> None:
    keep = lines(version / "train.jsonl")[:5]
    (version / "train.jsonl").write_text("\n".join(keep) + "\n", encoding="utf-8")


def _too_long(version: Path) -> None:
    huge = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "word " * 70_000}]}
    with open(version / "train.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(huge) + "\n")


@pytest.mark.parametrize("spoil, expected", [
    (_bad_line, ["example_missing_assistant_message 1 (lines ", "invalid_json 1 (lines "]),
    (_too_few, ["5 train examples, fewer than the 10 the API requires"]),
    (_too_long, ["too_many_tokens 1 (lines "]),
])
def test_dataset_problems_are_refused_before_anything_is_uploaded(project, capsys, spoil, expected):
    spoil(project.version)
    assert project.run("finetune", "--wait") == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1
    for text in expected:
        assert text in captured.err
    assert "nothing was uploaded" in captured.err and "python pipeline.py validate" in captured.err
    assert project.uploads() == [] and project.fake.find_requests("POST", "/v1/fine_tuning/jobs") == []


def test_a_retired_model_is_refused_before_anything_is_uploaded(project, capsys):
    project.write_config(model="gpt-4.1-nano-2025-04-14")
    assert project.run("finetune") == 1
    err = capsys.readouterr().err
    assert "model gpt-4.1-nano-2025-04-14 was retired on 2026-10-23" in err
    assert project.fake.requests == []


def test_no_new_openai_jobs_from_2027_01_06(project, capsys, monkeypatch):
    from configs import model_registry

    monkeypatch.setattr(model_registry, "today", lambda: date(2027, 1, 6))
    assert project.run("finetune") == 1
    assert "OpenAI accepts no new fine-tuning jobs since 2027-01-06" in capsys.readouterr().err
    assert project.fake.requests == []


def test_require_approval_refuses_an_unapproved_version_until_it_is_approved(project, capsys):
    project.write_config("  require_approval: true\n")
    assert project.run("finetune") == 1
    err = capsys.readouterr().err
    assert "guide v0001 is not approved and finetune.require_approval is on" in err
    assert "python pipeline.py approve v0001" in err and project.fake.requests == []

    from transforms.approval import approve

    approve(state_path(project.root / "out"), project.version)
    assert project.run("finetune") == 0
    assert len(project.fake.find_requests("POST", "/v1/fine_tuning/jobs")) == 1


def test_missing_dataset_version_says_how_to_build_one(project, capsys):
    assert project.run("finetune", "--dataset", "v0042") == 1
    err = capsys.readouterr().err
    assert "no dataset version" in err and "python pipeline.py build" in err


# --------------------------------------------------------------------------------------------------
# idempotency


def test_second_finetune_of_the_same_content_uploads_nothing_and_finds_the_first_job(project, capsys):
    assert project.run("finetune") == 0
    first = the_job(project.fake)
    capsys.readouterr()

    assert project.run("finetune") == 0
    out = capsys.readouterr().out
    assert f"guide v0001 already has job {first.id}" in out and "nothing new was started" in out
    assert len(project.fake.find_requests("POST", "/v1/files")) == 2
    assert len(project.fake.find_requests("POST", "/v1/fine_tuning/jobs")) == 1

    assert project.run("finetune", "--force") == 0
    out = capsys.readouterr().out
    assert "train.jsonl: already uploaded as" in out and "test.jsonl: already uploaded as" in out
    assert len(project.fake.find_requests("POST", "/v1/files")) == 2  # still only the first two uploads
    first_body, second_body = (r.body for r in project.fake.find_requests("POST", "/v1/fine_tuning/jobs"))
    assert second_body["training_file"] == first_body["training_file"]
    assert second_body["validation_file"] == first_body["validation_file"]


def test_a_failed_job_does_not_block_a_new_one(project, capsys):
    assert project.run("finetune") == 0
    project.fake.jobs[the_job(project.fake).id].status = "failed"
    assert project.run("finetune") == 0
    assert len(project.fake.find_requests("POST", "/v1/fine_tuning/jobs")) == 2


def test_a_recorded_job_unknown_to_the_api_does_not_block_a_new_one(project, capsys):
    assert project.run("finetune") == 0
    gone = the_job(project.fake).id
    del project.fake.jobs[gone]
    capsys.readouterr()
    assert project.run("finetune") == 0
    assert f"the earlier job {gone} no longer exists remotely; starting a new one" in capsys.readouterr().out
    assert len(project.fake.find_requests("POST", "/v1/fine_tuning/jobs")) == 2


def test_a_file_deleted_remotely_is_uploaded_again(project, capsys):
    assert project.run("finetune") == 0
    train_id = the_job(project.fake).training_file
    client = openai.OpenAI(api_key=project.fake.api_key, base_url=project.fake.base_url)
    client.files.delete(train_id)
    capsys.readouterr()

    assert project.run("finetune", "--force") == 0
    out = capsys.readouterr().out
    assert f"the earlier upload {train_id} is gone remotely; uploading again" in out
    posts = project.fake.find_requests("POST", "/v1/files")
    assert len(posts) == 3 and posts[-1].body["file"].filename == "guide-v0001-train.jsonl"
    new_job = list(project.fake.jobs.values())[-1]
    assert new_job.training_file != train_id and not project.fake.files[new_job.training_file].deleted


def test_files_over_the_files_api_limit_go_through_the_uploads_api_in_parts(project, capsys, monkeypatch):
    from finetune import openai_backend

    size = (project.version / "train.jsonl").stat().st_size
    monkeypatch.setattr(openai_backend, "FILES_API_MAX_BYTES", size - 1)
    monkeypatch.setattr(openai_backend, "UPLOAD_PART_BYTES", size // 3 + 1)
    project.fake.max_file_bytes = size - 1
    project.fake.max_part_bytes = size // 3 + 1

    assert project.run("finetune") == 0
    fake = project.fake
    (start,) = fake.find_requests("POST", "/v1/uploads")
    assert start.body["bytes"] == size and start.body["filename"] == "guide-v0001-train.jsonl"
    upload_id = next(iter(fake.uploads))
    assert len(fake.find_requests("POST", f"/v1/uploads/{upload_id}/parts")) == 3
    job = the_job(fake)
    assert fake.file_bytes(job.training_file) == (project.version / "train.jsonl").read_bytes()
    assert [r.body["file"].filename for r in fake.find_requests("POST", "/v1/files")] == ["guide-v0001-test.jsonl"]


# --------------------------------------------------------------------------------------------------
# errors, retries and secrets


def test_rate_limits_while_uploading_and_polling_are_retried_until_success(project, capsys):
    fake = project.fake
    fake.fail_next(429, method="POST", path="/v1/files")
    fake.fail_next(429, times=4, method="GET", path="/v1/fine_tuning/jobs/")  # outlasts the SDK's 2 retries
    assert project.run("finetune", "--wait") == 0
    out = capsys.readouterr().out
    assert "succeeded: ft:" in out
    assert "failed (HTTP 429, rate_limit_exceeded): Rate limit reached for requests. Please try again shortly.; " \
           "trying again in 0s" in out
    statuses = [r.status for r in fake.requests if r.method == "GET" and r.path.startswith("/v1/fine_tuning/jobs/")]
    assert statuses[:5] == [429, 429, 429, 429, 200]
    assert [r.status for r in fake.find_requests("POST", "/v1/files")] == [429, 200, 200]


def test_a_wrong_key_is_one_line_with_the_apis_message(project, capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", WRONG_KEY)
    assert project.run("finetune") == 1
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1
    assert "uploading guide-v0001-train.jsonl failed (HTTP 401, invalid_api_key): Incorrect API key provided: sk-" \
           in captured.err
    assert WRONG_KEY not in captured.out + captured.err


def test_no_key_says_how_to_set_it_without_sending_anything(project, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    assert project.run("finetune") == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no API key for the openai fine-tuning API: set it in the environment "
                          "(export OPENAI_API_KEY=sk-…)") and err.count("\n") == 1
    assert project.fake.requests == []


def test_run_with_finetune_and_no_key_still_builds_the_dataset(tmp_path, capsys, fake):
    sample = Path(__file__).resolve().parents[1] / "data" / "sample_site"
    config = tmp_path / "config.yaml"
    config.write_text(f"""
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
    assert main(["run", "--finetune", "--config", str(config)]) == 1
    captured = capsys.readouterr()
    assert "built guide v0001" in captured.out
    assert (tmp_path / "out" / "datasets" / "guide" / "v0001" / "train.jsonl").is_file()
    assert captured.err.startswith("error: no API key") and "export OPENAI_API_KEY" in captured.err
    assert fake.requests == []


def test_environment_overrides_the_config_file_for_endpoint_organization_and_project(project, capsys, monkeypatch):
    project.config.write_text(project.config.read_text(encoding="utf-8").replace(
        project.fake.base_url, "http://127.0.0.1:9/v1") + "  organization: org-from-file\n", encoding="utf-8")
    monkeypatch.setenv("OPENAI_BASE_URL", project.fake.base_url)
    monkeypatch.setenv("OPENAI_ORG_ID", project.fake.organization_id)
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj_env")
    assert project.run("finetune") == 0
    (create,) = project.fake.find_requests("POST", "/v1/fine_tuning/jobs")
    assert create.headers["openai-organization"] == project.fake.organization_id
    assert create.headers["openai-project"] == "proj_env"


def test_azure_provider_builds_the_sdks_azure_client(monkeypatch):
    from configs import FinetuneConfig
    from finetune.backend import FinetuneError
    from finetune.providers import create_backend

    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "azure-key-0123456789")
    config = FinetuneConfig(provider="azure", base_url="https://res.openai.azure.com/")
    with pytest.raises(FinetuneError, match="Azure OpenAI needs an API version: set finetune.api_version"):
        create_backend(config)
    backend = create_backend(config.model_copy(update={"api_version": "2025-04-01-preview"}))
    assert isinstance(backend.client, openai.AzureOpenAI)
    assert backend.name == "azure" and "azure-key" not in repr(backend)
    assert str(backend.client.base_url).startswith("https://res.openai.azure.com/openai")


def test_failed_job_from_finetune_wait_prints_code_message_and_hint(project, capsys):
    assert project.run("finetune") == 0
    job = the_job(project.fake)
    job.training_file = project.fake._store_file("short.jsonl", "fine-tune", b'{"messages": []}\n' * 3).id
    assert project.run("jobs", "wait", job.id) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: job {job.id} failed: invalid_training_file: Invalid file format. Example 1")
    assert f"hint: the API could not read the training file: check it with `python pipeline.py validate " \
           f"{project.version / 'train.jsonl'}`" in err


def test_api_key_never_appears_in_output_files_or_errors(project, capsys, monkeypatch):
    key = project.fake.api_key
    outputs = []

    def run(*argv: str) -> None:
        project.run(*argv)
        captured = capsys.readouterr()
        outputs.append(captured.out + captured.err)

    run("finetune", "--wait")
    job = the_job(project.fake)
    for argv in (["jobs", "list"], ["jobs", "show", job.id], ["jobs", "events", job.id],
                 ["jobs", "checkpoints", job.id], ["jobs", "results", job.id], ["evaluate", "--model",
                 job.fine_tuned_model], ["jobs", "show", "ftjob-missing"]):
        run(*argv)
    assert "No such fine-tuning job" in outputs[-1] and "succeeded" in outputs[0]
    for text in outputs:
        assert key not in text and key[8:] not in text
    for path in project.root.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path


def test_docs_document_every_finetune_key_and_every_jobs_verb():
    import argparse

    from configs import EvaluationConfig, FinetuneConfig
    from pipeline import parser

    root = Path(__file__).resolve().parents[1]  # the front page (its commands table), then docs/
    readme = "\n".join(p.read_text(encoding="utf-8") for p in [root / "README.md", *sorted(root.glob("docs/*.md"))])
    for name in set(FinetuneConfig.model_fields) - {"evaluation", "require_approval"}:  # the latter: review's
        assert f"`finetune.{name}`" in readme, name
    for name in EvaluationConfig.model_fields:
        assert f"`finetune.evaluation.{name}`" in readme, name

    def verbs(p: argparse.ArgumentParser) -> dict:
        return next(a for a in p._actions if isinstance(a, argparse._SubParsersAction)).choices

    commands = verbs(parser())
    for command in ("finetune", "jobs", "models", "evaluate"):
        assert f"`python pipeline.py {command}" in readme, command
    jobs_row = next(line for line in readme.splitlines() if line.startswith("| `python pipeline.py jobs "))
    for verb in verbs(commands["jobs"]):
        assert verb in jobs_row, verb
