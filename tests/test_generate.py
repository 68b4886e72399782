"""`generate` and the generated build: the real openai SDK against a fake chat server on 127.0.0.1 that answers
from the section it is sent, with planted faults (429, fenced JSON, a think block, an invented quote, an English
answer to a Korean section, a repeated question, a timeout, no JSON at all)."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from fake_chat import ENGLISH, INVENTED, FakeChat
from pipeline import main
from configs import load_config
from transforms.generate import Generator, Prompt, PROMPTS, generate, parse_pairs
from transforms.tokens import count_messages

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample_site"
KEY = "sk-test-chat"
PAIRS = '{"pairs": [{"question": "Q?", "paraphrases": ["q"], "answer": "A.", "evidence": ["A."], "style": "factual"}]}'


def config_text(output: Path, url: str, provider: str = "openai", **generate: object) -> str:
    extra = "".join(f"\n    {k}: {json.dumps(v)}" for k, v in generate.items() if k != "base_url")
    return f"""
output_dir: {output}
sources:
  - name: guide
    serve_dir: {SAMPLE}
    start_urls: ["http://guide.example.internal/index.html"]
    allowed_domains: [guide.example.internal]
dataset:
  name: guide
  test_fraction: 0.2
  max_tokens_per_example: 4096
  generate:
    provider: {provider}
    model: gpt-4o-mini
    base_url: {url}
    timeout_s: 1
    max_retries: 2{extra}
"""


@pytest.fixture(scope="module")
def crawled(tmp_path_factory) -> Path:
    """The bundled sample crawled once; each test gets a copy of its state."""
    out = tmp_path_factory.mktemp("crawled") / "out"
    config = out.parent / "config.yaml"
    config.write_text(config_text(out, "http://127.0.0.1:9/v1"), encoding="utf-8")
    assert main(["crawl", "--config", str(config)]) == 0
    return out / "state.sqlite"


@pytest.fixture
def site(crawled, tmp_path, monkeypatch):
    """(write a config for a fake, the output folder): the crawled state copied, the fake's key set."""
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(crawled, out / "state.sqlite")
    monkeypatch.setenv("OPENAI_API_KEY", KEY)

    def write(fake: FakeChat, **generate: object) -> str:
        path = tmp_path / "config.yaml"
        text = config_text(out, fake.base_url, **generate)
        if generate.get("base_url", "") is None:  # no base_url: the provider's, which needs the key
            text = text.replace(f"    base_url: {fake.base_url}\n", "")
        path.write_text(text, encoding="utf-8")
        return str(path)

    return write, out


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


# -- parsing --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reply", [
    PAIRS,
    f"```json\n{PAIRS}\n```",
    f"<think>I should answer {{briefly}} in JSON.</think>\n{PAIRS}",
    f"Here are your pairs:\n{PAIRS}\nAnything else?",
])
def test_pairs_are_parsed_through_fences_think_blocks_and_prose(reply):
    assert parse_pairs(reply) == [{"question": "Q?", "paraphrases": ["q"], "answer": "A.", "evidence": ["A."],
                                   "style": "factual"}]


@pytest.mark.parametrize("reply", ["", "죄송합니다.", '{"questions": []}', f"<think>{PAIRS}", "{broken"])
def test_a_reply_without_pairs_is_unparsable(reply):
    assert parse_pairs(reply) is None


def test_a_pair_missing_its_answer_is_left_out():
    assert parse_pairs('{"pairs": [{"question": "Q?"}, {"question": "R?", "answer": "B"}]}') == [
        {"question": "R?", "paraphrases": [], "answer": "B", "evidence": [], "style": "factual"}]


# -- prompts and keys ----------------------------------------------------------------------------------


def test_bundled_prompts_have_versions_and_the_version_is_part_of_the_key(tmp_path):
    from configs import GenerateConfig
    from transforms.generate import SectionText

    for language in ("ko", "en"):
        prompt = Prompt.load(PROMPTS / f"generate-{language}.md")
        assert prompt.version == "1" and "$text" in prompt.user and "$heading" in prompt.user
    section = SectionText("http://x/", "제목", "섹션", "본문 내용입니다.", "ko")
    own = tmp_path / "mine.md"
    own.write_text((PROMPTS / "generate-ko.md").read_text(encoding="utf-8"), encoding="utf-8")
    same = Generator(GenerateConfig(provider="openai", prompt=own)).key(section)
    own.write_text((PROMPTS / "generate-ko.md").read_text(encoding="utf-8").replace("version: 1", "version: 2", 1),
                   encoding="utf-8")
    assert Generator(GenerateConfig(provider="openai")).key(section) == same
    assert Generator(GenerateConfig(provider="openai", prompt=own)).key(section) != same
    assert Generator(GenerateConfig(provider="openai", model="gpt-4.1-mini")).key(section) != same


