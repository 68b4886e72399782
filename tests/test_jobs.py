"""`jobs` and `models` verbs, through the real SDK against the fake, on jobs started by `finetune`."""

from __future__ import annotations

import csv
import io

import pytest

from test_finetune import fake, project, the_job  # noqa: F401  (shared fixtures)


@pytest.fixture
def job(project, capsys):  # noqa: F811
    """A job started by `finetune` (without --wait), still validating its files."""
    assert project.run("finetune") == 0
    capsys.readouterr()
    return the_job(project.fake)


def test_jobs_list_shows_every_recorded_job_with_its_current_status(project, job, capsys):  # noqa: F811
    assert project.run("jobs", "list") == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith(f"{job.id}  queued ") and " openai  guide v0001 " in line  # listing polled it once
    assert "gpt-4o-mini-2024-07-18" in line


def test_jobs_list_keeps_listing_when_one_job_cannot_be_refreshed(project, job, capsys):  # noqa: F811
    del project.fake.jobs[job.id]
    assert project.run("jobs", "list") == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith(f"{job.id}  validating_files ")
    assert line.endswith(f"(last seen; now: looking up job {job.id} failed (HTTP 404, fine_tuning_job_not_found, "
                         f"param fine_tuning_job_id): No such fine-tuning job: {job.id}.)")


def test_jobs_list_without_jobs_says_how_to_start_one(project, capsys):  # noqa: F811
    assert project.run("jobs", "list") == 0
    assert capsys.readouterr().out == "no fine-tuning jobs recorded yet; start one with `python pipeline.py finetune`\n"


def test_jobs_show_prints_status_dataset_model_hyperparameters_and_files(project, job, capsys):  # noqa: F811
    assert project.run("jobs", "show", job.id) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"job {job.id} (openai): queued"
    assert out[1] == f"  dataset: guide v0001 ({project.version})"
    assert out[2] == "  model: gpt-4o-mini-2024-07-18"
    assert out[3].startswith("  hyperparameters: batch_size ") and "seed 7; suffix guide" in out[3]
    assert out[4] == f"  files: training {job.training_file}, validation {job.validation_file}"


def test_pause_shows_the_unknown_paused_status_as_is_and_wait_stops_with_how_to_resume(project, job, capsys):  # noqa: F811
    project.fake.advance(job.id, steps=2)  # validating_files -> queued -> running
    assert project.run("jobs", "pause", job.id) == 0
    assert capsys.readouterr().out == f"job {job.id} is now paused\n"
    assert project.run("jobs", "show", job.id) == 0
    assert capsys.readouterr().out.startswith(f"job {job.id} (openai): paused\n")

    assert project.run("jobs", "wait", job.id) == 0
    out = capsys.readouterr().out
    assert "[paused]" in out and f"continue it with `python pipeline.py jobs resume {job.id}" in out

    assert project.run("jobs", "resume", job.id) == 0
    assert capsys.readouterr().out == f"job {job.id} is now running\n"
    assert project.run("jobs", "wait", job.id) == 0
    assert f"succeeded: {job.fine_tuned_model}" in capsys.readouterr().out
    assert project.run("jobs", "list") == 0
    assert capsys.readouterr().out.startswith(f"{job.id}  succeeded ")


def test_pausing_a_job_that_is_not_running_is_one_line_with_the_apis_message(project, job, capsys):  # noqa: F811
    assert project.run("jobs", "pause", job.id) == 1
    err = capsys.readouterr().err
    assert err == (f"error: pausing job {job.id} failed (HTTP 400, param fine_tuning_job_id): Job {job.id} cannot be "
                   "paused: only running jobs can be paused (status: validating_files).\n")


