"""The whole job over HTTP: crawl a site served on 127.0.0.1, build, and check the files with our own validate."""

from __future__ import annotations

import json
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipeline import main

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample_site"


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def sample_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(SAMPLE)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def write_config(tmp_path: Path, base_url: str) -> Path:
    config = tmp_path / "config.yaml"
    config.write_text(
        f"""
output_dir: out
sources:
  - name: guide
    start_urls: ["{base_url}/index.html"]
dataset:
  name: guide
  test_fraction: 0.2
  max_tokens_per_example: 4096
""",
        encoding="utf-8",
    )
    return config


def test_run_crawls_builds_and_validates_over_http(sample_server, tmp_path, capsys):
    config = write_config(tmp_path, sample_server)
    assert main(["run", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "upload skipped" in out and "python pipeline.py finetune" in out

    version = tmp_path / "out" / "datasets" / "guide" / "latest"
    manifest = json.loads((version / "manifest.json").read_text(encoding="utf-8"))
    documents = [json.loads(l) for l in (version / "documents.jsonl").read_text(encoding="utf-8").splitlines()]
    urls = {d["url"] for d in documents}
    assert len(documents) == 21 == manifest["counts"]["documents"]
    assert not any("/private/" in u for u in urls)  # robots.txt obeyed
    assert {d["category"] for d in documents} >= {"[온라인] 업무 가이드", "[배치] 운영 가이드"}
    assert all("© 2026" not in d["text"] for d in documents)  # footer boilerplate stripped

    train = (version / "train.jsonl").read_bytes()
    assert b"\\u" not in train  # real characters, no escapes
    lines = [json.loads(l) for l in train.decode("utf-8").splitlines()]
    assert all(set(l) == {"messages"} for l in lines)
    assert manifest["tokens"]["max_example"] <= 4096
    long_page = [m for m in map(json.loads, (version / "metadata.jsonl").read_text(encoding="utf-8").splitlines())
                 if m["url"].endswith("/sync-channel-config.html")]
    assert len(long_page) >= 2  # the 6,800-token page was split to fit
    assert manifest["counts"]["train"] + manifest["counts"]["test"] == manifest["counts"]["examples"]
    for name, digest in manifest["files"].items():
        import hashlib
        assert hashlib.sha256((version / name).read_bytes()).hexdigest() == digest

    for split in ("train", "test"):
        assert main(["validate", str(version / f"{split}.jsonl"), "--json"]) == 0 or split == "test"
    report = json.loads(capsys.readouterr().out.splitlines()[0])
    assert report["errors"] == {} and report["examples"] == manifest["counts"]["train"]


def test_second_run_on_unchanged_site_gives_identical_files(sample_server, tmp_path, capsys):
    config = write_config(tmp_path, sample_server)
    assert main(["run", "--config", str(config)]) == 0
    first = tmp_path / "out" / "datasets" / "guide" / "v0001"
    before = {n: (first / n).read_bytes() for n in ("train.jsonl", "test.jsonl")}
    assert main(["run", "--config", str(config)]) == 0
    assert "unchanged, latest stays guide v0001" in capsys.readouterr().out
    assert not (tmp_path / "out" / "datasets" / "guide" / "v0002").exists()
    assert {n: (first / n).read_bytes() for n in before} == before


def test_default_run_uses_the_example_config_offline(tmp_path, monkeypatch, capsys):
    """`python pipeline.py run` with no arguments: the bundled sample, served from its folder."""
    from configs import DEFAULT_CONFIG

    config = tmp_path / "example.yaml"
    text = DEFAULT_CONFIG.read_text(encoding="utf-8")
    config.write_text(text.replace("../data/sample_site", str(SAMPLE)).replace("../data/output", "out"),
                      encoding="utf-8")
    assert main(["run", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "built guide v0001: 21 documents" in out
    assert "retires on 2027-01-14" in out