def test_a_prompt_file_without_a_version_is_one_line_error(tmp_path, capsys, site):
    write, _ = site
    bad = tmp_path / "bad.md"
    bad.write_text("system\n---\nuser $text\n", encoding="utf-8")
    with FakeChat(api_key=KEY) as fake:
        assert main(["generate", "--config", write(fake, prompt=str(bad))]) == 1
        assert fake.requests == []
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "version: N" in err[0] and str(bad) in err[0]


# -- the whole job -------------------------------------------------------------------------------------


FAULTS = {"HTTP › 요청 규칙": ["429", "fenced"], "TCP › 연결 방식": ["think+english"],
          "Sync 채널 설정 › 1. 개요": ["timeout"], "HTTP › 호출 예시": ["invented"],
          "Async 채널 설정 › 주요 설정 항목": ["around+duplicate"], "용어집 › 가 ~ 사": ["garbage"]}


def test_run_generates_grounded_pairs_drops_the_planted_ones_and_pays_once(site, capsys):
    write, out = site
    with FakeChat(api_key=KEY, faults={k: list(v) for k, v in FAULTS.items()}, slow_seconds=2) as fake:
        config = write(fake)
        assert main(["run", "--config", config]) == 0
        assert fake.schema_violations == []
        sent = len(fake.requests)
        planted = {p["fault"]: p for p in fake.planted}
        assert set(planted) == {"invented", "english", "duplicate"}
        retried = [r.at for r in fake.requests if "HTTP › 요청 규칙" in r.heading]
        assert len(retried) >= 2 and retried[1] - retried[0] >= 0.05  # retry-after-ms honoured
        assert len([r for r in fake.requests if "Sync 채널 설정 › 1. 개요" in r.heading]) == 2  # timed out, retried
        out_text = capsys.readouterr().out
        assert "0 generation_unparsable" in out_text and "built guide v0001" in out_text

        version = out / "datasets" / "guide" / "v0001"
        manifest = json.loads((version / "manifest.json").read_text(encoding="utf-8"))
        train, test = lines(version / "train.jsonl"), lines(version / "test.jsonl")
        answers = {line["messages"][-1]["content"] for line in train + test}
        questions = [line["messages"][1]["content"] for line in train + test]
        assert INVENTED not in answers and ENGLISH not in answers
        dropped = manifest["counts"]["dropped"]
        assert dropped["ungrounded"] >= 1 and dropped["wrong_language"] >= 1 and dropped["duplicate_question"] >= 1
        reasons = {(d["reason"], d.get("question")) for d in lines(version / "dropped.jsonl")}
        assert ("ungrounded", planted["invented"]["question"]) in reasons
        assert ("wrong_language", planted["english"]["question"]) in reasons
        assert ("duplicate_question", planted["duplicate"]["question"]) in reasons
        assert len(questions) == len(set(questions))

        # several grounded examples per section: every answer is a verbatim stretch of its document
        texts = {d["url"]: d["text"] for d in lines(version / "documents.jsonl")}
        meta = lines(version / "metadata.jsonl")
        assert all(m["generated"]["evidence"][0] in texts[m["url"]] for m in meta)
        per_section: dict = {}
        for m in meta:
            per_section[(m["url"], m["section"])] = per_section.get((m["url"], m["section"]), 0) + 1
        assert sum(n >= 3 for n in per_section.values()) >= 0.8 * len(per_section)
        assert {"url", "section"} <= set(meta[0]) and {"style", "evidence", "model", "judge_score"} <= set(
            meta[0]["generated"])

        # the recall set: paraphrases of train questions, never trained on
        recall = lines(version / "eval_recall.jsonl")
        assert recall and manifest["generation"]["recall_file"] == "eval_recall.jsonl"
        assert manifest["files"]["eval_recall.jsonl"]
        trained = {json.dumps(line["messages"], ensure_ascii=False) for line in train}
        assert not any(json.dumps(line["messages"], ensure_ascii=False) in trained for line in recall)
        train_answers = {line["messages"][-1]["content"] for line in train}
        assert all(line["messages"][-1]["content"] in train_answers for line in recall)  # other wordings train
        assert {m["split"] for m in lines(version / "metadata.jsonl")} == {"train", "test"}
        test_urls = {m["url"] for m in meta if m["split"] == "test"}
        assert not any(line["metadata"]["url"] in test_urls for line in recall)
        from finetune.question_sets import available, load_set  # what `evaluate --set recall` asks
        from transforms.version import DatasetVersion, read_manifest

        held = DatasetVersion(dir=version, manifest=read_manifest(version))
        asked = load_set(held, "recall")
        assert "recall" in available(held)
        assert len(asked) == sum(line["metadata"]["generated"]["style"] != "not_covered" for line in recall)
        assert all(q.meta["url"] in texts and q.meta["source_id"].startswith(q.meta["url"]) for q in asked)

        import html

        report = (version / "report.html").read_text(encoding="utf-8")
        assert "<h2>Generated pairs</h2>" in report and "Examples per section" in report
        assert "verify: ungrounded" in report and html.escape(INVENTED) in report  # the drop, with its sample
        assert "question_dedup: duplicate_question" in report and "<td>factual</td>" in report

        assert main(["validate", str(version / "train.jsonl"), "--config", config]) == 0

        assert main(["run", "--config", config]) == 0
        assert len(fake.requests) == sent  # unchanged site: nothing sent
        assert "unchanged, latest stays guide v0001" in capsys.readouterr().out


