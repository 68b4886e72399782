"""Checkpoints and several models: `jobs checkpoints` lists step, model name and metrics; `evaluate` takes a
checkpoint model, scores a job's final model and every checkpoint side by side (--all-checkpoints: at the fake a
job over-fits after its next-to-last epoch, so an earlier checkpoint is the best), and any models given with
--model more than once, or a --job; `compare_models` is the function behind all of them."""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from pathlib import Path

from configs import load_config
from base.state import state_path
from crawlers.store import PageStore
from finetune.evaluate import compare_models, table
from test_evaluate import StubBackend, write_dataset
from test_finetune import documents, fake, project, the_job  # noqa: F401  (shared fixtures)
from transforms.build import build


def ev_folder(out: str) -> Path:
    return Path(next(line for line in out.splitlines() if line.startswith("  answers: "))[len("  answers: "):]).parent


def answered(out: str) -> list[dict]:
    path = Path(next(line for line in out.splitlines() if line.startswith("  answers: "))[len("  answers: "):])
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def leader(means: dict[str, float]) -> str | None:
    """The label the table marks: the first of the highest means as printed, none when all are equal."""
    shown = {label: round(mean, 3) for label, mean in means.items()}
    return next(label for label, m in shown.items() if m == max(shown.values())) if len(set(shown.values())) > 1 \
        else None


def table_lines(out: str) -> list[str]:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("evaluated ")) + 1
    return lines[start:next(i for i, line in enumerate(lines) if line.startswith("  report: "))]


def test_jobs_checkpoints_shows_step_model_name_and_every_metric(project, capsys):  # noqa: F811
    assert project.run("finetune", "--wait") == 0
    job = the_job(project.fake)
    capsys.readouterr()
    assert project.run("jobs", "checkpoints", job.id) == 0
    lines = capsys.readouterr().out.splitlines()
    newest_first = sorted(job.checkpoints, key=lambda c: -c.step)
    assert len(lines) == len(newest_first) == 3
    for line, c in zip(lines, newest_first):
        assert line.startswith(f"step {c.step:>6}  {job.fine_tuned_model}:ckpt-step-{c.step}  ")
        for key in ("train_loss", "train_mean_token_accuracy", "valid_loss", "valid_mean_token_accuracy"):
            assert f"{key} {c.metrics[key]:.4f}" in line
    assert f"full_valid_loss {newest_first[0].metrics['full_valid_loss']:.4f}" in lines[0]  # the last step's


def test_evaluate_takes_a_checkpoint_model_and_asks_the_questions_of_its_jobs_version(project, capsys):  # noqa: F811
    assert project.run("finetune", "--wait") == 0
    job = the_job(project.fake)
    first_version = project.version
    with PageStore(state_path(project.root / "out")) as store:  # a newer version becomes latest
        for doc in documents(24)[20:]:
            store.save_document(doc, status=200, etag=None, last_modified=None)
    assert build(load_config(project.config)).manifest.version == "v0002"
    checkpoint = min(job.checkpoints, key=lambda c: c.step).model
    capsys.readouterr()

    assert project.run("evaluate", "--model", checkpoint) == 0
    out = capsys.readouterr().out
    assert f"asking gpt-4o-mini-2024-07-18 (base) and {checkpoint} (tuned) the test questions of guide v0001 " in out
    rows = answered(out)
    assert len(rows) == len((first_version / "test.jsonl").read_text(encoding="utf-8").splitlines())
    chats = project.fake.find_requests("POST", "/v1/chat/completions")
    assert Counter(r.body["model"] for r in chats) == {checkpoint: len(rows), "gpt-4o-mini-2024-07-18": len(rows)}
    assert sum(r["answers"]["tuned"]["score"] for r in rows) / len(rows) > 0.3  # it answers from what it learned


def test_all_checkpoints_marks_the_checkpoint_before_over_fitting_as_best(project, capsys):  # noqa: F811
    """At the fake a job over-fits after its next-to-last epoch, as a small file trained for `auto` epochs does:
    the checkpoint with the lowest validation loss answers the test questions best, and the table says so."""
    assert project.run("finetune", "--wait") == 0
    job = the_job(project.fake)
    out = capsys.readouterr().out
    curve = list(csv.DictReader(io.StringIO(Path(out.split("  results: ")[1].split(" and plot ")[0]).read_text(
        encoding="utf-8"))))
    assert project.run("jobs", "checkpoints", job.id) == 0
    valid_loss = {int(line.split()[1]): float(re.search(r" · valid_loss ([\d.]+)", line)[1])
                  for line in capsys.readouterr().out.splitlines()}
    steps = sorted(valid_loss)
    peak = min(valid_loss, key=valid_loss.__getitem__)
    assert len(steps) == 3 and steps[0] < peak < steps[-1]  # it learned, then over-fitted
    measured = [row for row in curve if row["valid_loss"]]
    assert min(measured, key=lambda row: float(row["valid_loss"]))["step"] == str(peak)  # the result CSV agrees

    assert project.run("evaluate", "--job", job.id, "--all-checkpoints") == 0
    out = capsys.readouterr().out
    named = {f"step {s}": f"{job.fine_tuned_model}:ckpt-step-{s}" for s in steps} | {"final": job.fine_tuned_model}
    best = f"step {peak}"
    rows = answered(out)
    chats = project.fake.find_requests("POST", "/v1/chat/completions")
    assert Counter(r.body["model"] for r in chats) == {name: len(rows) for name in named.values()}  # no base
    assert all(list(r["answers"]) == list(named) for r in rows)
    for row in rows:  # every test question is answered best before over-fitting
        scores = {label: answer["score"] for label, answer in row["answers"].items()}
        assert scores[best] == max(scores.values()) and scores[f"step {steps[0]}"] < scores[best] > scores["final"]

    means = {label: sum(r["answers"][label]["score"] for r in rows) / len(rows) for label in named}
    assert leader(means) == best
    lines = table_lines(out)
    assert [line.split(":")[0].strip() for line in lines] == list(named)
    for line, (label, name) in zip(lines, named.items()):
        assert line.startswith(f"  {label}: {name}") and f"  {means[label]:.3f}" in line
    assert [line.endswith("  ← best") for line in lines] == [label == best for label in named]
    assert ev_folder(out).name == (f"{job.fine_tuned_model}--vs--" + "--vs--".join(
        f"ckpt-step-{s}" for s in reversed(steps))).replace(":", "_")  # the checkpoints by their suffix
    page = Path(out.split("  report: ")[1].splitlines()[0]).read_text(encoding="utf-8")
    assert all(f"<th>{label}: {name}</th>" in page for label, name in named.items())
    for label, name in named.items():
        assert f'<tr><td>{name}</td><td>{label}</td><td class="score">{means[label]:.3f}</td></tr>' in page
    assert page.count('<td class="better">') == len(rows)  # one cell per question: the best checkpoint's


