"""The backend of each fine-tuning provider: the one module that knows the implementations behind the interface.

Besides building a backend, it answers what must be known before anything is uploaded: the settings a
provider has no equivalent for (`refusals`), and the hyperparameters a hosted open-weights service's job is
created from (`hyperparameters`), both without a key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from finetune.backend import Backend, FinetuneError, Refused

OPEN_WEIGHTS_SERVICES = ("together", "fireworks")


def create_backend(config: Any, provider: str | None = None, *, output_dir: Path | None = None) -> Backend:
    """The backend for a `FinetuneConfig`; `provider` (a job's stored one) overrides the configured one.

    The local backend keeps its jobs under `output_dir`, so it needs it."""
    name = provider or config.provider
    if name in ("openai", "azure"):
        from finetune.openai_backend import OpenAIBackend

        return OpenAIBackend.from_config(config, provider=name)
    if name == "together":
        from finetune.together_backend import TogetherBackend

        return TogetherBackend.from_config(config)
    if name == "fireworks":
        from finetune.fireworks_backend import FireworksBackend

        return FireworksBackend.from_config(config)
    if name == "local":
        if output_dir is None:
            raise FinetuneError("the local fine-tuning backend needs the output directory its jobs live in")
        from finetune.local.backend import LocalBackend

        return LocalBackend(config, Path(output_dir))
    raise FinetuneError(f"unknown fine-tuning provider {name!r}; set finetune.provider to openai, azure, together, "
                        "fireworks or local")


def _module(provider: str) -> Any:
    if provider == "together":
        from finetune import together_backend

        return together_backend
    from finetune import fireworks_backend

    return fireworks_backend


def check_settings(config: Any) -> None:
    """Refuse, in one line and before any upload, what the configured service cannot take."""
    ft = config.finetune
    if ft.provider in OPEN_WEIGHTS_SERVICES and config.model not in {m.name for m in ft.base_models}:
        raise Refused(f"provider {ft.provider} trains open-weights models: name {config.model!r} with its context "
                      "limit in finetune.base_models (e.g. {name: meta-llama/Meta-Llama-3.1-8B-Instruct-Reference, "
                      "context_tokens: 8192}) and set `model` to it")
    problems = _module(ft.provider).refusals(ft) if ft.provider in OPEN_WEIGHTS_SERVICES else []
    if ft.provider != "together":
        problems += [f"finetune.{name}: only provider together takes it" for name, default in
                     (("training_method", "sft"), ("train_on_inputs", "auto"), ("from_checkpoint", None))
                     if getattr(ft, name) != default]
    if problems:
        raise Refused(f"{ft.provider} cannot take these settings, nothing was uploaded: " + "; ".join(problems))


def hyperparameters(config: Any) -> dict[str, Any]:
    return _module(config.finetune.provider).hyperparameters(config.finetune)