def test_an_interrupted_run_resumes_without_paying_twice(site, capsys):
    write, out = site
    with FakeChat(api_key=KEY) as fake:
        config = write(fake)
        assert main(["generate", "--config", config, "--limit", "5"]) == 0
        assert len(fake.requests) == 5
        assert main(["generate", "--config", config, "--estimate"]) == 0
        estimate = capsys.readouterr().out
        total = int(estimate.split(" requests for ")[1].split(" of ")[1].split()[0])
        assert f"estimate: {total - 5} requests" in estimate and "(5 cached)" in estimate
        assert len(fake.requests) == 5  # --estimate sends nothing
        assert main(["generate", "--config", config]) == 0
        assert len(fake.requests) == total
        assert {r.section for r in fake.requests}.__len__() == total  # no section asked twice


def test_ctrl_c_stores_the_replies_in_flight_so_the_next_run_asks_no_section_twice(site):
    write, out = site

    def interrupt(progress) -> None:
        if progress.done >= 2:
            raise KeyboardInterrupt

    with FakeChat(api_key=KEY, latency=0.3) as fake:
        config = load_config(write(fake, concurrency=4))
        with pytest.raises(KeyboardInterrupt):
            generate(config, on_progress=interrupt)
        asked = {r.section for r in fake.requests}
        db = sqlite3.connect(out / "state.sqlite")
        assert db.execute("SELECT COUNT(*) FROM generated").fetchone()[0] == len(asked) > 2  # in flight: paid, kept
        sent = len(fake.requests)
        generate(config)
        again = [r.section for r in fake.requests[sent:]]
        assert again and not set(again) & asked and len(again) == len(set(again))


def test_estimate_counts_exactly_the_input_tokens_sent(site, capsys):
    write, _ = site
    with FakeChat(api_key=KEY) as fake:
        config = write(fake)
        assert main(["generate", "--config", config, "--estimate"]) == 0
        estimated = int(capsys.readouterr().out.split("input tokens ")[1].split()[0].replace(",", ""))
        assert main(["generate", "--config", config]) == 0
        counter = Generator(__import__("configs").GenerateConfig(provider="openai")).counter
        sent = sum(count_messages(counter.encoding, r.body["messages"]) for r in fake.requests)
        assert sent == estimated


def test_max_cost_stops_before_a_request_that_could_pass_it(site, capsys):
    write, out = site
    with FakeChat(api_key=KEY) as fake:
        config = write(fake, price_per_1m_input_tokens=10.0, price_per_1m_output_tokens=10.0, concurrency=2)
        assert main(["generate", "--config", config, "--max-cost", "0.1"]) == 0
        said = capsys.readouterr().out
        assert "stopped: max_cost_usd $0.10: stopped before section" in said
        assert 0 < len(fake.requests) < 30
    db = sqlite3.connect(out / "state.sqlite")
    spent, rows = db.execute("SELECT SUM(cost_usd), COUNT(*) FROM generated").fetchone()
    assert spent <= 0.1 and rows == len(fake.requests)


