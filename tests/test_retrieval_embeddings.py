"""Embeddings retrieval against the fake's strict POST /v1/embeddings: the route refuses what the API refuses,
`index` counts tokens exactly before it sends, caches every vector so a re-run sends nothing, recall@k is exact
on known sections, and `evaluate --rag` / `ask --rag` search by embeddings or by BM25 and embeddings fused."""

from __future__ import annotations

import json

import numpy as np
import openai
import pytest

from configs import EmbeddingsConfig
from fake_openai import FakeOpenAI, embedding_vector
from finetune import embeddings, retrieval
from test_finetune import fake, project, the_job  # noqa: F401  (shared fixtures)
from test_scorecard import change_first_answer, write_recall_set
from transforms.tokens import count_text, get_encoding

EMBEDDINGS = "    retrieval: {method: %s, embeddings: {model: text-embedding-3-small, dimensions: 256, batch_size: 8}}\n"


def embedding_requests(fake: FakeOpenAI) -> list:
    return fake.find_requests("POST", "/v1/embeddings")


@pytest.fixture
def client(fake):  # noqa: F811
    return openai.OpenAI(api_key=fake.api_key, base_url=fake.base_url, max_retries=0)


def test_the_fake_answers_floats_and_the_sdks_default_base64_alike(client, fake):  # noqa: F811
    default = client.embeddings.create(model="text-embedding-3-small", input=["배치 작업 등록", "retry policy"],
                                       dimensions=64)
    floats = client.embeddings.create(model="text-embedding-3-small", input="배치 작업 등록", encoding_format="float")
    assert embedding_requests(fake)[0].body["encoding_format"] == "base64"  # what the SDK sends unless told
    assert [len(d.embedding) for d in default.data] == [64, 64] and len(floats.data[0].embedding) == 1536
    assert np.allclose(default.data[0].embedding, embedding_vector("배치 작업 등록", 64), atol=1e-7)
    tokens = client.embeddings.create(model="text-embedding-3-large", input=[[12, 7], [3]], encoding_format="float")
    assert [len(d.embedding) for d in tokens.data] == [3072, 3072] and tokens.usage.prompt_tokens == 3
    assert fake.schema_violations == []


@pytest.mark.parametrize("kwargs, message", [
    ({"input": ""}, "'$.input' is invalid."),
    ({"input": ["ok", ""]}, "'$.input' is invalid."),
    ({"input": []}, "'$.input' is invalid."),
    ({"input": ["a"] * 2049}, "Invalid 'input': array too long. Expected an array with maximum length 2048"),
    ({"input": [[]]}, "Invalid 'input[0]': array too short."),
    ({"input": "x", "encoding_format": "hex"}, "Invalid value: 'hex'. Supported values are: 'float', 'base64'."),
    ({"input": "x", "dimensions": 0}, "Invalid 'dimensions': integer below minimum value."),
    ({"input": "x", "dimensions": 4000}, "Must be less than or equal to 1536."),
    ({"input": "x", "model": "text-embedding-ada-002", "dimensions": 8}, "does not support specifying dimensions"),
    ({"input": "x", "extra_body": {"truncate": True}}, "Unknown parameter: 'truncate'."),
    ({"input": "단어 " * 8193}, "maximum context length is 8192 tokens"),
    ({"input": ["단어 " * 8000] * 38}, "max 300000 tokens per request"),
])
def test_the_fake_refuses_what_the_api_refuses(client, fake, kwargs, message):  # noqa: F811
    with pytest.raises(openai.BadRequestError) as refused:
        client.embeddings.create(**{"model": "text-embedding-3-small", **kwargs})
    assert message in refused.value.message
    with pytest.raises(openai.NotFoundError, match="The model `gpt-4o-mini` does not exist"):
        client.embeddings.create(model="gpt-4o-mini", input="x")


def test_recall_at_k_of_embeddings_is_exact_on_known_source_sections(tmp_path, fake):  # noqa: F811
    sections = [retrieval.Section(f"u{i}#", f"u{i}", f"t{i}", None, text) for i, text in enumerate([
        "배치 작업 등록 방법", "모니터링 경보 확인", "배치 작업 재시도 정책", "사용자 권한 요청"])]
    embedder = embeddings.Embedder(EmbeddingsConfig(dimensions=256), tmp_path, base_url=fake.base_url,
                                   client=openai.OpenAI(api_key=fake.api_key, base_url=fake.base_url))
    index = embeddings.EmbeddingIndex(embedder.embed([s.text for s in sections]), sections, embedder)
    found = [[s.id for s in hits] for hits in index.search_many(["배치 작업 등록", "경보 확인", "재시도 정책",
                                                                  "권한 요청", " "], 2)]
    assert found == [["u0#", "u2#"], ["u1#"], ["u2#"], ["u3#"], []]  # at cosine 0 a section is not retrieved
    sources = ["u2#", "u1#", "u0#", "u3#"]  # and a blank question is not sent (the API refuses an empty input)
    assert retrieval.recall_at_k(found[:4], sources, 1) == 0.5  # u2 is second for the first question
    assert retrieval.recall_at_k(found[:4], sources, 2) == 0.75  # u0 shares no bigram with "재시도 정책"
    assert embedder.requests == 2  # the sections in one request, the four questions in another

    fused = retrieval.HybridIndex(retrieval.build_in_memory(sections, "bigram"), index)
    assert [s.id for s in fused.search("배치 작업 등록", 2)] == ["u0#", "u2#"]  # first in both rankings
    assert embedder.requests == 2  # the question's vector came from the cache


