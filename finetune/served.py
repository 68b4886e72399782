"""Any OpenAI-compatible chat endpoint as a model to evaluate: a deployed vLLM, Ollama, llama.cpp's server …

`served_model(base_url, api_key_env=…)` returns an object with the `Backend.chat` signature, so `evaluate`
asks it exactly as it asks a backend; a key is sent only when `api_key_env` names a variable (local servers
take none). `vllm_command` is the command that serves a local job's LoRA adapter on its base model with vLLM's
OpenAI-compatible server, under the name `local:<job>` evaluate already uses.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from finetune.backend import ChatReply
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


def vllm_command(base_model: str, adapter: Path, name: str, *, port: int = 8000, max_lora_rank: int = 16) -> list[str]:
    """`vllm serve` with the adapter as a LoRA module named `name` (ask for `model: name`)."""
    return ["vllm", "serve", base_model, "--enable-lora", "--lora-modules", f"{name}={adapter}",
            "--max-lora-rank", str(max_lora_rank), "--host", "127.0.0.1", "--port", str(port)]