def test_removed_pages_pairs_are_retired(site):
    write, out = site
    with FakeChat(api_key=KEY) as fake:
        config = write(fake)
        assert main(["generate", "--config", config]) == 0
        db = sqlite3.connect(out / "state.sqlite")
        db.execute("UPDATE pages SET live = 0 WHERE url LIKE '%/tcp.html'")
        db.commit()
        sent = len(fake.requests)
        assert main(["generate", "--config", config]) == 0
        assert len(fake.requests) == sent
    assert db.execute("SELECT COUNT(*) FROM generated WHERE url LIKE '%/tcp.html'").fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM generated").fetchone()[0] > 0


def test_a_reply_unparsable_twice_is_counted_and_shown_as_a_drop(site, capsys):
    write, out = site
    with FakeChat(api_key=KEY, faults={"TCP › 연결 방식": ["garbage", "garbage"], "HTTP › 요청 규칙": ["garbage"]}) as fake:
        config = write(fake)
        assert main(["generate", "--config", config]) == 0 and main(["build", "--config", config]) == 0
        assert len([r for r in fake.requests if "TCP › 연결 방식" in r.heading]) == 2
    assert "1 generation_unparsable" in capsys.readouterr().out
    drops = lines(out / "datasets" / "guide" / "v0001" / "dropped.jsonl")
    assert [d["section"] for d in drops if d["reason"] == "generation_unparsable"] == ["연결 방식"]
    assert [d["url"] for d in drops if d["reason"] == "generation_unparsable"][0].endswith("/tcp.html")


def test_a_server_without_json_schema_support_is_asked_in_words(site):
    write, out = site
    with FakeChat(api_key=KEY, refuse_response_format=True) as fake:
        assert main(["generate", "--config", write(fake, concurrency=1), "--limit", "3"]) == 0
        assert len(fake.schema_violations) == 1 and "response_format" in fake.schema_violations[0]  # asked once
        assert len(fake.requests) == 3 and not any("response_format" in r.body for r in fake.requests)
    assert sqlite3.connect(out / "state.sqlite").execute(
        "SELECT COUNT(*) FROM generated WHERE status = 'ok'").fetchone()[0] == 3


def test_requests_are_bounded_by_concurrency(site):
    write, _ = site
    with FakeChat(api_key=KEY, latency=0.05) as fake:
        assert main(["generate", "--config", write(fake, concurrency=4), "--limit", "16"]) == 0
    assert fake.max_in_flight == 4