def test_index_counts_tokens_before_sending_and_a_rerun_sends_nothing(project, capsys):  # noqa: F811
    project.write_config(finetune="  evaluation:\n" + EMBEDDINGS % "embeddings")
    ds = retrieval.DatasetVersion(dir=project.version)
    texts = [s.text for s in retrieval.version_sections(ds)]
    tokens = sum(count_text(get_encoding("cl100k_base"), t) for t in texts)
    batches = -(-len(texts) // 8)

    assert project.run("index", "--estimate") == 0
    assert f"embedding {len(texts)} sections of guide v0001 with text-embedding-3-small: {len(texts)} texts not " \
           f"embedded yet, {tokens:,} tokens (cl100k_base, exact), {batches} requests, about " \
           f"${tokens * 0.02 / 1e6:.4f}" in capsys.readouterr().out
    assert embedding_requests(project.fake) == []

    assert project.run("index") == 0
    out = capsys.readouterr().out
    assert f"vectors, 256 dimensions; {len(texts)} embedded in {batches} requests, 0 unchanged)" in out
    sent = embedding_requests(project.fake)
    assert [len(r.body["input"]) for r in sent] == [min(8, len(texts) - i) for i in range(0, len(texts), 8)]
    assert all(r.body["dimensions"] == 256 and r.body["model"] == "text-embedding-3-small" for r in sent)
    folder = project.version / "index" / "embeddings-text-embedding-3-small-d256"
    matrix = np.load(folder / "vectors.npy")
    assert matrix.dtype == np.float32 and matrix.shape == (len(texts), 256)
    assert np.allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-6)
    assert not (project.version / "index" / "bigram").exists()  # method embeddings builds no BM25 index

    assert project.run("index") == 0
    assert f"; 0 embedded in 0 requests, {len(texts)} unchanged)" in capsys.readouterr().out
    assert len(embedding_requests(project.fake)) == batches  # the second run sent no embedding request

    changed = change_first_answer(project.version)
    assert project.run("index") == 0
    assert f"; 1 embedded in 1 request, {len(texts) - 1} unchanged)" in capsys.readouterr().out
    assert embedding_requests(project.fake)[-1].body["input"] == [changed]

    stored = b"".join(p.read_bytes() for p in (project.root / "out").rglob("*") if p.is_file())
    assert project.fake.api_key.encode() not in stored  # neither the state nor the index holds the key


def test_evaluate_and_ask_search_the_fused_index(project, capsys):  # noqa: F811
    project.write_config(finetune="  evaluation:\n" + EMBEDDINGS % "hybrid")
    assert project.run("finetune", "--wait") == 0
    model = the_job(project.fake).fine_tuned_model
    records = write_recall_set(project.version)
    assert project.run("index") == 0
    out = capsys.readouterr().out
    assert "bigram tokens;" in out and "text-embedding-3-small vectors" in out  # hybrid builds both

    assert project.run("evaluate", "--model", model, "--set", "recall", "--rag", "--k", "3") == 0
    folder = next((project.version / "evaluations").glob("*sets-recall--rag-k3"))
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    recall = summary["sets"]["recall"]
    assert recall["recall_at_k"] == {"k": 3, "value": 1.0, "questions": len(records)}
    means = {c: v["headline"]["mean"] for c, v in recall["columns"].items()}
    assert means["base"] < means["base+RAG"]  # the fused sections help the base model
    asked = len(embedding_requests(project.fake))

    assert project.run("evaluate", "--model", model, "--set", "recall", "--rag", "--k", "3") == 0
    assert len(embedding_requests(project.fake)) == asked  # the questions' vectors came from the state
    capsys.readouterr()
    question = records[0]["messages"][1]["content"]
    assert project.run("ask", question, "--model", model, "--rag", "--k", "2") == 0
    out = capsys.readouterr().out
    assert records[0]["metadata"]["url"] in out.split("\n  [1] ")[1].split("\n")[0]  # its source is first


def test_a_missing_embeddings_index_or_key_is_one_line(project, capsys, monkeypatch):  # noqa: F811
    project.write_config(finetune="  evaluation:\n" + EMBEDDINGS % "embeddings")
    assert project.run("ask", "질문", "--rag") == 1
    assert capsys.readouterr().err == ("error: guide v0001 has no text-embedding-3-small embeddings index: run "
                                       "python pipeline.py index --dataset v0001\n")
    project.write_config(finetune="  evaluation:\n    retrieval: {method: embeddings, embeddings: "
                         "{api_key_env: EMBED_KEY}}\n  api_key_env: NEBIUS_KEY\n")  # finetune.base_url: not shared
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert project.run("index") == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no API key for the embeddings endpoint: set EMBED_KEY") and err.count("\n") == 1
    assert embedding_requests(project.fake) == []


def test_an_interrupted_index_keeps_the_batches_that_arrived(project, capsys):  # noqa: F811
    project.write_config(finetune="  evaluation:\n" + EMBEDDINGS % "embeddings")
    texts = [s.text for s in retrieval.version_sections(retrieval.DatasetVersion(dir=project.version))]
    sent = openai.OpenAI.post

    def refuse_the_second(self, path, **kwargs):
        if path == "/embeddings" and len(embedding_requests(project.fake)) == 1:
            project.fake.fail_next(400, path="/v1/embeddings")
        return sent(self, path, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(openai.OpenAI, "post", refuse_the_second)
        assert project.run("index") == 1
    assert "error: embedding 8 texts with text-embedding-3-small at http://127.0.0.1:" in capsys.readouterr().err
    assert project.run("index") == 0
    assert f"; {len(texts) - 8} embedded in {len(embedding_requests(project.fake)) - 2} requests, 8 unchanged)" \
        in capsys.readouterr().out  # the first batch was kept: not paid for twice
