"""`evaluate --model local:<job>` through vLLM when it and a CUDA GPU are here: the server is started with the
job's adapter as a LoRA module on its base model, asked for both, and stopped. The `vllm` on PATH is a stand-in
written here (an OpenAI-compatible server on the port it is given), so the command line, the wait until it
serves, the answers and the shutdown are all real; only the GPU check is patched."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import pytest

from configs import load_config
from dataset_state import page, write_pages
from finetune import served
from pipeline import main
from transforms.build import build

BASE = "Qwen/Qwen2.5-0.5B-Instruct"
JOB = "local-20261203-000000-abcdef"

FAKE_VLLM = textwrap.dedent('''\
    #!{python}
    """A stand-in for `vllm serve`: records its argv and pid, then serves /v1/models and chat completions."""
    import json, os, sys, time
    from http.server import BaseHTTPRequestHandler, HTTPServer

    args = sys.argv[1:]
    with open(os.environ["FAKE_VLLM_RECORD"], "w") as f:
        json.dump({{"argv": args, "pid": os.getpid()}}, f)
    if os.environ.get("FAKE_VLLM_FAIL"):
        print("torch.OutOfMemoryError: CUDA out of memory", flush=True)
        sys.exit(3)
    value = lambda flag: args[args.index(flag) + 1]
    names, i = [value("--served-model-name")], args.index("--lora-modules") + 1
    while i < len(args) and not args[i].startswith("--"):  # name=path, one per module
        names.append(args[i].split("=", 1)[0])
        i += 1
    time.sleep(0.5)  # loading the model

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def send(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self.send(200, {{"object": "list", "data": [{{"id": n, "object": "model"}} for n in names]}})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            if body["model"] not in names:
                return self.send(404, {{"error": {{"message": "no model " + body["model"]}}}})
            self.send(200, {{"choices": [{{"index": 0, "finish_reason": "stop", "message": {{
                "role": "assistant", "content": "vllm: " + body["model"]}}}}],
                "usage": {{"prompt_tokens": 3, "completion_tokens": 2}}}})

    HTTPServer((value("--host"), int(value("--port"))), Handler).serve_forever()
''')


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A built version, provider local, a succeeded job's LoRA adapter (rank 12), a `vllm` on PATH, a GPU."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "vllm").write_text(FAKE_VLLM.format(python=sys.executable), encoding="utf-8")
    (bin_dir / "vllm").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_VLLM_RECORD", str(tmp_path / "vllm.json"))
    monkeypatch.setattr(served, "cuda_available", lambda: True)
    config = tmp_path / "config.yaml"
    config.write_text(f"""
output_dir: out
sources: [{{name: guide, start_urls: ["http://guide.example.internal/index.html"]}}]
dataset: {{name: guide, test_fraction: 0.2}}
finetune:
  provider: local
  base_model: {BASE}
  evaluation: {{max_tokens: 6, concurrency: 2}}
""", encoding="utf-8")
    write_pages(tmp_path / "out", [page(f"t-{i:02d}", f"주제 {i}의 배치 작업은 매일 밤 {i}시에 실행됩니다. " * 3,
                                        title=f"주제 {i} 안내") for i in range(15)])
    build(load_config(config))
    job = tmp_path / "out" / "local_jobs" / JOB
    (job / "adapter").mkdir(parents=True)
    (job / "job.json").write_text(json.dumps({"id": JOB, "model": BASE, "hyperparameters": {"method": "lora"}}))
    (job / "adapter" / "adapter_config.json").write_text(json.dumps({"r": 12, "base_model_name_or_path": BASE}))
    (job / "adapter" / "tokenizer_config.json").write_text("{}")
    return config, job


def test_a_local_adapter_is_evaluated_through_vllm_which_is_stopped_afterwards(project, capsys):
    config, job = project
    assert main(["evaluate", "--model", f"local:{JOB}", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "starting vLLM to serve the local adapters" in out
    record = json.loads((config.parent / "vllm.json").read_text())
    argv = record["argv"]
    assert argv[:2] == ["serve", BASE]
    assert argv[argv.index("--lora-modules") + 1] == f"local:{JOB}={job / 'adapter'}"
    assert argv[argv.index("--served-model-name") + 1] == BASE
    assert argv[argv.index("--max-lora-rank") + 1] == "16"  # rank 12, rounded up to a value vLLM takes
    assert argv[argv.index("--tokenizer") + 1] == str(job / "adapter")  # the chat template it trained with
    results = next((config.parent / "out" / "datasets" / "guide" / "latest" / "evaluations").glob("*/results.jsonl"))
    rows = [json.loads(line) for line in results.read_text(encoding="utf-8").splitlines()]
    assert rows and all(r["answers"]["tuned"]["text"] == f"vllm: local:{JOB}" for r in rows)
    assert all(r["answers"]["base"]["text"] == f"vllm: {BASE}" for r in rows)
    with pytest.raises(ProcessLookupError):
        os.kill(record["pid"], 0)  # stopped (and reaped) when the evaluation ended


def test_a_vllm_that_dies_while_starting_is_one_line_naming_its_log(project, capsys, monkeypatch):
    config, _ = project
    monkeypatch.setenv("FAKE_VLLM_FAIL", "1")
    assert main(["evaluate", "--model", f"local:{JOB}", "--config", str(config)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "vLLM exited with code 3 before it served the models" in err
    log = Path(err.split("its output is in ")[1])
    assert "CUDA out of memory" in log.read_text()


def test_without_vllm_or_a_gpu_transformers_answers(project, monkeypatch):
    config, _ = project
    named = {"base": BASE, "tuned": f"local:{JOB}"}
    from finetune.providers import create_backend

    backend = create_backend(load_config(config).finetune, output_dir=config.parent / "out")
    assert served.vllm_for(backend, named, config.parent / "out") is not None
    monkeypatch.setattr(served, "cuda_available", lambda: False)
    assert served.vllm_for(backend, named, config.parent / "out") is None
    monkeypatch.setattr(served, "cuda_available", lambda: True)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert served.vllm_for(backend, named, config.parent / "out") is None