def test_a_missing_key_is_one_line_naming_the_variable(site, capsys, monkeypatch):
    write, _ = site
    monkeypatch.delenv("OPENAI_API_KEY")
    with FakeChat(api_key=KEY) as fake:
        config = write(fake, base_url=None)
        assert main(["generate", "--config", config]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "$OPENAI_API_KEY" in err[0]


def test_the_templates_stay_the_default(tmp_path, capsys):
    from configs import load_config

    (tmp_path / "c.yaml").write_text("output_dir: out\nsources:\n  - name: g\n    start_urls: ['http://x/']\n",
                                     encoding="utf-8")
    assert load_config(tmp_path / "c.yaml").dataset.generate.provider == "none"
    assert main(["generate", "--config", str(tmp_path / "c.yaml")]) == 1
    assert "provider is none" in capsys.readouterr().err


def test_a_judge_scores_each_pair_and_the_low_ones_are_dropped(site, capsys):
    from fake_chat import VAGUE

    write, out = site
    with FakeChat(api_key=KEY, faults={"TCP › 연결 방식": ["vague"]}) as fake:
        config = write(fake, judge={"model": "gpt-4o-mini", "min_score": 3})
        assert main(["generate", "--config", config]) == 0 and main(["build", "--config", config]) == 0
        judged = [r for r in fake.requests if r.judge]
        generated = [r for r in fake.requests if not r.judge]
        assert fake.schema_violations == [] and len(judged) == len(generated)
        assert judged[0].body["response_format"]["json_schema"]["name"] == "scores"
        version = out / "datasets" / "guide" / "v0001"
        drops = lines(version / "dropped.jsonl")
        assert [(d["question"], d["judge_score"]) for d in drops if d["reason"] == "judged_low"] == [(VAGUE, 2)]
        meta = lines(version / "metadata.jsonl")
        assert {m["generated"]["judge_score"] for m in meta} == {4}
        assert VAGUE not in {line["messages"][1]["content"] for line in lines(version / "train.jsonl")}
        sent = len(fake.requests)
        assert main(["generate", "--config", config]) == 0
        assert len(fake.requests) == sent  # scores are cached too
        # another judge scores the cached pairs again, without generating them again
        assert main(["generate", "--config", write(fake, judge={"model": "gpt-4.1-mini", "min_score": 3})]) == 0
        assert len(fake.requests) == sent + len(judged) and all(r.judge for r in fake.requests[sent:])


def test_how_pairs_are_fetched_does_not_change_the_dataset_hash_but_what_is_asked_does(tmp_path):
    from configs import load_config
    from transforms.build import config_hash

    path = tmp_path / "c.yaml"
    hashes = []
    for extra in ({}, {"concurrency": 2, "timeout_s": 5, "max_cost_usd": 1.0}, {"paraphrases": 3}):
        path.write_text(config_text(tmp_path / "out", "http://127.0.0.1:9/v1", **extra), encoding="utf-8")
        hashes.append(config_hash(load_config(path)))
    assert hashes[0] == hashes[1] != hashes[2]


def tiny_chat_model(folder: Path) -> Path:
    """A random 2-layer Llama with a byte-level BPE tokenizer and a chat template: mechanics, not answers."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(["설정 채널 타임아웃 question answer {\"pairs\": []}"] * 5, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<pad>", "<|end|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}<|end|>{% endfor %}"
                "{% if add_generation_prompt %}<assistant>{% endif %}")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|end|>", pad_token="<pad>",
                                        chat_template=template)
    tokenizer.save_pretrained(folder)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=8192,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def test_the_local_provider_answers_in_batches_and_caches_like_a_server(crawled, tmp_path, monkeypatch):
    from configs import load_config
    from transforms.generate import generate, make_client

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(crawled, out / "state.sqlite")
    model = tiny_chat_model(tmp_path / "tiny")
    path = tmp_path / "config.yaml"
    path.write_text(config_text(out, "unused", provider="local", concurrency=2, max_tokens=64).replace(
        "model: gpt-4o-mini", f"model: {model}"), encoding="utf-8")
    config = load_config(path)
    client = make_client(config.dataset.generate)
    report = generate(config, client=client, limit=2)
    assert report.progress.done == 2 and report.progress.cost_usd == 0
    assert client.batches == [2, 2]  # both sections at once, then both again
    assert report.unparsable == 2 and report.progress.requests == 4  # random weights: no JSON, asked twice
    again = generate(config, client=client, limit=1)  # the next one: the first two are stored
    assert again.cached == 2 and again.progress.done == 1
    assert sqlite3.connect(out / "state.sqlite").execute("SELECT COUNT(*) FROM generated").fetchone()[0] == 3


def test_questions_per_section_auto_scales_with_length_between_floor_and_cap():
    from configs import GenerateConfig
    from transforms.generate import SectionText

    generator = Generator(GenerateConfig(provider="openai", tokens_per_question=50, min_questions=2, max_questions=6))
    short, mid, long = ("짧은 문장입니다.", "타임아웃 설정 " * 40, "타임아웃 설정 " * 2000)
    counts = [generator.questions(SectionText("http://x/", "t", None, text, "ko")) for text in (short, mid, long)]
    assert counts == [2, 4, 6]  # 201 tokens / 50 per question
    assert Generator(GenerateConfig(provider="openai", questions_per_section=4)).questions(
        SectionText("http://x/", "t", None, long, "ko")) == 4


def test_a_refused_request_stops_the_run_keeping_what_arrived_and_the_next_run_pays_the_rest(site, capsys):
    write, out = site
    with FakeChat(api_key=KEY, latency=0.02, faults={"TCP › 연결 방식": ["500"]}) as fake:
        config = write(fake, max_retries=0, concurrency=2)
        assert main(["generate", "--config", config]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "HTTP 500" in err[0] and "stored; run again to continue" in err[0]
        first = {r.section for r in fake.requests if "TCP › 연결 방식" not in r.heading}
        db = sqlite3.connect(out / "state.sqlite")
        assert db.execute("SELECT COUNT(*) FROM generated").fetchone()[0] == len(first) > 0
        sent = len(fake.requests)
        assert main(["generate", "--config", config]) == 0
        again = [r.section for r in fake.requests[sent:]]
        assert not set(again) & first and len(again) == len(set(again))


def test_a_wrong_key_is_one_line_that_names_the_variable_not_the_key(site, capsys, monkeypatch):
    write, out = site
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-secret-123")
    with FakeChat(api_key=KEY) as fake:
        assert main(["generate", "--config", write(fake)]) == 1
    err = capsys.readouterr().err
    assert "$OPENAI_API_KEY" in err and "sk-wrong-secret-123" not in err and len(err.strip().splitlines()) == 1
    assert b"sk-wrong-secret-123" not in (out / "state.sqlite").read_bytes()
