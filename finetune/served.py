"""Any OpenAI-compatible chat endpoint as a model to evaluate: a deployed vLLM, Ollama, llama.cpp's server …

`served_model(base_url, api_key_env=…)` returns an object with the `Backend.chat` signature, so `evaluate`
asks it exactly as it asks a backend; a key is sent only when `api_key_env` names a variable (local servers
take none). `vllm_for` starts vLLM's OpenAI-compatible server with local jobs' LoRA adapters on their base model
(`vllm_command`), under the names `local:<job>` evaluate already uses, when vLLM and a CUDA GPU are here; the
server runs in its own session (Ctrl-C reaches only us) and is stopped when the evaluation ends.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ContextManager, Iterator, Mapping

from finetune.backend import ChatReply, FinetuneError
from finetune.rest import Rest, api_key, chat_completions

if TYPE_CHECKING:
    from configs import SamplingConfig


@dataclass(frozen=True)
class ServedModel:
    rest: Rest

    def chat(self, model: str, messages: list[dict[str, Any]], *, sampling: SamplingConfig) -> list[ChatReply]:
        return chat_completions(self.rest, "/chat/completions", model, messages, sampling)


def served_model(base_url: str, *, api_key_env: str | None = None, timeout: float = 60.0, max_retries: int = 2,
                 env: Mapping[str, str] | None = None) -> ServedModel:
    env = os.environ if env is None else env
    key = api_key(env, api_key_env, base_url) if api_key_env else ""
    return ServedModel(Rest(base_url.rstrip("/"), timeout, max_retries, base_url, key))


LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the --max-lora-rank values vLLM accepts
READY_TIMEOUT = 900.0  # loading a 7B model from disk and compiling its graphs takes minutes


def vllm_command(base_model: str, adapters: Mapping[str, Path], *, served_as: str, port: int = 8000,
                 max_lora_rank: int = 16, tokenizer: Path | None = None) -> list[str]:
    """`vllm serve` with the base model named `served_as` and each adapter as a LoRA module under its name (ask
    for `model: name`); `tokenizer`: the folder whose chat template the adapters were trained with."""
    command = ["vllm", "serve", base_model, "--served-model-name", served_as, "--enable-lora", "--lora-modules",
               *(f"{name}={path}" for name, path in adapters.items()), "--max-lora-rank", str(max_lora_rank),
               "--host", "127.0.0.1", "--port", str(port)]
    return command + (["--tokenizer", str(tokenizer)] if tokenizer else [])


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def vllm_for(backend: Any, named: Mapping[str, str], output_dir: Path) -> ContextManager[ServedModel] | None:
    """vLLM serving the local jobs' adapters among `named` (and their base model, the other names) when the
    `vllm` command and a CUDA GPU are here and every job is a LoRA adapter on that one base; None otherwise,
    and transformers answers in this process."""
    local = [m for m in named.values() if m.startswith("local:")]
    if not local or shutil.which("vllm") is None or not cuda_available():
        return None
    refs = {m: backend.resolve_model(m) for m in local}
    bases = {ref.base for ref in refs.values()}
    if any(ref.adapter is None for ref in refs.values()) or len(bases) != 1 or not set(named.values()) - set(local) <= bases:
        return None
    (base,) = bases
    ranks = [json.loads((ref.adapter / "adapter_config.json").read_text(encoding="utf-8")).get("r", 8)
             for ref in refs.values()]
    rank = next((r for r in LORA_RANKS if r >= max(ranks)), max(ranks))
    tokenizer = next((ref.adapter for ref in refs.values() if (ref.adapter / "tokenizer_config.json").is_file()), None)
    adapters = {m: ref.adapter for m, ref in refs.items()}
    log = output_dir / "logs" / f"vllm-{datetime.now():%Y%m%d-%H%M%S}.log"
    return _serve(lambda port: vllm_command(base, adapters, served_as=base, port=port, max_lora_rank=rank,
                                            tokenizer=tokenizer), [base, *adapters], log)


@contextmanager
def _serve(command: Any, names: list[str], log: Path, *, timeout: float = READY_TIMEOUT) -> Iterator[ServedModel]:
    """Run `command(port)` until it serves every one of `names` at /v1/models, yield it as a model, stop it."""
    with socket.socket() as probe:  # a free port; vLLM binds it a moment later
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        process = subprocess.Popen(command(port), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        _wait_until_serving(process, url, set(names), log, timeout)
        yield served_model(url, timeout=600.0)
    finally:
        _stop(process)


def _wait_until_serving(process: subprocess.Popen, url: str, names: set[str], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise FinetuneError(f"vLLM exited with code {process.returncode} before it served the models; its output "
                                f"is in {log}")
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=5) as answer:
                if names <= {m.get("id") for m in json.loads(answer.read()).get("data", [])}:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
            pass
        time.sleep(0.5)
    raise FinetuneError(f"vLLM did not serve the models within {timeout:.0f} s; its output is in {log}")


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (vLLM's workers too), SIGKILL if it has not exited after 30 s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
