"""An OpenAI-compatible endpoint evaluated as a model (finetune/served.py), against a fake on 127.0.0.1."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from configs import SamplingConfig
from fake_service import FakeService
from finetune.backend import MissingCredentials
from finetune.served import served_model, vllm_command
from test_finetune import fake, project  # noqa: F401  (a built version and the fake API)


class FakeEndpoint(FakeService):
    """A chat-completions route like vLLM's, Ollama's or llama.cpp's server; checked against Together's schema."""

    schema_file = "together_schemas.json"

    def __init__(self, api_key: str):
        super().__init__(api_key)
        self.routes = [("POST", re.compile(r"/v1/chat/completions"), self._chat)]

    def _chat(self, *, body, query):
        self.check("ChatCompletions", body)
        return {"choices": [{"index": i, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": f"{body['model']} says {i}"}}
                            for i in range(body.get("n", 1))],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2}}


def test_a_served_model_answers_with_the_key_its_variable_holds(monkeypatch):
    monkeypatch.setenv("VLLM_KEY", "served-key-0123456789")
    with FakeEndpoint("served-key-0123456789") as fake:
        model = served_model(fake.base_url, api_key_env="VLLM_KEY")
        replies = model.chat("local:job-1", [{"role": "user", "content": "q"}],
                             sampling=SamplingConfig(n=2, temperature=0.5))
    assert [r.text for r in replies] == ["local:job-1 says 0", "local:job-1 says 1"]
    assert fake.keys_seen == {"served-key-0123456789"}
    (request,) = fake.requests
    assert request.body["n"] == 2 and request.body["temperature"] == 0.5


def test_without_a_key_variable_no_authorization_is_sent_and_a_missing_variable_is_named(monkeypatch):
    with FakeEndpoint("") as fake:
        assert served_model(fake.base_url).chat("m", [{"role": "user", "content": "q"}],
                                                sampling=SamplingConfig())[0].text == "m says 0"
        assert fake.keys_seen == {""}
    with pytest.raises(MissingCredentials, match="export NO_SUCH_KEY_VAR="):
        served_model("http://127.0.0.1:9/v1", api_key_env="NO_SUCH_KEY_VAR", env={})


def test_vllm_serves_a_local_adapter_under_its_local_name():
    base = "Qwen/Qwen2.5-0.5B-Instruct"
    assert vllm_command(base, {"local:j": Path("/jobs/j/adapter"), "local:j:checkpoint-4": Path("/jobs/j/c4")},
                        served_as=base, port=8011) == [
        "vllm", "serve", base, "--served-model-name", base, "--enable-lora", "--lora-modules",
        "local:j=/jobs/j/adapter", "local:j:checkpoint-4=/jobs/j/c4", "--max-lora-rank", "16", "--host", "127.0.0.1",
        "--port", "8011"]


def test_evaluate_base_url_asks_both_models_at_that_endpoint(project, capsys, monkeypatch):  # noqa: F811
    """`evaluate --base-url`: the base and the tuned model are asked at the endpoint, with its own key variable;
    the fine-tuning API (the project's fake OpenAI) is asked nothing."""
    monkeypatch.setenv("VLLM_KEY", "served-key-0123456789")
    with FakeEndpoint("served-key-0123456789") as endpoint:
        before = len(project.fake.requests)
        code = project.run("evaluate", "--model", "local:job-1", "--base", "Qwen/Qwen2.5-0.5B-Instruct",
                           "--base-url", endpoint.base_url, "--api-key-env", "VLLM_KEY")
        asked = [r.body["model"] for r in endpoint.find("POST", "/v1/chat/completions")]
    assert code == 0, capsys.readouterr().err
    test_questions = len((project.version / "test.jsonl").read_text("utf-8").splitlines())
    assert sorted(set(asked)) == ["Qwen/Qwen2.5-0.5B-Instruct", "local:job-1"]
    assert len(asked) == 2 * test_questions
    assert len(project.fake.requests) == before and endpoint.keys_seen == {"served-key-0123456789"}
    report = project.version / "evaluations" / "local_job-1--vs--Qwen_Qwen2.5-0.5B-Instruct" / "report.html"
    assert "local:job-1" in report.read_text("utf-8")


def test_an_api_key_variable_without_an_endpoint_is_refused(project, capsys):  # noqa: F811
    assert project.run("evaluate", "--model", "local:job-1", "--api-key-env", "VLLM_KEY") == 1
    assert "add --base-url URL" in capsys.readouterr().err