def test_the_best_checkpoint_is_marked_when_later_ones_score_lower(tmp_path):
    ds = write_dataset(tmp_path, [("which policy?", "retry policy 3 applies to failed transfers")])
    backend = StubBackend({"ckpt-1": "no idea", "ckpt-2": "retry policy 3 applies to failed transfers",
                           "ft-final": "retry policy 3 applies"})  # 4 of 7 words: 2 × 4/7 / (1 + 4/7)
    ev = compare_models(backend, ds, {"step 1": "ckpt-1", "step 2": "ckpt-2", "final": "ft-final"})
    assert ev.leader == "step 2"
    assert table(ev) == ["  step 1: ckpt-1   0.000", "  step 2: ckpt-2   1.000  ← best",
                         f"  final: ft-final  {8 / 11:.3f}"]
    assert ev.jsonl.parent.name == "ft-final--vs--ckpt-2--vs--ckpt-1"


def test_all_checkpoints_needs_a_job_and_a_job_with_something_to_score(project, capsys):  # noqa: F811
    assert project.run("evaluate", "--model", "ft:gpt-4o-mini-2024-07-18:fake-org::abc", "--all-checkpoints") == 1
    assert capsys.readouterr().err == ("error: --all-checkpoints scores a job's checkpoints: pass --job ID instead of "
                                       "--model (`python pipeline.py jobs list` shows the jobs)\n")
    assert project.run("finetune") == 0
    job = the_job(project.fake)
    capsys.readouterr()
    assert project.run("evaluate", "--job", job.id, "--all-checkpoints") == 1
    assert capsys.readouterr().err == (f"error: job {job.id} is {job.status} and has no model or checkpoint to "
                                       f"evaluate yet; wait for it: python pipeline.py jobs wait {job.id}\n")
    assert not project.fake.find_requests("POST", "/v1/chat/completions")


def test_evaluate_takes_model_or_job_and_refuses_both_or_neither_in_one_line(project, capsys):  # noqa: F811
    assert project.run("finetune", "--wait") == 0
    job = the_job(project.fake)
    capsys.readouterr()
    assert project.run("evaluate", "--model", job.fine_tuned_model, "--job", job.id) == 1
    assert capsys.readouterr().err == (
        "error: evaluate takes --model or --job, not both: --model MODEL scores that model (repeat it for several), "
        "--job ID the job's final model (with --all-checkpoints also its checkpoints)\n")
    assert project.run("evaluate", "--temperature", "0.5") == 1
    assert capsys.readouterr().err == (
        "error: evaluate needs the model to score: --model MODEL (ft:…, a checkpoint ft:…:ckpt-step-N or "
        "local:<job id>; repeat it for several) or --job ID (`python pipeline.py jobs list` shows the jobs)\n")
    assert not project.fake.find_requests("POST", "/v1/chat/completions")
    assert not (project.version / "evaluations").exists()


def test_several_models_are_scored_side_by_side_without_their_base_unless_asked(project, capsys):  # noqa: F811
    assert project.run("finetune", "--wait") == 0
    assert project.run("finetune", "--wait", "--force") == 0
    first, second = (job.fine_tuned_model for job in project.fake.jobs.values())
    capsys.readouterr()

    assert project.run("evaluate", "--model", first, "--model", second) == 0
    out = capsys.readouterr().out
    assert f"asking {first} and {second} the test questions of guide v0001 (temperature 0, 4 at a time)" in out
    rows = answered(out)
    chats = project.fake.find_requests("POST", "/v1/chat/completions")
    assert Counter(r.body["model"] for r in chats) == {first: len(rows), second: len(rows)}
    means = {name: sum(r["answers"][name]["score"] for r in rows) / len(rows) for name in (first, second)}
    lines = table_lines(out)
    assert [line.split()[:2] for line in lines] == [[name, f"{mean:.3f}"] for name, mean in means.items()]
    assert [line.endswith("← best") for line in lines] == [name == leader(means) for name in means]
    assert ev_folder(out).name == f"{second}--vs--{first}".replace(":", "_")

    assert project.run("evaluate", "--model", first, "--model", second, "--base", "gpt-4.1-mini") == 0
    out = capsys.readouterr().out
    assert f"asking 3 models (base, {first}, {second}) the test questions" in out
    assert list(answered(out)[0]["answers"]) == ["base", first, second]
