"""`evaluate`'s sampling settings: validated once for the config file and the flags, sent in every chat request,
n answers scored (mean and best), and `--sweep` running one evaluation per value (at the fake a tuned model's
answers change with the temperature, the same request's never)."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest

from configs import EvaluationConfig
from fake_openai import BASE_MODEL_REPLY
from finetune.backend import ChatReply
from finetune.evaluate import compare_models, sweep, sweep_table, table
from pipeline import main
from test_evaluate import StubBackend, write_dataset
from test_evaluate_checkpoints import leader
from test_finetune import fake, project, the_job  # noqa: F401  (shared fixtures)

# setting, a value out of the API's range (or no number), the one-line message
BAD_VALUES = [
    ("n", "0", "must be an integer from 1 to 16, got {v}"),
    ("n", "17", "must be an integer from 1 to 16, got {v}"),
    ("n", "2.5", "must be an integer from 1 to 16, got {v}"),
    ("temperature", "2.5", "must be a number from 0 to 2, got {v}"),
    ("temperature", "-0.1", "must be a number from 0 to 2, got {v}"),
    ("temperature", "warm", "must be a number from 0 to 2, got {v}"),
    ("top_p", "1.5", "must be a number from 0 to 1, got {v}"),
    ("top_p", "-0.5", "must be a number from 0 to 1, got {v}"),
    ("frequency_penalty", "-2.5", "must be a number from -2 to 2, got {v}"),
    ("frequency_penalty", "2.01", "must be a number from -2 to 2, got {v}"),
    ("presence_penalty", "3", "must be a number from -2 to 2, got {v}"),
    ("presence_penalty", "-2.5", "must be a number from -2 to 2, got {v}"),
    ("max_tokens", "0", "must be an integer >= 1, got {v}"),
]


@pytest.fixture
def config(tmp_path) -> Path:
    """A config for commands that must stop before they read a dataset or reach an API."""
    path = tmp_path / "config.yaml"
    path.write_text("output_dir: out\nsources:\n  - name: guide\n    start_urls: [\"http://guide.example.internal/\"]\n",
                    encoding="utf-8")
    return path


@pytest.mark.parametrize("setting, value, message", BAD_VALUES)
def test_a_setting_out_of_the_apis_range_in_the_config_is_one_line_naming_the_key(config, capsys, setting, value,
                                                                                   message):
    with open(config, "a", encoding="utf-8") as f:
        f.write(f"finetune:\n  evaluation:\n    {setting}: {value}\n")
    assert main(["evaluate", "--model", "ft:gpt-4o-mini-2024-07-18:org::abc", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    got = repr(value) if value == "warm" else value  # YAML reads the numbers as numbers
    assert err == f"error: {config}: finetune.evaluation.{setting}: {message.format(v=got)}\n"


@pytest.mark.parametrize("setting, value, message", BAD_VALUES)
def test_a_flag_out_of_the_apis_range_is_one_line_naming_the_flag(config, capsys, setting, value, message):
    flag = "--" + setting.replace("_", "-")
    assert main(["evaluate", "--model", "ft:gpt-4o-mini-2024-07-18:org::abc", flag, value, "--config",
                 str(config)]) == 1
    assert capsys.readouterr().err == f"error: {flag}: {message.format(v=repr(value))}\n"
    assert not (config.parent / "out").exists()  # refused before anything was opened


@pytest.mark.parametrize("setting, value", [("n", 129), ("temperature", 2.5), ("top_p", 1.5),
                                            ("frequency_penalty", -2.5), ("presence_penalty", 2.5),
                                            ("max_completion_tokens", 0)])
def test_the_fake_refuses_what_the_api_refuses(fake, setting, value):  # noqa: F811
    client = openai.OpenAI(api_key=fake.api_key, base_url=fake.base_url, max_retries=0)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                       **{setting: value})
    assert err.value.param == setting
    assert f"Invalid '{setting}': " in err.value.message and f"but got {value} instead." in err.value.message


def test_every_setting_arrives_in_the_request_body_flags_over_the_config(project, capsys):  # noqa: F811
    project.write_config(finetune="  evaluation: {n: 2, temperature: 0.3, presence_penalty: 0.5, top_p: 0.8}")
    assert project.run("finetune", "--wait") == 0
    model = the_job(project.fake).fine_tuned_model
    capsys.readouterr()

    assert project.run("evaluate", "--model", model, "--temperature", "0.7", "--top-p", "0.9",
                       "--frequency-penalty", "-1.5", "--max-tokens", "40") == 0
    out = capsys.readouterr().out
    chats = project.fake.find_requests("POST", "/v1/chat/completions")
    questions = len((project.version / "test.jsonl").read_text(encoding="utf-8").splitlines())
    assert len(chats) == 2 * questions
    for request in chats:
        assert {k: request.body.get(k) for k in ("n", "temperature", "top_p", "frequency_penalty", "presence_penalty",
                                                 "max_completion_tokens")} == {
            "n": 2, "temperature": 0.7, "top_p": 0.9, "frequency_penalty": -1.5, "presence_penalty": 0.5,
            "max_completion_tokens": 40}
    assert out.startswith("warning: both temperature and top_p differ from their defaults (0 and 1): vary one of "
                          "them, not both, or their effects cannot be told apart\n")
    assert out.count("warning:") == 1
    assert (f"(temperature 0.7, n 2, top_p 0.9, frequency_penalty -1.5, presence_penalty 0.5, max_tokens 40, 4 at a "
            "time)") in out

    # both choices of every answer are scored; the folder says which settings made it
    answers = Path(next(line for line in out.splitlines() if line.startswith("  answers: "))[11:])
    assert answers.parent.name == (f"{model.replace(':', '_')}--vs--gpt-4o-mini-2024-07-18--n-2--temperature-0.7--"
                                   "top_p-0.9--frequency_penalty--1.5--presence_penalty-0.5--max_tokens-40")
    rows = [json.loads(line) for line in answers.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == questions
    for row in rows:
        base = row["answers"]["base"]
        assert [c["text"] for c in base["choices"]] == [BASE_MODEL_REPLY] * 2 and base["score"] == base["best"] == 0
        tuned = row["answers"]["tuned"]
        assert len(tuned["choices"]) == 2
        assert tuned["score"] == pytest.approx(sum(c["score"] for c in tuned["choices"]) / 2, abs=1e-4)
        assert tuned["best"] == max(c["score"] for c in tuned["choices"])
    mean = sum(r["answers"]["tuned"]["score"] for r in rows) / len(rows)
    best = sum(r["answers"]["tuned"]["best"] for r in rows) / len(rows)
    assert f"  tuned: {model}  {mean:.3f} · best of 2 {best:.3f}  ← best\n" in out


def test_n_answers_are_all_scored_with_their_mean_and_the_best(tmp_path):
    ds = write_dataset(tmp_path, [("what is retried?", "failed transfers are retried"),
                                  ("who checks?", "the operator checks")])
    backend = StubBackend({"tuned": ["failed transfers are retried", "nothing", "operator checks"],
                           "base": "no idea"})
    ev = compare_models(backend, ds, {"base": "base", "tuned": "tuned"}, EvaluationConfig(n=3, temperature=1))
    first, second = (r["answers"]["tuned"] for r in ev.rows)
    assert [c["text"] for c in first["choices"]] == ["failed transfers are retried", "nothing", "operator checks"]
    assert [c["score"] for c in first["choices"]] == [1.0, 0.0, 0.0]
    assert [c["score"] for c in second["choices"]] == [0.0, 0.0, 0.8]  # 2 of 3 words: precision 1, recall 2/3
    assert first["score"] == pytest.approx(1 / 3, abs=1e-4) and first["best"] == 1.0
    assert second["score"] == pytest.approx(0.8 / 3, abs=1e-4) and second["best"] == 0.8
    assert ev.mean("tuned") == pytest.approx((1 + 0.8) / 6, abs=1e-4) and ev.best("tuned") == pytest.approx(0.9)
    assert ev.best("base") == ev.mean("base") == 0.0
    assert table(ev) == ["  base   0.000 · best of 3 0.000",  # a label that is the model's name is shown once
                         "  tuned  0.300 · best of 3 0.900  ← best"]
    page = ev.html.read_text(encoding="utf-8")
    assert "mean of the best of 3" in page and page.count('class="choice"') == 2 * 3 * 2


def test_sweep_runs_one_evaluation_per_value_and_puts_the_scores_side_by_side(project, capsys):  # noqa: F811
    assert project.run("finetune", "--wait") == 0
    model = the_job(project.fake).fine_tuned_model
    capsys.readouterr()

    assert project.run("evaluate", "--model", model, "--sweep", "temperature=0,0.5,1", "--n", "2") == 0
    out = capsys.readouterr().out
    chats = project.fake.find_requests("POST", "/v1/chat/completions")
    questions = len((project.version / "test.jsonl").read_text(encoding="utf-8").splitlines())
    assert len(chats) == 3 * 2 * questions
    assert sorted({r.body["temperature"] for r in chats}) == [0, 0.5, 1]
    assert {r.body["n"] for r in chats} == {2}
    assert out.count("warning:") == 1 and "warning: n 2 at temperature 0 gives (nearly) the same answer 2 times" in out

    sweep_dir = (project.version / "evaluations"
                 / f"{model.replace(':', '_')}--vs--gpt-4o-mini-2024-07-18--n-2--sweep-temperature")
    scores = [json.loads(line) for line in (sweep_dir / "scores.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [s["temperature"] for s in scores] == [0, 0.5, 1]
    lines = out.splitlines()
    answers = [[json.loads(line) for line in (Path(s["folder"]) / "results.jsonl").read_text(
        encoding="utf-8").splitlines()] for s in scores]
    for label, name in (("base", "gpt-4o-mini-2024-07-18"), ("tuned", model)):
        at = lines.index(f"  {label}: {name}")
        means = {}
        for i, (s, rows) in enumerate(zip(scores, answers)):
            means[i] = sum(r["answers"][label]["score"] for r in rows) / len(rows)
            assert s["scores"][label]["mean"] == pytest.approx(means[i], abs=1e-4)
            value = f"temperature {s['temperature']:g}"
            assert lines[at + 1 + i].startswith(f"    {value:<15}  {means[i]:.3f} · best of 2 ")
        assert [lines[at + 1 + i].endswith("← best") for i in means] == [i == leader(means) for i in means]
        # the base answers generically at any temperature; the tuned model's answers change with it
        assert len({f"{m:.3f}" for m in means.values()}) == (1 if label == "base" else len(scores))
    greedy, *hot = ([[c["text"] for c in r["answers"]["tuned"]["choices"]] for r in rows] for rows in answers)
    assert all(first == second for first, second in greedy)  # temperature 0: the same answer twice
    assert all(any(first != second for first, second in texts) for texts in hot)  # above: two different ones

    # the same request gets the same answers: evaluating one value again rewrites its folder unchanged
    assert project.run("evaluate", "--model", model, "--temperature", "1", "--n", "2") == 0
    again = Path(next(line for line in capsys.readouterr().out.splitlines() if line.startswith("  answers: "))[11:])
    assert again.parent == Path(scores[-1]["folder"])
    assert [json.loads(line)["answers"] for line in again.read_text(encoding="utf-8").splitlines()] == [
        r["answers"] for r in answers[-1]]
    page = (sweep_dir / "report.html").read_text(encoding="utf-8")
    assert page.count("<tr><td>") == 3 and "<script" not in page
    assert page.count('href="../') == 3  # each value links to its own report


@pytest.mark.parametrize("sweep, extra, message", [
    ("temperature=0,3", [], "--sweep temperature=3: must be a number from 0 to 2, got '3'"),
    ("top-p=0.5,x", [], "--sweep top_p=x: must be a number from 0 to 1, got 'x'"),
    ("seed=1,2", [], "--sweep seed=1,2: expected SETTING=VALUE,VALUE,… with SETTING one of n, temperature, top_p, "
                     "frequency_penalty, presence_penalty, max_tokens; e.g. --sweep temperature=0,0.5,1"),
    ("temperature", [], "--sweep temperature: expected SETTING=VALUE,VALUE,…"),
    ("temperature=0,1", ["--temperature", "1"], "--sweep temperature and --temperature both set the same setting: "
                                                "drop --temperature"),
])
def test_sweep_values_are_checked_like_their_flags(config, capsys, sweep, extra, message):
    assert main(["evaluate", "--model", "ft:gpt-4o-mini-2024-07-18:org::abc", "--sweep", sweep, *extra, "--config",
                 str(config)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1


class HotStub(StubBackend):
    """Answers off the topic from temperature 1 on, so a sweep has a best value."""

    def chat(self, model, messages, *, sampling):
        replies = super().chat(model, messages, sampling=sampling)
        return replies if sampling.temperature < 1 else [ChatReply("off topic", "length")] * sampling.n


def test_a_sweep_marks_each_models_best_value_and_keeps_every_value_apart(tmp_path):
    ds = write_dataset(tmp_path, [("which policy?", "retry policy 3"), ("who checks?", "the operator")])
    sw = sweep(HotStub({"tuned": "retry policy 3", "base": "no idea"}), ds, {"base": "base", "tuned": "tuned"},
               EvaluationConfig(), "temperature", [1.5, 0.5, 0.5, 1])
    assert sw.values == [1.5, 0.5, 1.0]  # a repeated value is asked once
    assert [ev.settings.temperature for ev in sw.evaluations] == sw.values
    assert [ev.jsonl.parent.name for ev in sw.evaluations] == [
        f"tuned--vs--base--temperature-{v}" for v in ("1.5", "0.5", "1")]
    assert sweep_table(sw) == ["  base",
                               "    temperature 1.5  0.000", "    temperature 0.5  0.000", "    temperature 1    0.000",
                               "  tuned",
                               "    temperature 1.5  0.000", "    temperature 0.5  0.500  ← best",
                               "    temperature 1    0.000"]
    assert sw.jsonl.parent.name == "tuned--vs--base--sweep-temperature"
    assert [json.loads(line) for line in sw.jsonl.read_text(encoding="utf-8").splitlines()][1] == {
        "temperature": 0.5, "folder": str(sw.evaluations[1].jsonl.parent),
        "scores": {"base": {"model": "base", "mean": 0.0, "best": 0.0},
                   "tuned": {"model": "tuned", "mean": 0.5, "best": 0.5}}}