def test_cancel_then_wait_reports_the_cancellation(project, job, capsys):  # noqa: F811
    assert project.run("jobs", "cancel", job.id) == 0
    assert capsys.readouterr().out == f"job {job.id} is now cancelled\n"
    assert project.run("jobs", "wait", job.id) == 1
    assert f"error: job {job.id} was cancelled; start a new one with `python pipeline.py finetune" \
           in capsys.readouterr().err
    assert project.run("finetune") == 0  # a cancelled job does not count as already done
    assert len(project.fake.jobs) == 2


def test_events_are_printed_oldest_first_across_pages(project, job, capsys):  # noqa: F811
    project.fake.run_job(job.id)
    assert project.run("jobs", "events", job.id) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(job.events) > 100  # more than one page of 100
    assert out[0].endswith(f"info   Created fine-tuning job: {job.id}")
    assert out[-1].endswith("info   The job has successfully completed")
    assert any("Step 1/" in line and "training loss=" in line for line in out)
    assert project.fake.find_requests("GET", f"/v1/fine_tuning/jobs/{job.id}/events")[-1].query["after"]


def test_checkpoints_list_steps_model_names_and_metrics(project, job, capsys):  # noqa: F811
    assert project.run("jobs", "checkpoints", job.id) == 0
    assert capsys.readouterr().out == f"job {job.id} has no checkpoints yet (they are made at the last epochs)\n"
    project.fake.run_job(job.id)
    assert project.run("jobs", "checkpoints", job.id) == 0
    out = capsys.readouterr().out.splitlines()
    assert [int(line.split()[1]) for line in out] == sorted((c.step for c in job.checkpoints), reverse=True)
    assert f"{job.fine_tuned_model}:ckpt-step-{job.plan.total_steps}" in out[0]
    assert "train_loss " in out[0] and "valid_loss " in out[0] and "valid_mean_token_accuracy " in out[0]


def test_results_saves_the_decoded_csv_and_a_plot_beside_the_dataset_version(project, job, capsys):  # noqa: F811
    assert project.run("jobs", "results", job.id) == 1
    assert "has no result file yet (status queued)" in capsys.readouterr().err

    project.fake.run_job(job.id)
    assert project.run("jobs", "results", job.id) == 0
    out = capsys.readouterr().out
    folder = project.version / "finetune" / job.id
    assert f"results: {folder / 'step_metrics.csv'} and plot {folder / 'metrics.png'}" in out
    rows = list(csv.DictReader(io.StringIO((folder / "step_metrics.csv").read_text(encoding="utf-8"))))
    assert len(rows) == job.plan.total_steps and rows[-1]["step"] == str(job.plan.total_steps)
    assert f"final: train_loss {float(rows[-1]['train_loss']):.4f}" in out

    from matplotlib.image import imread

    image = imread(folder / "metrics.png")
    assert image.shape[0] >= 400 and image.shape[1] >= 1000


def test_a_job_created_elsewhere_is_reached_through_the_configured_provider(project, capsys):  # noqa: F811
    import openai

    client = openai.OpenAI(api_key=project.fake.api_key, base_url=project.fake.base_url)
    data = (project.version / "train.jsonl").read_bytes()
    file_id = client.files.create(file=("other.jsonl", data), purpose="fine-tune").id
    job_id = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file_id).id
    assert project.run("jobs", "wait", job_id) == 0
    out = capsys.readouterr().out
    assert "succeeded: ft:gpt-4o-mini-2024-07-18:fake-org::" in out
    assert (project.root / "out" / "finetune" / job_id / "step_metrics.csv").is_file()


def test_unknown_job_is_one_line_with_the_apis_message(project, capsys):  # noqa: F811
    assert project.run("jobs", "show", "ftjob-nope") == 1
    assert capsys.readouterr().err == ("error: looking up job ftjob-nope failed (HTTP 404, fine_tuning_job_not_found, "
                                       "param fine_tuning_job_id): No such fine-tuning job: ftjob-nope.\n")


