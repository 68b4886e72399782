"""A service with OpenAI's files + fine_tuning.jobs routes (Nebius Token Factory and the like) through
`provider: openai` + `base_url`, with a key variable of its own and a base model named in config."""

from __future__ import annotations

from datetime import date

import pytest

from base.state import state_path
from configs import ConfigError, load_config, model_registry
from crawlers.store import PageStore
from fake_openai import FakeOpenAI
from pipeline import main
from test_finetune import documents
from transforms.build import build

MODEL = "meta-llama/Meta-Llama-3.1-8B-Instruct"
SERVICE_KEY = "nebius-test-key-0123456789abcdefghijkl"
OPENAI_KEY = "sk-openai-key-must-not-travel-0123456789"
AFTER_OPENAI = date(2027, 2, 1)  # OpenAI takes no new jobs by then; the other service does


@pytest.fixture
def service(monkeypatch):
    monkeypatch.setattr(model_registry, "today", lambda: AFTER_OPENAI)
    with FakeOpenAI(api_key=SERVICE_KEY, today=AFTER_OPENAI, open_models=(MODEL,)) as fake:
        yield fake
    assert fake.schema_violations == []


def write_config(tmp_path, fake, extra: str = "") -> str:
    path = tmp_path / "config.yaml"
    path.write_text(f"""
output_dir: out
model: {MODEL}
sources:
  - name: guide
    start_urls: ["http://guide.example.internal/index.html"]
dataset:
  name: guide
  test_fraction: 0.2
finetune:
  base_url: {fake.base_url}
  api_key_env: NEBIUS_API_KEY
  base_models:
    - name: {MODEL}
      context_tokens: 8192
  poll_interval: 0
  n_epochs: 2
{extra}""", encoding="utf-8")
    return str(path)


@pytest.fixture
def project(tmp_path, service, monkeypatch):
    monkeypatch.setenv("NEBIUS_API_KEY", SERVICE_KEY)
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/never-called")
    config = write_config(tmp_path, service)
    with PageStore(state_path(tmp_path / "out")) as store:
        for doc in documents():
            store.save_document(doc, status=200, etag=None, last_modified=None)
    build(load_config(config))
    return config


def test_a_dataset_version_trains_through_the_service_with_its_own_key_and_model(project, service, capsys):
    assert main(["finetune", "--wait", "--config", project]) == 0
    out = capsys.readouterr().out

    (create,) = service.find_requests("POST", "/v1/fine_tuning/jobs")
    assert create.body["model"] == MODEL
    assert create.body["method"]["supervised"]["hyperparameters"]["n_epochs"] == 2
    assert service.keys_seen == {SERVICE_KEY}  # the service's key in every Authorization header, never OpenAI's
    assert f"created job {service.jobs and next(iter(service.jobs))} on openai: {MODEL}" in out
    (job,) = service.jobs.values()
    assert job.status == "succeeded"
    assert OPENAI_KEY not in out and SERVICE_KEY not in out

    assert main(["jobs", "list", "--config", project]) == 0
    assert job.id in capsys.readouterr().out


def test_the_service_key_variable_missing_is_named_in_one_line(project, service, monkeypatch, capsys):
    monkeypatch.delenv("NEBIUS_API_KEY")
    assert main(["finetune", "--config", project]) == 1
    err = capsys.readouterr().err.strip()
    assert "NEBIUS_API_KEY" in err and len(err.splitlines()) == 1
    assert service.requests == []


def test_a_model_outside_the_registry_and_the_config_is_refused(tmp_path, service):
    path = tmp_path / "c.yaml"
    path.write_text(f"model: {MODEL}\nsources: [{{name: s, start_urls: ['http://x.internal/']}}]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"model: unknown model .*finetune.base_models"):
        load_config(path)


def test_the_dataset_is_checked_against_the_named_context_limit(tmp_path, service):
    config = load_config(write_config(tmp_path, service))
    assert config.token_limit == 8192
    assert config.model_spec.shutdown is None


@pytest.mark.parametrize("provider, setting, kind", [
    ("openai", "learning_rate: 0.0001", "learning_rate_multiplier"),
    ("together", "learning_rate_multiplier: 2", "absolute learning_rate"),
])
def test_a_learning_rate_of_the_wrong_kind_is_refused_in_one_line(tmp_path, service, provider, setting, kind):
    path = write_config(tmp_path, service, f"  provider: {provider}\n  {setting}\n")
    with pytest.raises(ConfigError, match=kind) as err:
        load_config(path)
    assert "\n" not in str(err.value)


def test_together_only_settings_are_refused_for_an_openai_routes_service_before_upload(project, service, capsys):
    from pathlib import Path

    path = Path(project)
    path.write_text(path.read_text(encoding="utf-8") + "  training_method: dpo\n", encoding="utf-8")
    assert main(["finetune", "--config", project]) == 1
    err = capsys.readouterr().err
    assert "finetune.training_method: only provider together takes it" in err
    assert service.requests == []


def test_validate_checks_a_file_against_the_named_model_s_limit(project, tmp_path, capsys):
    import json

    version = tmp_path / "out" / "datasets" / "guide" / "v0001"
    assert main(["validate", str(version / "train.jsonl"), "--json", "--config", project]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"] == MODEL and report["token_limit"] == 8192
