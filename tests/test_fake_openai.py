"""The OpenAI fake, driven through the real openai SDK: the behaviour other tests rely on."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import time
from datetime import date

import openai
import pytest

from fake_openai import BASE_MODEL_REPLY, FakeOpenAI


def chat_example(i: int) -> dict:
    return {"messages": [
        {"role": "system", "content": "You answer questions about the Acme CLI."},
        {"role": "user", "content": f"How do I enable feature number {i} in the Acme CLI?"},
        {"role": "assistant", "content": f"Run `acme enable feature-{i}` and restart the daemon."},
    ]}


def jsonl(rows: list) -> bytes:
    return b"".join((r if isinstance(r, str) else json.dumps(r)).encode() + b"\n" for r in rows)


@pytest.fixture
def fake():
    with FakeOpenAI() as server:
        yield server
    assert server.schema_violations == []


@pytest.fixture
def client(fake):
    return openai.OpenAI(api_key=fake.api_key, base_url=fake.base_url, max_retries=0)


def upload(client, rows: list, name: str = "train.jsonl") -> str:
    return client.files.create(file=(name, jsonl(rows)), purpose="fine-tune").id


def poll(client, job_id: str, limit: int = 20) -> list[str]:
    statuses = []
    for _ in range(limit):
        job = client.fine_tuning.jobs.retrieve(job_id)
        statuses.append(job.status)
        if job.status in ("succeeded", "failed", "cancelled"):
            return statuses
    raise AssertionError(f"job did not finish: {statuses}")


def test_supervised_job_succeeds_with_metrics_checkpoints_and_result_csv(fake, client):
    file_id = upload(client, [chat_example(i) for i in range(10)])
    job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file_id, suffix="acme",
                                         method={"type": "supervised"})
    assert job.id.startswith("ftjob-") and job.status == "validating_files"
    assert job.model == "gpt-4o-mini-2024-07-18" and job.hyperparameters.n_epochs == "auto"

    assert poll(client, job.id) == ["queued", "running", "running", "succeeded"]

    job = client.fine_tuning.jobs.retrieve(job.id)
    assert re.fullmatch(r"ft:gpt-4o-mini-2024-07-18:fake-org:acme:\w{8}", job.fine_tuned_model)
    assert job.trained_tokens > 0 and job.finished_at >= job.created_at and job.error is None
    assert job.hyperparameters.n_epochs == 10 and job.hyperparameters.batch_size == 1  # auto, 10 examples

    events = list(client.fine_tuning.jobs.list_events(job.id, limit=100))
    metrics = [e for e in events if e.type == "metrics"]
    assert len(metrics) == 100
    assert {"step", "train_loss", "train_mean_token_accuracy", "total_steps"} <= set(metrics[0].data)
    assert events[0].message == "The job has successfully completed"

    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in checkpoints] == [100, 90, 80]
    assert checkpoints[0].fine_tuned_model_checkpoint == f"{job.fine_tuned_model}:ckpt-step-100"
    assert checkpoints[0].metrics.train_loss > 0

    (result_id,) = job.result_files
    assert client.files.retrieve(result_id).purpose == "fine-tune-results"
    rows = list(csv.reader(io.StringIO(base64.b64decode(client.files.content(result_id).read()).decode())))
    assert rows[0] == ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]
    assert len(rows) == 101 and rows[1][3] == ""  # no validation file, no validation columns


def test_requests_are_recorded_with_parsed_bodies_and_no_authorization(fake, client):
    file_id = upload(client, [chat_example(i) for i in range(10)])
    client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file_id, hyperparameters={"n_epochs": 2})

    (files_post,) = fake.find_requests("POST", "/v1/files")
    assert files_post.body["purpose"] == "fine-tune"
    assert files_post.body["file"].filename == "train.jsonl"
    assert files_post.body["file"].data.count(b"\n") == 10
    (job_post,) = fake.find_requests("POST", "/v1/fine_tuning/jobs")
    assert job_post.body == {"model": "gpt-4o-mini", "training_file": file_id, "hyperparameters": {"n_epochs": 2}}
    assert "authorization" not in job_post.headers and job_post.status == 200


def test_deprecated_hyperparameters_become_the_supervised_method(client):
    file_id = upload(client, [chat_example(i) for i in range(10)])
    job = client.fine_tuning.jobs.create(model="gpt-4.1-mini", training_file=file_id,
                                         hyperparameters={"n_epochs": 2, "learning_rate_multiplier": 0.5})
    assert job.method.type == "supervised"
    assert job.method.supervised.hyperparameters.n_epochs == 2
    assert job.hyperparameters.learning_rate_multiplier == 0.5


def test_event_paging_is_newest_first_with_after_cursor(fake, client):
    file_id = upload(client, [chat_example(i) for i in range(10)])
    job_id = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file_id).id
    fake.run_job(job_id)

    everything = client.fine_tuning.jobs.list_events(job_id, limit=1000)
    assert everything.has_more is False
    ids = [e.id for e in everything.data]
    assert everything.data[-1].message == f"Created fine-tuning job: {job_id}"  # oldest last

    first = client.fine_tuning.jobs.list_events(job_id, limit=5)
    assert [e.id for e in first.data] == ids[:5] and first.has_more is True
    second = client.fine_tuning.jobs.list_events(job_id, limit=5, after=first.data[-1].id)
    assert [e.id for e in second.data] == ids[5:10]
    last = client.fine_tuning.jobs.list_events(job_id, limit=5, after=ids[-3])
    assert [e.id for e in last.data] == ids[-2:] and last.has_more is False
    # the SDK's auto-pagination follows `after` across pages
    assert [e.id for e in client.fine_tuning.jobs.list_events(job_id, limit=7)] == ids
    assert fake.find_requests("GET", f"/v1/fine_tuning/jobs/{job_id}/events")[-1].query["after"]


def test_pause_resume_and_cancel_follow_the_state_rules(fake, client):
    file_id = upload(client, [chat_example(i) for i in range(10)])
    job_id = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file_id).id

    with pytest.raises(openai.BadRequestError):  # still validating files
        client.fine_tuning.jobs.pause(job_id)
    fake.advance(job_id, steps=2)
    assert client.fine_tuning.jobs.pause(job_id).status == "paused"  # not in the SDK's Literal; tolerated
    assert client.fine_tuning.jobs.retrieve(job_id).status == "paused"  # polling does not move a paused job
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.pause(job_id)
    assert client.fine_tuning.jobs.resume(job_id).status == "running"
    assert poll(client, job_id)[-1] == "succeeded"

    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.cancel(job_id)
    assert err.value.status_code == 400
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.resume(job_id)

    other = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file_id).id
    cancelled = client.fine_tuning.jobs.cancel(other)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    assert client.fine_tuning.jobs.retrieve(other).status == "cancelled"
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.cancel("ftjob-doesnotexist")


def test_too_small_training_file_fails_with_invalid_n_examples(client):
    file_id = upload(client, [chat_example(i) for i in range(3)])
    job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file_id)
    assert job.status == "validating_files"  # accepted; validation is asynchronous
    assert poll(client, job.id) == ["failed"]
    job = client.fine_tuning.jobs.retrieve(job.id)
    assert job.error.code == "invalid_n_examples" and job.error.param == "training_file"
    assert job.error.message == "Training file has 3 example(s), but must have at least 10 examples"
    assert job.fine_tuned_model is None and job.result_files == []


@pytest.mark.parametrize("bad_line, message", [
    ("{this is not json", "Invalid file format. Example 12 cannot be parsed"),
    ({"prompt": "q", "completion": "a"}, "Invalid file format. Example 12 is missing key 'messages'"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "Invalid file format. Example 12: Invalid value: 'robot'"),
])
def test_malformed_training_file_fails_with_invalid_training_file(client, bad_line, message):
    rows = [chat_example(i) for i in range(11)] + [bad_line] + [chat_example(20)]
    file_id = upload(client, rows)
    job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file_id)
    assert poll(client, job.id) == ["failed"]
    error = client.fine_tuning.jobs.retrieve(job.id).error
    assert error.code == "invalid_training_file" and error.message.startswith(message)
    assert client.fine_tuning.jobs.list_events(job.id).data[0].level == "error"


@pytest.mark.parametrize("kwargs, param, code", [
    ({"extra_body": {"learning_rate": 0.1}}, "learning_rate", "unknown_parameter"),
    ({"suffix": "x" * 65}, "suffix", "string_above_max_length"),
    ({"hyperparameters": {"n_epochs": 51}}, "hyperparameters.n_epochs", "integer_above_max_value"),
    ({"method": {"type": "supervised", "supervised": {"hyperparameters": {"batch_size": 0}}}},
     "method.supervised.hyperparameters.batch_size", "integer_below_min_value"),
    ({"method": {"type": "supervised", "supervised": {"hyperparameters": {"learning_rate_multiplier": 0}}}},
     "method.supervised.hyperparameters.learning_rate_multiplier", "decimal_below_min_value"),
    ({"method": {"type": "sft"}}, "method.type", "invalid_value"),
])
def test_invalid_job_requests_are_rejected_with_400_naming_the_param(client, kwargs, param, code):
    file_id = upload(client, [chat_example(i) for i in range(10)])
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file_id, **kwargs)
    assert (err.value.param, err.value.code, err.value.type) == (param, code, "invalid_request_error")


def test_job_creation_refuses_unknown_files_and_retired_models(client):
    file_id = upload(client, [chat_example(i) for i in range(10)])
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file="file-missing")
    assert err.value.param == "training_file"
    for retired in ("gpt-3.5-turbo", "gpt-4-0613", "gpt-4.1-nano"):
        with pytest.raises(openai.BadRequestError) as err:
            client.fine_tuning.jobs.create(model=retired, training_file=file_id)
        assert err.value.code == "model_not_available"


def test_no_jobs_can_be_created_after_the_platform_cutoff():
    with FakeOpenAI(today=date(2027, 1, 6)) as fake:
        client = openai.OpenAI(api_key=fake.api_key, base_url=fake.base_url, max_retries=0)
        file_id = upload(client, [chat_example(i) for i in range(10)])
        with pytest.raises(openai.BadRequestError):
            client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file_id)


def test_rate_limit_and_server_error_are_retried_by_the_sdk(fake):
    client = openai.OpenAI(api_key=fake.api_key, base_url=fake.base_url, max_retries=2)
    fake.fail_next(429)
    fake.fail_next(500)
    assert client.files.list().data == []
    sent = fake.find_requests("GET", "/v1/files")
    assert [r.status for r in sent] == [429, 500, 200]
    assert [r.headers["x-stainless-retry-count"] for r in sent] == ["0", "1", "2"]

    fake.fail_next(429, times=5)
    with pytest.raises(openai.RateLimitError) as err:
        client.files.list()
    assert err.value.code == "rate_limit_exceeded"


def test_wrong_api_key_is_an_authentication_error_with_a_masked_key(fake):
    wrong = "sk-wrong-key-0123456789abcdefWXYZ"
    client = openai.OpenAI(api_key=wrong, base_url=fake.base_url, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        client.files.list()
    body = err.value.body
    assert err.value.status_code == 401 and body["code"] == "invalid_api_key" and body["param"] is None
    assert body["message"].startswith("Incorrect API key provided: sk-****")
    assert "WXYZ" in body["message"] and wrong not in body["message"]


def test_uploads_api_assembles_parts_into_a_usable_file(fake, client):
    data = jsonl([chat_example(i) for i in range(10)])
    half = len(data) // 2
    up = client.uploads.create(filename="big.jsonl", purpose="fine-tune", bytes=len(data), mime_type="text/jsonl")
    assert up.status == "pending" and up.id.startswith("upload_")
    second = client.uploads.parts.create(up.id, data=data[half:])
    first = client.uploads.parts.create(up.id, data=data[:half])
    with pytest.raises(openai.BadRequestError):  # the listed parts must add up to the declared bytes
        client.uploads.complete(up.id, part_ids=[first.id])
    done = client.uploads.complete(up.id, part_ids=[first.id, second.id])
    assert done.status == "completed" and done.file.bytes == len(data)
    assert fake.file_bytes(done.file.id) == data
    with pytest.raises(openai.BadRequestError):
        client.uploads.parts.create(up.id, data=b"more")

    job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=done.file.id)
    assert poll(client, job.id)[-1] == "succeeded"

    cancelled = client.uploads.create(filename="x.jsonl", purpose="fine-tune", bytes=1, mime_type="text/jsonl")
    assert client.uploads.cancel(cancelled.id).status == "cancelled"
    chunked = client.uploads.upload_file_chunked(file=data, filename="c.jsonl", bytes=len(data),
                                                 mime_type="text/jsonl", purpose="fine-tune", part_size=700)
    assert fake.file_bytes(chunked.file.id) == data


def test_files_api_enforces_jsonl_size_cap_and_download_rules():
    with FakeOpenAI(max_file_bytes=100) as fake:
        client = openai.OpenAI(api_key=fake.api_key, base_url=fake.base_url, max_retries=0)
        with pytest.raises(openai.BadRequestError, match="Must be .jsonl"):
            client.files.create(file=("train.json", b"{}\n"), purpose="fine-tune")
        with pytest.raises(openai.APIStatusError) as err:
            client.files.create(file=("train.jsonl", b"x" * 101), purpose="fine-tune")
        assert err.value.status_code == 413
        with pytest.raises(openai.BadRequestError) as err:
            client.files.create(file=("train.jsonl", b"{}\n"), purpose="training")
        assert err.value.param == "purpose"

        kept = client.files.create(file=("train.jsonl", b"{}\n"), purpose="fine-tune",
                                   expires_after={"anchor": "created_at", "seconds": 3600})
        assert kept.expires_at == kept.created_at + 3600  # the SDK sends expires_after[...] form fields
        assert [f.id for f in client.files.list(purpose="fine-tune")] == [kept.id]
        with pytest.raises(openai.BadRequestError, match="Not allowed to download"):
            client.files.content(kept.id)
        assert client.files.delete(kept.id).deleted is True
        with pytest.raises(openai.NotFoundError):
            client.files.retrieve(kept.id)


def test_fine_tuned_model_answers_from_its_training_data_and_base_model_does_not(fake, client):
    file_id = upload(client, [chat_example(i) for i in range(10)])
    model = fake.run_job(client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file_id).id)[
        "fine_tuned_model"]
    question = [{"role": "user", "content": "How do I enable feature number 7 in the Acme CLI?"}]

    tuned = client.chat.completions.create(model=model, messages=question, temperature=0)
    assert tuned.choices[0].message.content == "Run `acme enable feature-7` and restart the daemon."
    assert tuned.usage.total_tokens == tuned.usage.prompt_tokens + tuned.usage.completion_tokens
    base = client.chat.completions.create(model="gpt-4o-mini", messages=question)
    assert base.choices[0].message.content == BASE_MODEL_REPLY
    unrelated = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Weather?"}])
    assert unrelated.choices[0].message.content == BASE_MODEL_REPLY

    stream = client.chat.completions.create(model=model, messages=question, stream=True, temperature=0)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == tuned.choices[0].message.content

    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=model, messages=question, temperature=2.5)
    assert err.value.param == "temperature"
    with pytest.raises(openai.PermissionDeniedError):
        client.models.delete("gpt-4o-mini")
    deleted = client.models.delete(model)
    assert (deleted.id, deleted.object, deleted.deleted) == (model, "model", True)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=model, messages=question)


def test_dpo_job_validates_preference_lines():
    pref = {"input": {"messages": [{"role": "user", "content": "q"}]},
            "preferred_output": [{"role": "assistant", "content": "good"}],
            "non_preferred_output": [{"role": "assistant", "content": "bad"}]}
    with FakeOpenAI() as fake:
        client = openai.OpenAI(api_key=fake.api_key, base_url=fake.base_url, max_retries=0)
        dpo = {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1}}}
        good = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=upload(client, [pref] * 10),
                                              method=dpo)
        assert poll(client, good.id)[-1] == "succeeded"
        chat = client.fine_tuning.jobs.create(model="gpt-4o-mini", method=dpo,
                                              training_file=upload(client, [chat_example(i) for i in range(10)]))
        assert poll(client, chat.id) == ["failed"]
        assert "missing key 'input'" in client.fine_tuning.jobs.retrieve(chat.id).error.message
        assert fake.schema_violations == []


def test_time_mode_finishes_a_job_without_polling_steps():
    with FakeOpenAI(job_step_seconds=0.01) as fake:
        client = openai.OpenAI(api_key=fake.api_key, base_url=fake.base_url, max_retries=0)
        job = client.fine_tuning.jobs.create(model="gpt-4o-mini",
                                             training_file=upload(client, [chat_example(i) for i in range(10)]))
        time.sleep(0.1)
        assert client.fine_tuning.jobs.retrieve(job.id).status == "succeeded"
        listed = client.fine_tuning.jobs.list(limit=1)
        assert [j.id for j in listed.data] == [job.id]
