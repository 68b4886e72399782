"""Continued fine-tuning (`finetune --model ft:…`) and legacy prompt/completion jobs, through the real SDK
against the fake: the request body, the lineage in the state, beside the version and in `jobs show`, and the
old /v1/fine-tunes options refused in one line."""

from __future__ import annotations

import json

import openai
import pytest

from finetune.state import FinetuneState
from test_finetune import fake, project, the_job  # noqa: F401  (shared fixtures)

BASE = "gpt-4o-mini-2024-07-18"


def last_job(fake):  # noqa: F811
    return list(fake.jobs.values())[-1]


def show(project, capsys, job_id: str) -> list[str]:  # noqa: F811
    assert project.run("jobs", "show", job_id) == 0
    return capsys.readouterr().out.splitlines()


@pytest.fixture
def tuned(project, capsys):  # noqa: F811
    """A job started and finished by `finetune --wait` from this output_dir: the parent to continue."""
    assert project.run("finetune", "--wait") == 0
    capsys.readouterr()
    return the_job(project.fake)


def test_finetune_model_ft_continues_the_fine_tune_and_records_its_lineage(project, tuned, capsys):  # noqa: F811
    parent = tuned.fine_tuned_model
    assert project.run("finetune", "--model", parent, "--wait") == 0
    out = capsys.readouterr().out

    first, second = (r.body for r in project.fake.find_requests("POST", "/v1/fine_tuning/jobs"))
    assert second["model"] == parent  # the API takes the fine-tuned model as the job's model
    same = {k: v for k, v in first.items() if k != "model"}
    assert {k: v for k, v in second.items() if k != "model"} == same  # same files (not sent again) and settings
    assert len(project.uploads()) == 2
    child = last_job(project.fake)
    assert child.model == parent and child.base == BASE
    assert child.fine_tuned_model.startswith(f"ft:{BASE}:fake-org:guide:")  # named after the base, as the API does

    assert f"checked guide v0001 for {parent} (base {BASE}): train " in out
    assert f"  warning: base model {BASE} of {parent} retires on 2027-01-14 (54 days left)" in out
    assert f"created job {child.id} on openai: {parent}, " in out
    assert f"  continues {parent} (job {tuned.id}), a fine-tune of {BASE}" in out

    with FinetuneState(project.root / "out") as state:
        record = state.job(child.id)
    assert (record.base_model, record.parent_model, record.parent_job_id) == (BASE, parent, tuned.id)
    assert (record.model, record.fine_tuned_model) == (parent, child.fine_tuned_model)
    lineage = json.loads((project.version / "finetune" / child.id / "lineage.json").read_text(encoding="utf-8"))
    assert lineage["parent_model"] == parent and lineage["parent_job_id"] == tuned.id
    assert lineage["base_model"] == BASE and lineage["version"] == "v0001"
    assert lineage["ancestors"] == [{"model": parent, "job_id": tuned.id, "dataset": "guide", "version": "v0001"}]
    manifest = json.loads((project.version / "manifest.json").read_text(encoding="utf-8"))
    assert "lineage" not in manifest and "finetune/" not in " ".join(manifest["files"])  # written once, at build

    lines = show(project, capsys, child.id)
    assert lines[2] == f"  model: {parent} → {child.fine_tuned_model}"
    assert lines[3] == (f"  lineage: {child.fine_tuned_model} → {parent} (job {tuned.id}, guide v0001) → "
                        f"{BASE} (base)")
    assert not any(line.startswith("  lineage:") for line in show(project, capsys, tuned.id))


def test_lineage_follows_a_chain_of_continued_fine_tunes(project, tuned, capsys):  # noqa: F811
    assert project.run("finetune", "--model", tuned.fine_tuned_model, "--wait") == 0
    middle = last_job(project.fake)
    assert project.run("finetune", "--model", middle.fine_tuned_model) == 0
    newest = last_job(project.fake)
    capsys.readouterr()
    assert show(project, capsys, newest.id)[3] == (
        f"  lineage: job {newest.id} → {middle.fine_tuned_model} (job {middle.id}, guide v0001) → "
        f"{tuned.fine_tuned_model} (job {tuned.id}, guide v0001) → {BASE} (base)")


def test_a_fine_tune_this_output_dir_did_not_make_is_continued_with_its_name_as_lineage(project, capsys):  # noqa: F811
    client = openai.OpenAI(api_key=project.fake.api_key, base_url=project.fake.base_url)
    data = (project.version / "train.jsonl").read_bytes()
    elsewhere = client.fine_tuning.jobs.create(
        model="gpt-4o-mini", training_file=client.files.create(file=("x.jsonl", data), purpose="fine-tune").id)
    parent = project.fake.run_job(elsewhere.id)["fine_tuned_model"]

    assert project.run("finetune", "--model", parent) == 0
    out = capsys.readouterr().out
    assert f"  continues {parent} (not made from this output_dir), a fine-tune of {BASE}" in out
    child = last_job(project.fake)
    with FinetuneState(project.root / "out") as state:
        record = state.job(child.id)
    assert (record.base_model, record.parent_model, record.parent_job_id) == (BASE, parent, None)
    assert show(project, capsys, child.id)[3] == (
        f"  lineage: job {child.id} → {parent} (not made from this output_dir) → {BASE} (base)")