@pytest.mark.parametrize("code, rows, message, hint", [
    ("invalid_n_examples", 3, "Training file has 3 example(s), but must have at least 10 examples",
     "the training file needs at least 10 examples: crawl more pages, add dataset.user_templates"),
    ("invalid_training_file", 12, "Invalid file format. Example 12 cannot be parsed",
     "the API could not read the training file: check it with `python pipeline.py validate"),
])
def test_a_failed_job_prints_its_error_code_message_and_a_hint(project, capsys, code, rows, message, hint):  # noqa: F811
    import openai

    client = openai.OpenAI(api_key=project.fake.api_key, base_url=project.fake.base_url)
    good = (project.version / "train.jsonl").read_text(encoding="utf-8").splitlines()[0]
    lines = [good] * (rows - 1) + (["{not json"] if code == "invalid_training_file" else [good])
    file_id = client.files.create(file=("bad.jsonl", "\n".join(lines).encode() + b"\n"), purpose="fine-tune").id
    job_id = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file_id).id

    assert project.run("jobs", "wait", job_id) == 1
    captured = capsys.readouterr()
    assert f"  error: {message}" in captured.out  # the job's log line
    assert captured.err.startswith(f"error: job {job_id} failed: {code}: {message} — hint: {hint}")
    assert captured.err.count("\n") == 1

    assert project.run("jobs", "show", job_id) == 0
    out = capsys.readouterr().out
    assert f"  error: {code}: {message}\n  hint: {hint}" in out


def test_ctrl_c_while_waiting_leaves_the_job_running_and_says_how_to_watch_again(project, capsys, monkeypatch):  # noqa: F811
    from finetune import cli

    polls = []

    def interrupt_on_second_poll(self, progress):
        polls.append(progress.job.status)
        if len(polls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(cli._Printer, "__call__", interrupt_on_second_poll)
    assert project.run("finetune", "--wait") == 130
    job = the_job(project.fake)
    out = capsys.readouterr().out
    assert f"stopped watching; job {job.id} keeps running. Watch it again with: python pipeline.py jobs wait " \
           f"{job.id} --config {project.config}" in out
    assert job.status == "running" and project.fake.find_requests("POST", f"/v1/fine_tuning/jobs/{job.id}/cancel") == []


def test_models_delete_removes_a_fine_tuned_model_and_refuses_a_base_model(project, job, capsys):  # noqa: F811
    project.fake.run_job(job.id)
    assert project.run("models", "delete", job.fine_tuned_model) == 0
    assert capsys.readouterr().out == f"deleted model {job.fine_tuned_model}\n"
    assert job.fine_tuned_model in project.fake.deleted_models

    assert project.run("models", "delete", "gpt-4o-mini") == 1
    err = capsys.readouterr().err
    assert err.startswith("error: deleting model gpt-4o-mini failed (HTTP 403, insufficient_permissions): "
                          "You have insufficient permissions to delete model gpt-4o-mini")


def test_polling_retries_timeouts_with_a_doubling_delay_then_gives_up_with_the_error():
    from finetune.backend import Job, TransientError
    from finetune.watch import POLL_RETRIES, watch

    class Flaky:
        def __init__(self, failures: int):
            self.failures = failures

        def get_job(self, job_id):
            if self.failures:
                self.failures -= 1
                raise TransientError("looking up job ftjob-1 failed: no answer within 60s after 2 retries")
            return Job(id=job_id, provider="openai", model="m", status="succeeded")

        def list_events(self, job_id, since=None, limit=None):
            return []

    sleeps, retries = [], []
    job = watch(Flaky(3), "ftjob-1", poll_interval=2, on_progress=lambda p: None, sleep=sleeps.append,
                on_retry=lambda exc, delay: retries.append(delay))
    assert job.status == "succeeded" and sleeps == retries == [2, 4, 8]

    with pytest.raises(TransientError, match="no answer within 60s"):
        watch(Flaky(POLL_RETRIES), "ftjob-1", poll_interval=40, on_progress=lambda p: None, sleep=sleeps.append)
    assert sleeps[3:] == [40, 60, 60, 60, 60]  # capped at a minute
