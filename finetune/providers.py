"""The backend of each fine-tuning provider: the one module that knows the implementations behind the interface."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from finetune.backend import Backend, FinetuneError


def create_backend(config: Any, provider: str | None = None, *, output_dir: Path | None = None) -> Backend:
    """The backend for a `FinetuneConfig`; `provider` (a job's stored one) overrides the configured one.

    The local backend keeps its jobs under `output_dir`, so it needs it."""
    name = provider or config.provider
    if name in ("openai", "azure"):
        from finetune.openai_backend import OpenAIBackend

        return OpenAIBackend.from_config(config, provider=name)
    if name == "local":
        if output_dir is None:
            raise FinetuneError("the local fine-tuning backend needs the output directory its jobs live in")
        from finetune.local.backend import LocalBackend

        return LocalBackend(config, Path(output_dir))
    raise FinetuneError(f"unknown fine-tuning provider {name!r}; set finetune.provider to openai, azure or local")