def test_a_model_of_another_organization_is_refused_by_the_api_in_one_line(project, tuned, capsys):  # noqa: F811
    foreign = tuned.fine_tuned_model.replace(":fake-org:", ":other-org:")
    assert project.run("finetune", "--model", foreign) == 1
    err = capsys.readouterr().err
    assert err == (f"error: creating the fine-tuning job failed (HTTP 400, model_not_available, param model): Model "
                   f"{foreign} is not available for fine-tuning or does not exist.\n")
    assert len(project.fake.jobs) == 1


def test_a_deleted_fine_tune_cannot_be_continued(project, tuned, capsys):  # noqa: F811
    assert project.run("models", "delete", tuned.fine_tuned_model) == 0
    assert project.run("finetune", "--model", tuned.fine_tuned_model) == 1
    assert "model_not_available" in capsys.readouterr().err and len(project.fake.jobs) == 1


def test_a_fine_tune_of_a_retired_base_is_refused_naming_the_base_before_anything_is_sent(project, capsys):  # noqa: F811
    old = "ft:gpt-3.5-turbo-0125:fake-org:guide:abc123"
    assert project.run("finetune", "--model", old) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: base model gpt-3.5-turbo-0125 of {old} was retired on 2026-10-23; choose one of: ")
    assert err.count("\n") == 1 and project.fake.requests == []


def test_the_local_backend_refuses_an_ft_model(project, capsys):  # noqa: F811
    project.write_config("  provider: local\n  base_model: Qwen/Qwen2.5-0.5B-Instruct\n")
    assert project.run("finetune", "--model", f"ft:{BASE}:fake-org::abc") == 1
    err = capsys.readouterr().err
    assert f"ft:{BASE}:fake-org::abc is a fine-tune on OpenAI's platform; the local backend trains " \
           "finetune.base_model" in err


# --------------------------------------------------------------------------------------------------
# legacy prompt/completion models


@pytest.mark.parametrize("options", [
    ["prompt_loss_weight: 0.01"],
    ["compute_classification_metrics: true"],
    ["classification_n_classes: 2"],
    ["classification_positive_class: ' yes'"],
    ["classification_betas: [0.5, 1]"],
    ["prompt_loss_weight: 0.1", "classification_n_classes: 3"],
])
def test_options_of_the_retired_fine_tunes_api_are_refused_in_one_line(project, capsys, options):  # noqa: F811
    project.write_config("".join(f"  {o}\n" for o in options), model="babbage-002")
    assert project.run("finetune") == 1
    err = capsys.readouterr().err
    names = ", ".join(o.split(":")[0] for o in options)
    assert err == (f"error: {project.config}: finetune: {names}: options of the retired /v1/fine-tunes API that no "
                   "longer exist in the fine-tuning API; remove them (n_epochs, batch_size, learning_rate_multiplier "
                   "and suffix still apply, also to babbage-002 and davinci-002; compare models with "
                   "`python pipeline.py evaluate`)\n")
    assert project.fake.requests == []


def test_a_babbage_job_gets_its_hyperparameters_and_suffix_where_the_job_api_takes_them(project, capsys):  # noqa: F811
    from configs import load_config
    from transforms.build import build

    project.write_config("  n_epochs: 3\n  batch_size: 2\n  learning_rate_multiplier: 0.1\n", model="babbage-002")
    version = build(load_config(project.config)).version_dir  # the same documents as prompt/completion lines
    assert json.loads((version / "train.jsonl").read_text(encoding="utf-8").splitlines()[0]).keys() == {
        "prompt", "completion"}

    assert project.run("finetune", "--wait") == 0
    (create,) = project.fake.find_requests("POST", "/v1/fine_tuning/jobs")
    assert create.body["model"] == "babbage-002" and "hyperparameters" not in create.body  # the deprecated field
    assert create.body["method"] == {"type": "supervised", "supervised": {"hyperparameters": {
        "n_epochs": 3, "batch_size": 2, "learning_rate_multiplier": 0.1}}}
    assert create.body["suffix"] == "guide"
    job = the_job(project.fake)
    assert job.plan.n_epochs == 3 and job.plan.batch_size == 2  # the fake trained with them
    assert f"succeeded: ft:babbage-002:fake-org:guide:{job.model_token}" in capsys.readouterr().out
