"""A local fake of the OpenAI files, uploads, fine-tuning, models, chat-completions and embeddings API.

Tests point the real ``openai`` SDK at it (``base_url=fake.base_url``); request bodies are validated
with jsonschema against ``tests/openai_schemas.json`` (the request, response and training-line schemas of the public
OpenAI spec that the fake routes use, descriptions dropped) plus the platform rules of the fine-tuning guide;
embeddings requests against ``tests/embeddings_schema.json``.
"""

from __future__ import annotations

import base64
import copy
import csv
import functools
import hashlib
import io
import json
import math
import random
import re
import socket
import string
import struct
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from datetime import date
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import jsonschema
from jsonschema.exceptions import ValidationError, best_match

SPEC_PATH = Path(__file__).with_name("openai_schemas.json")
EMBEDDINGS_SPEC = json.loads(Path(__file__).with_name("embeddings_schema.json").read_text(encoding="utf-8"))

MB = 1024 * 1024
GB = 1024 * MB

# Base models: alias -> snapshot the job reports in `model` (the platform resolves aliases the same way).
BASE_MODELS: dict[str, str] = {
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4o-mini-2024-07-18": "gpt-4o-mini-2024-07-18",
    "gpt-4o": "gpt-4o-2024-08-06",
    "gpt-4o-2024-08-06": "gpt-4o-2024-08-06",
    "gpt-4.1": "gpt-4.1-2025-04-14",
    "gpt-4.1-2025-04-14": "gpt-4.1-2025-04-14",
    "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
    "gpt-4.1-mini-2025-04-14": "gpt-4.1-mini-2025-04-14",
    "gpt-4.1-nano": "gpt-4.1-nano-2025-04-14",
    "gpt-4.1-nano-2025-04-14": "gpt-4.1-nano-2025-04-14",
    "o4-mini": "o4-mini-2025-04-16",
    "o4-mini-2025-04-16": "o4-mini-2025-04-16",
    "gpt-3.5-turbo": "gpt-3.5-turbo-0125",
    "gpt-3.5-turbo-0125": "gpt-3.5-turbo-0125",
    "gpt-3.5-turbo-1106": "gpt-3.5-turbo-1106",
    "gpt-3.5-turbo-0613": "gpt-3.5-turbo-0613",
    "gpt-4-0613": "gpt-4-0613",
    "babbage-002": "babbage-002",
    "davinci-002": "davinci-002",
}
COMPLETION_FORMAT_MODELS = {"babbage-002", "davinci-002"}
REINFORCEMENT_MODELS = {"o4-mini-2025-04-16"}
DPO_MODELS = {
    "gpt-4o-2024-08-06", "gpt-4o-mini-2024-07-18", "gpt-4.1-2025-04-14",
    "gpt-4.1-mini-2025-04-14", "gpt-4.1-nano-2025-04-14",
}
NANO_RETIRED_ON = date(2026, 10, 23)
NO_NEW_JOBS_FROM = date(2027, 1, 6)

MIN_TRAINING_EXAMPLES = 10
FINE_TUNE_MIME_TYPES = {"text/jsonl", "application/jsonl", "application/x-ndjson", "application/jsonlines"}
UPLOAD_TTL_SECONDS = 3600
TERMINAL = {"succeeded", "failed", "cancelled"}
BASE_MODEL_REPLY = "I'm not sure about that. Could you share more details about what you need?"
EMBEDDING_MODELS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}
EMBEDDING_INPUT_TOKENS, EMBEDDING_REQUEST_TOKENS = 8192, 300_000
JUDGE_MODEL = "judge-fake-1"  # grades the answer in a judge prompt against its reference (see `judged`)

# Stand-ins for schemas the extract references but does not include ("dangling_refs_not_included").
# CreateModelResponseProperties carries temperature/top_p etc.; it is reconstructed from the public spec's
# ModelResponseProperties. The others accept anything: they are chat options the fake does not interpret.
_STANDIN_SCHEMAS: dict[str, Any] = {
    "CreateModelResponseProperties": {
        "type": "object",
        "properties": {
            "metadata": {"$ref": "#/components/schemas/Metadata"},
            "top_logprobs": {"type": "integer", "minimum": 0, "maximum": 20, "nullable": True},
            "temperature": {"type": "number", "minimum": 0, "maximum": 2, "nullable": True},
            "top_p": {"type": "number", "minimum": 0, "maximum": 1, "nullable": True},
            "user": {"type": "string"},
            "safety_identifier": {"type": "string"},
            "prompt_cache_key": {"type": "string"},
            "prompt_cache_retention": {"type": "string", "enum": ["in-memory", "24h"], "nullable": True},
            "service_tier": {"type": "string", "enum": ["auto", "default", "flex", "scale", "priority"],
                             "nullable": True},
        },
    },
    "ModelIdsShared": {"type": "string"},
    "ChatCompletionStreamOptions": {
        "type": "object",
        "nullable": True,
        "properties": {"include_usage": {"type": "boolean"}, "include_obfuscation": {"type": "boolean"}},
    },
    "StopConfiguration": {
        "anyOf": [{"type": "null"}, {"type": "string"},
                  {"type": "array", "minItems": 1, "maxItems": 4, "items": {"type": "string"}}]
    },
}
_PERMISSIVE_REFS = {
    "ChatCompletionFunctionCallOption", "ChatCompletionToolChoiceOption", "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse", "CustomToolChatCompletions", "ModerationParam", "PredictionContent",
    "ResponseFormatJsonObject", "ResponseFormatJsonSchema", "ResponseFormatText", "ResponseModalities",
    "ServiceTier", "Verbosity", "VoiceIdsOrCustomVoice", "WebSearchContextSize", "WebSearchLocation",
}

_NOT_SCHEMA_KEYS = {"example", "examples", "default", "enum", "const", "description", "title", "required"}
_TYPE_WORDS = {
    "string": "a string", "integer": "an integer", "number": "a decimal", "object": "an object",
    "array": "an array", "boolean": "a boolean", "null": "null",
}


# --------------------------------------------------------------------------------------------------
# Errors


class ApiError(Exception):
    """An error the fake answers with, in the API's `{"error": {...}}` shape."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def _bad(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def _not_found(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(404, message, param=param, code=code)


def mask_key(key: str) -> str:
    """Mask an API key the way the platform does in 401 messages: prefix and last four characters."""
    if len(key) <= 8:
        return "*" * len(key)
    head = key[:8] if key.startswith("sk-proj-") else key[:3]
    return head + "*" * (len(key) - len(head) - 4) + key[-4:]


# --------------------------------------------------------------------------------------------------
# Schemas: inline $refs and translate the spec's OpenAPI 3.0 idioms into JSON Schema 2020-12


@functools.lru_cache(maxsize=None)
def _spec() -> dict[str, Any]:
    with SPEC_PATH.open(encoding="utf-8") as fh:
        return json.load(fh)


def _components() -> dict[str, Any]:
    return _spec()["components"]["schemas"]


def _branch_tag_values(branch: dict[str, Any], prop: str) -> list[Any] | None:
    """Values a oneOf branch allows for its discriminating property (looking through allOf), or None."""
    candidates = [branch] + [b for b in branch.get("allOf", []) if isinstance(b, dict)]
    for cand in candidates:
        spec = cand.get("properties", {}).get(prop)
        if isinstance(spec, dict):
            if "const" in spec:
                return [spec["const"]]
            if "enum" in spec:
                return [v for v in spec["enum"] if v is not None]
    return None


def _discriminate(node: dict[str, Any]) -> dict[str, Any]:
    """Rewrite a tagged oneOf (by `role` or `type`) as if/then branches, so errors name the real problem."""
    branches = node["oneOf"]
    declared = node.get("discriminator", {}).get("propertyName")
    for prop in ([declared] if declared else ["role", "type"]):
        tags = [_branch_tag_values(b, prop) for b in branches]
        if all(tags) and len(branches) > 1:
            allowed = [v for t in tags for v in t]
            rest = {k: v for k, v in node.items() if k not in ("oneOf", "discriminator")}
            return {
                **rest,
                "type": "object",
                "x-fake-tagged": prop,
                "required": [prop],
                "properties": {prop: {"enum": allowed}},
                "allOf": [
                    {"if": {"properties": {prop: {"enum": t}}, "required": [prop]}, "then": b}
                    for t, b in zip(tags, branches)
                ],
            }
    return node


def _normalize(node: Any, stack: tuple[str, ...] = ()) -> Any:
    """Resolve $refs (inlining copies) and convert nullable / boolean exclusiveMinimum / discriminators."""
    if isinstance(node, list):
        return [_normalize(item, stack) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        if name in stack:
            raise RuntimeError(f"recursive schema {name} is not supported by the fake")
        if name in _components():
            target = _components()[name]
        elif name in _STANDIN_SCHEMAS:
            target = _STANDIN_SCHEMAS[name]
        else:
            target = {}
        resolved = _normalize(copy.deepcopy(target), stack + (name,))
        siblings = {k: v for k, v in node.items() if k != "$ref" and k not in ("description", "title")}
        if not siblings:
            return resolved
        extra = _normalize(siblings, stack)
        return {"allOf": [resolved, extra]} if extra else resolved

    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _NOT_SCHEMA_KEYS or key.startswith("x-"):
            out[key] = value
        elif key == "properties":
            out[key] = {name: _normalize(sub, stack) for name, sub in value.items()}
        else:
            out[key] = _normalize(value, stack)

    for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if out.get(exclusive) is True:
            out[exclusive] = out.pop(bound)
        elif out.get(exclusive) is False:
            out.pop(exclusive)

    if "oneOf" in out and all(isinstance(b, dict) for b in out["oneOf"]):
        out = _discriminate(out)

    if out.pop("nullable", False):
        typ = out.get("type")
        if isinstance(typ, str):
            out["type"] = [typ, "null"]
            if "enum" in out and None not in out["enum"]:
                out["enum"] = list(out["enum"]) + [None]
        elif isinstance(typ, list):
            out["type"] = typ + ["null"] if "null" not in typ else typ
        else:
            out = {"anyOf": [{"type": "null"}, out]}
    return out


def _close_objects(node: Any, *, open_here: bool = False) -> Any:
    """Forbid unknown keys in request objects, as the API does ("Unknown parameter").

    allOf branches stay open (their keys are spread over siblings) and `if` clauses are left alone.
    """
    if isinstance(node, list):
        return [_close_objects(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in _NOT_SCHEMA_KEYS or key.startswith("x-") or key == "if":
            out[key] = value
        elif key == "allOf":
            out[key] = [_close_objects(b, open_here=True) for b in value]
        elif key == "properties":
            out[key] = {name: _close_objects(sub) for name, sub in value.items()}
        else:
            out[key] = _close_objects(value)
    if "properties" in out and "additionalProperties" not in out and not open_here and "x-fake-tagged" not in out:
        out["additionalProperties"] = False
    return out


def _top_level_keys(schema: dict[str, Any]) -> set[str]:
    keys = set(schema.get("properties", {}))
    for branch in schema.get("allOf", []) + schema.get("anyOf", []):
        if isinstance(branch, dict):
            keys |= _top_level_keys(branch)
    return keys


@functools.lru_cache(maxsize=None)
def request_schema(component: str) -> dict[str, Any]:
    """The request-body schema for a component, refs inlined, nested objects closed."""
    return _close_objects(_normalize(copy.deepcopy(_components()[component])), open_here=True)


@functools.lru_cache(maxsize=None)
def response_schema(component: str) -> dict[str, Any]:
    schema = _normalize(copy.deepcopy(_components()[component]))
    # Deliberate deviations, all observed platform behaviour: a paused job reports status "paused";
    # an empty file list has no first/last id.
    if component == "FineTuningJob":
        schema["properties"]["status"]["enum"].append("paused")
    if component == "ListFilesResponse":
        for key in ("first_id", "last_id"):
            schema["properties"][key] = {"type": ["string", "null"]}
    if component in ("ListPaginatedFineTuningJobsResponse",):
        schema["properties"]["data"]["items"]["properties"]["status"]["enum"].append("paused")
    return schema


@functools.lru_cache(maxsize=None)
def training_line_schema(name: str) -> dict[str, Any]:
    return _normalize(copy.deepcopy(_spec()["x-training-input-schemas"][name]["schema"]))


@functools.lru_cache(maxsize=None)
def _validator(kind: str, name: str) -> jsonschema.protocols.Validator:
    schema = {"request": request_schema, "response": response_schema, "line": training_line_schema}[kind](name)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls(schema)


def _param_path(path: Any) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _join(param: str, key: str) -> str:
    return f"{param}.{key}" if param else key


def _type_word(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _expected_words(schema: Any) -> list[str]:
    """Human words for what a (sub)schema accepts: types, or 'auto'-style enum literals."""
    if not isinstance(schema, dict):
        return []
    words: list[str] = []
    for branch in schema.get("oneOf", []) + schema.get("anyOf", []):
        words += _expected_words(branch)
    if "enum" in schema:
        words += [repr(v) if isinstance(v, str) else json.dumps(v) for v in schema["enum"]]
    elif "const" in schema:
        words.append(repr(schema["const"]))
    elif "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        words += [_TYPE_WORDS.get(t, t) for t in types]
    return list(dict.fromkeys(words))


def describe_validation_error(error: ValidationError) -> tuple[str, str | None, str]:
    """Turn a jsonschema error into the API's (message, param, code) wording."""
    param = _param_path(error.absolute_path)
    where = param or "body"
    v, inst, val = error.validator, error.instance, error.validator_value
    if v == "required":
        missing = next((k for k in val if isinstance(inst, dict) and k not in inst), val[0])
        full = _join(param, missing)
        return f"Missing required parameter: '{full}'.", full, "missing_required_parameter"
    if v in ("additionalProperties", "unevaluatedProperties"):
        allowed = set(error.schema.get("properties", {}))
        extra = next((k for k in inst if k not in allowed), "?") if isinstance(inst, dict) else "?"
        full = _join(param, extra)
        return f"Unknown parameter: '{full}'.", full, "unknown_parameter"
    if v == "type":
        types = val if isinstance(val, list) else [val]
        expected = " or ".join(_TYPE_WORDS.get(t, t) for t in types)
        return (f"Invalid type for '{where}': expected {expected}, but got {_type_word(inst)} instead.",
                param or None, "invalid_type")
    if v in ("enum", "const"):
        allowed = val if v == "enum" else [val]
        shown = ", ".join(repr(a) for a in allowed if a is not None)
        return f"Invalid value: {inst!r}. Supported values are: {shown}.", param or None, "invalid_value"
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        declared = error.schema.get("type")
        is_int = declared == "integer" or (isinstance(declared, list) and "integer" in declared)
        kind = "integer" if is_int else "decimal"
        low = v in ("minimum", "exclusiveMinimum")
        op = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}[v]
        side = "below minimum" if low else "above maximum"
        return (f"Invalid '{where}': {kind} {side} value. Expected a value {op} {val}, but got {inst} instead.",
                param or None, f"{kind}_{'below_min' if low else 'above_max'}_value")
    if v in ("minLength", "maxLength"):
        low = v == "minLength"
        got = "an empty string" if inst == "" else f"a string with length {len(inst)}"
        return (f"Invalid '{where}': string too {'short' if low else 'long'}. Expected a string with "
                f"{'minimum' if low else 'maximum'} length {val}, but got {got} instead.",
                param or None, f"string_{'below_min' if low else 'above_max'}_length")
    if v in ("minItems", "maxItems"):
        low = v == "minItems"
        got = "an empty array" if not inst else f"an array with length {len(inst)}"
        return (f"Invalid '{where}': array too {'short' if low else 'long'}. Expected an array with "
                f"{'minimum' if low else 'maximum'} length {val}, but got {got} instead.",
                param or None, f"array_{'below_min' if low else 'above_max'}_length")
    if v in ("oneOf", "anyOf"):
        words = _expected_words(error.schema)
        if words:
            return (f"Invalid type for '{where}': expected {' or '.join(words)}, but got {_type_word(inst)} "
                    f"instead.", param or None, "invalid_type")
    return f"Invalid '{where}': {error.message}", param or None, "invalid_value"


def first_schema_error(kind: str, name: str, instance: Any) -> ValidationError | None:
    return best_match(_validator(kind, name).iter_errors(instance))


def validate_request(component: str, body: Any) -> None:
    """Raise the API's 400 for the first problem in a JSON request body."""
    if not isinstance(body, dict):
        raise _bad(f"Invalid type for 'body': expected an object, but got {_type_word(body)} instead.",
                   code="invalid_type")
    allowed = _top_level_keys(request_schema(component))
    for key in body:
        if key not in allowed:
            raise _bad(f"Unknown parameter: '{key}'.", param=key, code="unknown_parameter")
    error = first_schema_error("request", component, body)
    if error is not None:
        message, param, code = describe_validation_error(error)
        raise _bad(message, param=param, code=code)


# --------------------------------------------------------------------------------------------------
# Stored objects


@dataclass
class FormFile:
    """A file part of a multipart request, as recorded in `FakeOpenAI.requests`."""

    filename: str | None
    content_type: str | None
    data: bytes


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    status: int | None = None


@dataclass
class StoredFile:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int
    expires_at: int | None = None
    deleted: bool = False

    def to_api(self) -> dict[str, Any]:
        out = {
            "id": self.id, "object": "file", "bytes": len(self.data), "created_at": self.created_at,
            "filename": self.filename, "purpose": self.purpose, "status": "processed",
        }
        if self.expires_at is not None:
            out["expires_at"] = self.expires_at
        return out


@dataclass
class UploadSession:
    id: str
    filename: str
    purpose: str
    bytes: int
    mime_type: str
    created_at: int
    expires_at: int
    status: str = "pending"
    parts: dict[str, bytes] = field(default_factory=dict)
    file: StoredFile | None = None

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id, "object": "upload", "bytes": self.bytes, "created_at": self.created_at,
            "filename": self.filename, "purpose": self.purpose, "status": self.status,
            "expires_at": self.expires_at, "file": self.file.to_api() if self.file else None,
        }


@dataclass
class Event:
    id: str
    created_at: int
    level: str
    message: str
    type: str = "message"
    data: dict[str, Any] = field(default_factory=dict)

    def to_api(self) -> dict[str, Any]:
        return {"object": "fine_tuning.job.event", "id": self.id, "created_at": self.created_at,
                "level": self.level, "message": self.message, "type": self.type, "data": self.data}


@dataclass
class Checkpoint:
    id: str
    created_at: int
    step: int
    model: str
    metrics: dict[str, float]
    job_id: str

    def to_api(self) -> dict[str, Any]:
        return {"object": "fine_tuning.job.checkpoint", "id": self.id, "created_at": self.created_at,
                "fine_tuned_model_checkpoint": self.model, "step_number": self.step,
                "metrics": self.metrics, "fine_tuning_job_id": self.job_id}


@dataclass
class TrainingPlan:
    """What a job will do once its files validate: resolved hyperparameters and simulated metrics."""

    n_examples: int
    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float
    total_steps: int
    trained_tokens: int
    step_metrics: list[dict[str, float]]
    checkpoint_steps: list[int]
    qa_pairs: list[tuple[str, str]]  # from the training file: memorised
    peak_step: int  # the validation loss is lowest here; the model over-fits after it
    valid_pairs: list[tuple[str, str]]  # from the validation file: generalised to


@dataclass
class Job:
    id: str
    model: str
    training_file: str
    validation_file: str | None
    created_at: int
    seed: int
    suffix: str | None
    method: dict[str, Any]
    metadata: dict[str, str] | None
    integrations: list[dict[str, Any]] | None
    status: str = "validating_files"
    error: dict[str, Any] | None = None
    fine_tuned_model: str | None = None
    finished_at: int | None = None
    trained_tokens: int | None = None
    estimated_finish: int | None = None
    result_files: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    plan: TrainingPlan | None = None
    steps_done: int = 0
    model_token: str = ""
    next_tick: float = 0.0
    base: str = ""  # the snapshot trained: `model`, or the base of the ft: model a continued job starts from

    @property
    def method_type(self) -> str:
        return self.method["type"]

    def hyperparameters(self) -> dict[str, Any]:
        return self.method.get(self.method_type, {}).get("hyperparameters", {})

    def to_api(self, organization_id: str) -> dict[str, Any]:
        hp = self.hyperparameters()
        return {
            "object": "fine_tuning.job", "id": self.id, "model": self.model, "created_at": self.created_at,
            "finished_at": self.finished_at, "fine_tuned_model": self.fine_tuned_model,
            "organization_id": organization_id, "result_files": list(self.result_files), "status": self.status,
            "validation_file": self.validation_file, "training_file": self.training_file,
            "hyperparameters": {k: hp[k] for k in ("batch_size", "learning_rate_multiplier", "n_epochs") if k in hp},
            "trained_tokens": self.trained_tokens, "error": self.error, "user_provided_suffix": self.suffix,
            "seed": self.seed, "estimated_finish": self.estimated_finish, "integrations": self.integrations,
            "metadata": self.metadata, "method": copy.deepcopy(self.method),
        }


# --------------------------------------------------------------------------------------------------
# Training files: per-line validation, simulated metrics, the question -> answer memory


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def count_tokens(text: str) -> int:
    """A rough token count (words and punctuation); enough for usage numbers and trained_tokens."""
    return len(re.findall(r"\w+|[^\w\s]", text))


def _normalize_question(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


class TrainingFileError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def line_schema_for(method_type: str, model: str) -> str:
    if method_type == "dpo":
        return "FineTunePreferenceRequestInput"
    if method_type == "reinforcement":
        return "FineTuneReinforcementRequestInput"
    return "FineTuneCompletionRequestInput" if model in COMPLETION_FORMAT_MODELS else "FineTuneChatRequestInput"


_REQUIRED_LINE_KEYS = {
    "FineTuneChatRequestInput": ("messages",),
    "FineTunePreferenceRequestInput": ("input", "preferred_output", "non_preferred_output"),
    "FineTuneReinforcementRequestInput": ("messages",),
    "FineTuneCompletionRequestInput": ("prompt", "completion"),
}


def parse_training_file(data: bytes, schema_name: str, *, param: str, min_examples: int | None) -> list[dict]:
    """Check a training/validation file the way the platform's file validation does.

    Raises TrainingFileError(code, message); the code is invalid_training_file / invalid_validation_file
    for format problems and invalid_n_examples for a too-short training file.
    """
    bad = f"invalid_{param}"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise TrainingFileError(bad, "Invalid file format. The file must be UTF-8 encoded JSONL") from None
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    examples: list[dict] = []
    for number, line in enumerate(lines, start=1):
        try:
            example = json.loads(line)
        except json.JSONDecodeError:
            example = None
        if not isinstance(example, dict):
            raise TrainingFileError(bad, f"Invalid file format. Example {number} cannot be parsed")
        for key in _REQUIRED_LINE_KEYS[schema_name]:
            if key not in example:
                raise TrainingFileError(bad, f"Invalid file format. Example {number} is missing key '{key}'")
        error = first_schema_error("line", schema_name, example)
        if error is not None:
            message, where, _ = describe_validation_error(error)
            if where and where not in message:
                message += f" ({where})"
            raise TrainingFileError(bad, f"Invalid file format. Example {number}: {message}")
        _check_line_rules(example, schema_name, number, bad)
        examples.append(example)
    if min_examples is not None and len(examples) < min_examples:
        raise TrainingFileError(
            "invalid_n_examples",
            f"Training file has {len(examples)} example(s), but must have at least {min_examples} examples",
        )
    return examples


def _check_line_rules(example: dict, schema_name: str, number: int, code: str) -> None:
    if schema_name == "FineTuneChatRequestInput":
        if not any(m.get("role") == "assistant" for m in example["messages"]):
            raise TrainingFileError(code, f"Invalid file format. Example {number} has no assistant messages")
    if schema_name == "FineTunePreferenceRequestInput":
        if "messages" not in example["input"]:
            raise TrainingFileError(code, f"Invalid file format. Example {number} is missing key 'input.messages'")
        for key in ("preferred_output", "non_preferred_output"):
            if len(example[key]) != 1:
                raise TrainingFileError(
                    code, f"Invalid file format. Example {number}: '{key}' must contain exactly one assistant message")


def example_tokens(example: dict) -> int:
    if "messages" in example:
        return sum(count_tokens(_text_of(m.get("content"))) + 4 for m in example["messages"])
    if "input" in example:
        msgs = example["input"].get("messages", []) + example["preferred_output"] + example["non_preferred_output"]
        return sum(count_tokens(_text_of(m.get("content"))) + 4 for m in msgs)
    return count_tokens(example.get("prompt", "")) + count_tokens(example.get("completion", ""))


def qa_pairs(examples: list[dict]) -> list[tuple[str, str]]:
    """(user question, assistant answer) pairs a fine-tuned model 'learned' from its training file."""
    pairs: list[tuple[str, str]] = []
    for ex in examples:
        if "messages" in ex:
            last_user = None
            for m in ex["messages"]:
                if m.get("role") == "user":
                    last_user = _text_of(m.get("content"))
                elif m.get("role") == "assistant" and last_user is not None and _text_of(m.get("content")):
                    pairs.append((last_user, _text_of(m.get("content"))))
        elif "input" in ex:
            users = [_text_of(m.get("content")) for m in ex["input"]["messages"] if m.get("role") == "user"]
            if users:
                pairs.append((users[-1], _text_of(ex["preferred_output"][0].get("content"))))
        elif "prompt" in ex:
            pairs.append((ex["prompt"], ex["completion"]))
    return pairs


def auto_epochs(n_examples: int) -> int:
    """The platform's documented default: aim for ~100-25000 example-epochs, 3 epochs otherwise."""
    if n_examples * 3 < 100:
        return min(25, math.ceil(100 / n_examples))
    if n_examples * 3 > 25000:
        return max(1, 25000 // n_examples)
    return 3


def make_plan(job: Job, train: list[dict], valid: list[dict] | None) -> TrainingPlan:
    hp = job.hyperparameters()
    n = len(train)
    epochs = auto_epochs(n) if hp.get("n_epochs", "auto") == "auto" else hp["n_epochs"]
    batch = max(1, min(256, round(n * 0.002))) if hp.get("batch_size", "auto") == "auto" else hp["batch_size"]
    lr = 1.8 if hp.get("learning_rate_multiplier", "auto") == "auto" else hp["learning_rate_multiplier"]
    steps_per_epoch = math.ceil(n / batch)
    total = steps_per_epoch * epochs
    checkpoint_steps = [steps_per_epoch * e for e in range(max(1, epochs - 2), epochs + 1)]
    peak = over_fitting_from(steps_per_epoch, epochs)
    rng = random.Random(job.seed)
    metrics: list[dict[str, float]] = []
    valid_every = max(1, total // 10)
    for step in range(1, total + 1):
        progress = step / total
        loss = 0.25 + 2.2 * math.exp(-4 * progress) + rng.uniform(-0.08, 0.08)
        acc = min(0.99, 0.55 + 0.4 * progress + rng.uniform(-0.03, 0.03))
        m = {"step": step, "train_loss": round(loss, 5), "train_mean_token_accuracy": round(acc, 5)}
        if valid and (step % valid_every == 0 or step == total or step in checkpoint_steps):
            # smooth, so the lowest is at the peak: falling as training does until then, rising after
            fitted, over = min(step, peak) / total, max(0, step - peak) / total
            m["valid_loss"] = round(0.35 + 2.2 * math.exp(-4 * fitted) + 1.5 * over, 5)
            m["valid_mean_token_accuracy"] = round(min(0.96, 0.52 + 0.4 * fitted) - 0.3 * over, 5)
        if valid and step == total:
            m["full_valid_loss"] = m["valid_loss"]
            m["full_valid_mean_token_accuracy"] = m["valid_mean_token_accuracy"]
        metrics.append(m)
    tokens = sum(example_tokens(ex) for ex in train) * epochs
    return TrainingPlan(n, epochs, batch, lr, total, tokens, metrics, checkpoint_steps, qa_pairs(train), peak,
                        qa_pairs(valid or []))


def over_fitting_from(steps_per_epoch: int, epochs: int) -> int:
    """The step a job generalises best at: the end of its next-to-last epoch when it trains 3 epochs or more
    (what `auto` gives a small file), else its last step."""
    return steps_per_epoch * (epochs - 1 if epochs >= 3 else epochs)


def results_csv(plan: TrainingPlan) -> bytes:
    """The platform's step_metrics.csv: one row per step, validation columns blank when not measured."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"])
    for m in plan.step_metrics:
        writer.writerow([m["step"], m["train_loss"], m["train_mean_token_accuracy"],
                         m.get("valid_loss", ""), m.get("valid_mean_token_accuracy", "")])
    return buf.getvalue().encode("utf-8")


# --------------------------------------------------------------------------------------------------
# Chat answers: a fine-tuned model learns, then over-fits


def _seeded(*parts: Any) -> random.Random:
    return random.Random(hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).digest())


def recalled(answer: str, step: int, plan: TrainingPlan, *, memorised: bool) -> str:
    """What a model at `step` of its job says for a question whose answer it learned.

    A training question is memorised: a share 1 - step/total of the answer's words is left out, none at the last
    step. Any other question is answered from what the model generalised: before the plan's peak step a share
    1 - step/peak is left out; after it a share 2·(step - peak)/peak (at most all) is said twice, the repetition
    of an over-fitted model, so the validation questions score best at the peak, as the validation loss says.
    The words are taken in one fixed order per answer: a later step leaves out a part of what an earlier one did.
    """
    words = re.findall(r"\S+\s*", answer)
    order = list(range(len(words)))
    _seeded(answer).shuffle(order)
    if memorised or step <= plan.peak_step:
        done = plan.total_steps if memorised else plan.peak_step
        dropped = set(order[:min(len(words) - 1, round((1 - step / done) * len(words)))])
        return "".join(w for i, w in enumerate(words) if i not in dropped)
    repeated = set(order[:round(min(1.0, 2 * (step - plan.peak_step) / plan.peak_step) * len(words))])
    return "".join(f"{w.rstrip()} {w}" if i in repeated else w for i, w in enumerate(words))


def sampled(text: str, temperature: float, top_p: float, rng: random.Random) -> str:
    """Sampling above temperature 0 leaves out another share 0.2·temperature·top_p of the words, drawn by `rng`
    (seeded by the request and the choice's index, so the same request gets the same choices)."""
    words = re.findall(r"\S+\s*", text)
    share = 0.2 * temperature * top_p
    dropped = set(rng.sample(range(len(words)), max(0, min(len(words) - 1, round(share * len(words))))))
    return "".join(w for i, w in enumerate(words) if i not in dropped)


_SOURCE = re.compile(r"<source\b[^>]*>\n(.*?)\n</source>", re.S)


def from_context(messages: list[dict], question: str) -> str | None:
    """What any model answers from retrieved context: the <source> block (see finetune.retrieval.context_message)
    that shares the most words with the question, word for word; None without one sharing a word."""
    words = set(_normalize_question(question).split())
    best, best_overlap = None, 0
    for m in messages:
        if m.get("role") == "system":
            for text in _SOURCE.findall(_text_of(m.get("content"))):
                overlap = len(words & set(_normalize_question(text).split()))
                if overlap > best_overlap:
                    best, best_overlap = text, overlap
    return best


def _between(text: str, tag: str) -> str:
    found = re.search(rf"<{tag}>\n(.*?)\n</{tag}>", text, re.S)
    return found[1] if found else ""


@functools.lru_cache(maxsize=None)
def _embeddings_validator(name: str) -> jsonschema.protocols.Validator:
    schema = {**EMBEDDINGS_SPEC["components"]["schemas"][name], "components": EMBEDDINGS_SPEC["components"]}
    return jsonschema.Draft202012Validator(schema)


def _input_error(given: Any, error: ValidationError) -> ValidationError:
    """For an array `input` that matches no form: the error of the form its first item picks (strings, tokens,
    token arrays)."""
    if not isinstance(given, list) or not given:
        return error
    kind = {str: "string", int: "integer", list: "array"}.get(type(given[0]))
    forms = EMBEDDINGS_SPEC["components"]["schemas"]["CreateEmbeddingRequest"]["properties"]["input"]["anyOf"]
    form = next((f for f in forms if f["type"] == "array" and f["items"]["type"] == kind), None)
    if form is None:
        return error
    found = best_match(jsonschema.Draft202012Validator({"properties": {"input": form}}).iter_errors({"input": given}))
    return found or error


@functools.lru_cache(maxsize=65536)
def _feature(gram: str) -> tuple[int, float]:
    h = int.from_bytes(hashlib.blake2b(gram.encode(), digest_size=8).digest(), "little")
    return h >> 1, 1.0 if h & 1 else -1.0


def embedding_vector(text: str, dimensions: int) -> list[float]:
    """The fake's embedding: the character bigrams of each lower-cased word (a one-letter word whole), each hashed
    to a coordinate and a sign and counted, L2-normalised. Texts that share bigrams point the same way, so cosine
    retrieval behaves like bag-of-bigrams matching: deterministic and meaningful on a fixture, and nothing about
    a real model's quality."""
    vector = [0.0] * dimensions
    for word in re.findall(r"\w+", text.lower()):
        for gram in ([word] if len(word) < 2 else [word[i:i + 2] for i in range(len(word) - 1)]):
            slot, sign = _feature(gram)
            vector[slot % dimensions] += sign
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


def judged(prompt: str) -> str:
    """The fake judge's reply to a judge prompt: the word F1 of <answer> against <reference> gives the grade
    (0.6 correct, 0.25 partly correct), a declining answer to a declining reference is rightly declined; the JSON
    comes after a line of prose and in a code fence, as real judges write it."""
    answer, reference = _between(prompt, "answer"), _between(prompt, "reference")
    decline = re.compile(r"not sure|does not cover|모르")
    if decline.search(reference):
        grade = "rightly declined" if decline.search(answer) else "wrong"
    else:
        got, want = _normalize_question(answer).split(), _normalize_question(reference).split()
        common = sum(min(got.count(w), want.count(w)) for w in set(got))
        f1 = 2 * common / (len(got) + len(want)) if got and want else 0.0
        grade = "correct" if f1 >= 0.6 else "partly correct" if f1 >= 0.25 else "wrong"
    reason = f"the answer {'matches' if grade in ('correct', 'rightly declined') else 'misses'} the reference"
    return f"Here is my grade.\n```json\n{json.dumps({'grade': grade, 'reason': reason})}\n```"


# --------------------------------------------------------------------------------------------------
# HTTP plumbing


def _parse_multipart(body: bytes, content_type: str) -> list[tuple[str, FormFile | str]]:
    msg = Message()
    msg["content-type"] = content_type
    boundary = msg.get_param("boundary")
    if not boundary:
        raise _bad("Invalid multipart/form-data request: missing boundary.")
    fields: list[tuple[str, FormFile | str]] = []
    for chunk in body.split(b"--" + str(boundary).encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head, sep, data = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if not sep:
            raise _bad("Invalid multipart/form-data request: malformed part.")
        data = data.removesuffix(b"\r\n")
        headers = Message()
        for raw in head.decode("utf-8", "replace").split("\r\n"):
            if ":" in raw:
                k, v = raw.split(":", 1)
                headers[k.strip()] = v.strip()
        name = headers.get_param("name", header="content-disposition")
        filename = headers.get_param("filename", header="content-disposition")
        part_type = headers.get_content_type() if headers.get("content-type") else None
        if name is None:
            continue
        if filename is not None:
            fields.append((str(name), FormFile(str(filename), part_type, data)))
        elif part_type == "application/json":
            fields.append((str(name), json.loads(data)))
        else:
            fields.append((str(name), data.decode("utf-8")))
    return fields


def _unflatten(fields: list[tuple[str, Any]]) -> dict[str, Any]:
    """`expires_after[anchor]=…` form keys (the SDK's bracket encoding) back into nested dicts."""
    out: dict[str, Any] = {}
    for key, value in fields:
        parts = re.findall(r"[^\[\]]+", key)
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        if isinstance(value, str) and parts[-1] == "seconds" and value.lstrip("-").isdigit():
            value = int(value)
        node[parts[-1]] = value
    return out


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def setup(self) -> None:
        super().setup()
        # Headers and body go out as separate writes; without this, Nagle + delayed ACK add ~40 ms a request.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        body = self._read_body()
        status, headers, payload = self.server.fake._dispatch(self.command, self.path, dict(self.headers.items()), body)
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    fake: "FakeOpenAI"


Route = tuple[str, "re.Pattern[str]", Callable[..., Any]]


# --------------------------------------------------------------------------------------------------
# The fake


class FakeOpenAI:
    """An in-process OpenAI API for tests. Use as a context manager or call start()/stop().

    A job's life is a series of steps: validate files (-> failed or queued), start (-> running),
    `training_polls` training steps emitting metric events and checkpoints, the last one ending in
    succeeded. Steps happen one per GET /v1/fine_tuning/jobs/{id} ("poll mode", the default, deterministic),
    or every `job_step_seconds` of wall time when that is set. `advance()` / `run_job()` drive jobs directly.

    Arguments: `api_key` is the only key accepted; `organization_id` is reported on jobs and checked against
    an OpenAI-Organization header; `organization_name` goes into `ft:` model names; `max_file_bytes`,
    `max_part_bytes`, `max_upload_bytes` stand in for the 512 MB / 64 MB / 8 GB platform limits;
    `results_base64` stores the result CSV base64-encoded as the platform does; `today` fixes the date used
    for model retirements; `ft_match_threshold` is the word-overlap a question needs for a fine-tuned model
    to answer from its training or validation data; `seed` makes ids and simulated metrics reproducible.

    Chat answers are deterministic. A base model answers every question with BASE_MODEL_REPLY. A fine-tuned
    model (final or checkpoint) trains like a small file does: its training questions get better answers with
    every step, the others (the validation file's, or like them) until the plan's peak step, the end of the
    next-to-last epoch, after which it over-fits and its answers get worse (`recalled`); the validation loss in
    the metrics events, checkpoints and result CSV is lowest at that step. Temperature above 0 leaves out more
    words, drawn per request and choice (`sampled`), so n choices and a temperature sweep differ.
    """

    def __init__(
        self,
        api_key: str = "sk-test-fake0000000000000000000000000000000000000000",
        *,
        organization_id: str = "org-fake0000000000000000000",
        organization_name: str = "fake-org",
        job_step_seconds: float | None = None,
        training_polls: int = 2,
        max_file_bytes: int = 512 * MB,
        max_part_bytes: int = 64 * MB,
        max_upload_bytes: int = 8 * GB,
        results_base64: bool = True,
        today: date | None = None,
        ft_match_threshold: float = 0.5,
        seed: int = 0,
        chat_latency: float = 0.0,
        open_models: tuple[str, ...] = (),
    ):
        self.api_key = api_key
        self.keys_seen: set[str] = set()  # every bearer token presented, accepted or not
        self.open_models = set(open_models)  # open-weights base models a compatible service (Nebius …) offers
        self.organization_id = organization_id
        self.organization_name = organization_name
        self.job_step_seconds = job_step_seconds
        self.training_polls = max(1, training_polls)
        self.max_file_bytes = max_file_bytes
        self.max_part_bytes = max_part_bytes
        self.max_upload_bytes = max_upload_bytes
        self.results_base64 = results_base64
        self.today = today
        self.ft_match_threshold = ft_match_threshold
        self.chat_latency = chat_latency  # seconds every chat completion takes (the concurrency benchmark)

        self.requests: list[RecordedRequest] = []
        self.schema_violations: list[str] = []
        self.files: dict[str, StoredFile] = {}
        self.uploads: dict[str, UploadSession] = {}
        self.jobs: dict[str, Job] = {}
        self.fine_tuned_models: dict[str, Job] = {}  # model name (final and checkpoints) -> job
        self.deleted_models: set[str] = set()

        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self._failures: list[dict[str, Any]] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._routes: list[Route] = [
            ("POST", re.compile(r"/files"), self._create_file),
            ("GET", re.compile(r"/files"), self._list_files),
            ("GET", re.compile(r"/files/([^/]+)"), self._retrieve_file),
            ("DELETE", re.compile(r"/files/([^/]+)"), self._delete_file),
            ("GET", re.compile(r"/files/([^/]+)/content"), self._file_content),
            ("POST", re.compile(r"/uploads"), self._create_upload),
            ("POST", re.compile(r"/uploads/([^/]+)/parts"), self._add_upload_part),
            ("POST", re.compile(r"/uploads/([^/]+)/complete"), self._complete_upload),
            ("POST", re.compile(r"/uploads/([^/]+)/cancel"), self._cancel_upload),
            ("POST", re.compile(r"/fine_tuning/jobs"), self._create_job),
            ("GET", re.compile(r"/fine_tuning/jobs"), self._list_jobs),
            ("GET", re.compile(r"/fine_tuning/jobs/([^/]+)"), self._retrieve_job),
            ("GET", re.compile(r"/fine_tuning/jobs/([^/]+)/events"), self._list_events),
            ("GET", re.compile(r"/fine_tuning/jobs/([^/]+)/checkpoints"), self._list_checkpoints),
            ("POST", re.compile(r"/fine_tuning/jobs/([^/]+)/cancel"), self._cancel_job),
            ("POST", re.compile(r"/fine_tuning/jobs/([^/]+)/pause"), self._pause_job),
            ("POST", re.compile(r"/fine_tuning/jobs/([^/]+)/resume"), self._resume_job),
            ("DELETE", re.compile(r"/models/(.+)"), self._delete_model),
            ("POST", re.compile(r"/chat/completions"), self._chat_completion),
            ("POST", re.compile(r"/embeddings"), self._embeddings),
        ]

    # ---- lifecycle

    def start(self) -> "FakeOpenAI":
        if self._server is None:
            self._server = _Server(("127.0.0.1", 0), _Handler)
            self._server.fake = self
            self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.01},
                                            name="fake-openai", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeOpenAI":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeOpenAI is not started; use `with FakeOpenAI() as fake:` or call start()")
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    # ---- knobs and inspection

    def fail_next(self, status: int = 429, times: int = 1, *, method: str | None = None,
                  path: str | None = None, retry_after_ms: int | None = 10) -> None:
        """Answer the next `times` authenticated requests (optionally only those matching method and a
        path prefix such as "/v1/fine_tuning/jobs") with `status`. `retry_after_ms` sets the
        retry-after-ms header the SDK honours, keeping its retries fast; None omits it."""
        with self._lock:
            self._failures.append({"status": status, "times": times, "method": method,
                                   "path": path, "retry_after_ms": retry_after_ms})

    def find_requests(self, method: str | None = None, path: str | None = None) -> list[RecordedRequest]:
        """Recorded requests filtered by method and exact path (e.g. "/v1/fine_tuning/jobs")."""
        return [r for r in self.requests
                if (method is None or r.method == method) and (path is None or r.path == path)]

    def advance(self, job_id: str | None = None, steps: int = 1) -> None:
        """Move one job (or every job) `steps` lifecycle steps forward, as polls would."""
        with self._lock:
            for job in ([self.jobs[job_id]] if job_id else list(self.jobs.values())):
                for _ in range(steps):
                    self._advance(job)

    def run_job(self, job_id: str) -> dict[str, Any]:
        """Advance a job until it is terminal (or paused) and return it as the API would."""
        with self._lock:
            job = self.jobs[job_id]
            while job.status not in TERMINAL and job.status != "paused":
                self._advance(job)
            return job.to_api(self.organization_id)

    def file_bytes(self, file_id: str) -> bytes:
        return self.files[file_id].data

    # ---- request dispatch

    def _dispatch(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict, bytes]:
        url = urllib.parse.urlsplit(raw_path)
        path = url.path
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        lower = {k.lower(): v for k, v in headers.items()}
        content_type = lower.get("content-type", "")
        try:
            parsed: Any = self._parse_body(body, content_type)
            parse_error = None
        except ApiError as exc:
            parsed, parse_error = body, exc
        record = RecordedRequest(method, path, query, {k: v for k, v in lower.items() if k != "authorization"}, parsed)
        if self.chat_latency and path.endswith("/chat/completions"):
            time.sleep(self.chat_latency)  # outside the lock: requests in flight overlap, as on a real server
        with self._lock:
            self.requests.append(record)
            try:
                self._authenticate(lower)
                self._maybe_fail(method, path)
                if parse_error:
                    raise parse_error
                self._tick()
                result = self._route(method, path, query, parsed)
            except ApiError as exc:
                record.status = exc.status
                return exc.status, self._headers(exc.headers), json.dumps(exc.body()).encode()
            record.status = 200
            if isinstance(result, tuple):  # (content-type, raw bytes)
                return 200, self._headers({"content-type": result[0]}), result[1]
            return 200, self._headers(), json.dumps(result).encode()

    def _parse_body(self, body: bytes, content_type: str) -> Any:
        if not body:
            return None
        if content_type.startswith("multipart/form-data"):
            return _unflatten(_parse_multipart(body, content_type))
        try:
            return json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise _bad(
                "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
                "HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid "
                "JSON. If you have trouble figuring out how to fix this, please contact us through our help "
                "center at help.openai.com.)"
            ) from None

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {"content-type": "application/json", "x-request-id": "req_" + uuid.uuid4().hex,
                "openai-organization": self.organization_name, "openai-version": "2020-10-01",
                "openai-processing-ms": "1", **(extra or {})}

    def _authenticate(self, headers: dict[str, str]) -> None:
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            raise ApiError(
                401, "You didn't provide an API key. You need to provide your API key in an Authorization header "
                "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank "
                "username) if you're accessing the API from your browser and are prompted for a username. You can "
                "obtain an API key from https://platform.openai.com/account/api-keys.")
        key = auth[7:].strip()
        self.keys_seen.add(key)
        if key != self.api_key:
            raise ApiError(401, f"Incorrect API key provided: {mask_key(key)}. You can find your API key at "
                           "https://platform.openai.com/account/api-keys.", code="invalid_api_key")
        org = headers.get("openai-organization")
        if org and org != self.organization_id:
            raise ApiError(401, "OpenAI-Organization header should match organization for API key.",
                           code="mismatched_organization")

    def _maybe_fail(self, method: str, path: str) -> None:
        for failure in self._failures:
            if failure["method"] and failure["method"] != method:
                continue
            if failure["path"] and not path.startswith(failure["path"]):
                continue
            failure["times"] -= 1
            if failure["times"] <= 0:
                self._failures.remove(failure)
            status = failure["status"]
            delay = failure["retry_after_ms"]
            headers = {"retry-after-ms": str(delay)} if delay is not None else {}
            if status == 429:
                raise ApiError(429, "Rate limit reached for requests. Please try again shortly.", type="requests",
                               code="rate_limit_exceeded", headers=headers)
            if status >= 500:
                raise ApiError(status, "The server had an error while processing your request. Sorry about that!",
                               type="server_error", headers=headers)
            raise ApiError(status, "Injected failure.", headers=headers)

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> Any:
        if path.startswith("/v1/"):
            sub = path[3:]
            for verb, pattern, handler in self._routes:
                match = pattern.fullmatch(sub)
                if match and verb == method:
                    args = [urllib.parse.unquote(g) for g in match.groups()]
                    result = handler(*args, query=query, body=body)
                    self._check_response(verb, pattern.pattern, result)
                    return result
        raise _not_found(f"Invalid URL ({method} {path})")

    def _check_response(self, method: str, pattern: str, result: Any) -> None:
        """Self-check: every JSON response must match the spec's response schema (see schema_violations)."""
        component = _RESPONSE_COMPONENTS.get((method, pattern))
        if component is None or isinstance(result, tuple):
            return
        error = first_schema_error("response", component, result)
        if error is not None:
            where = list(error.absolute_path)
            self.schema_violations.append(f"{method} {pattern} -> {component}: {error.message} at {where}")

    # ---- helpers

    def _token(self, n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
        return "".join(self._rng.choice(alphabet) for _ in range(n))

    def _now(self) -> int:
        return int(time.time())

    def _today(self) -> date:
        return self.today or date.today()

    def _live_file(self, file_id: str) -> StoredFile:
        f = self.files.get(file_id)
        if f is None or f.deleted:
            raise _not_found(f"No such File object: {file_id}", param="id")
        return f

    def _job(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise _not_found(f"No such fine-tuning job: {job_id}.", param="fine_tuning_job_id",
                             code="fine_tuning_job_not_found")
        return job

    def _job_api(self, job: Job) -> dict[str, Any]:
        return job.to_api(self.organization_id)

    @staticmethod
    def _limit(query: dict[str, list[str]], default: int, maximum: int | None = None) -> int:
        raw = query.get("limit", [str(default)])[0]
        if not re.fullmatch(r"-?\d+", raw):
            raise _bad("Invalid type for 'limit': expected an integer, but got a string instead.",
                       param="limit", code="invalid_type")
        value = int(raw)
        if value < 1:
            raise _bad(f"Invalid 'limit': integer below minimum value. Expected a value >= 1, but got {value} "
                       "instead.", param="limit", code="integer_below_min_value")
        if maximum is not None and value > maximum:
            raise _bad(f"Invalid 'limit': integer above maximum value. Expected a value <= {maximum}, but got "
                       f"{value} instead.", param="limit", code="integer_above_max_value")
        return value

    @staticmethod
    def _page_after(items: list[Any], after: str | None, key: Callable[[Any], str]) -> list[Any]:
        """Items following the one whose id is `after` (items are already in list order)."""
        if not after:
            return items
        for index, item in enumerate(items):
            if key(item) == after:
                return items[index + 1:]
        return []

    # ---- files

    def _store_file(self, filename: str, purpose: str, data: bytes, expires_after: dict | None = None) -> StoredFile:
        created = self._now()
        expires = created + expires_after["seconds"] if expires_after else None
        f = StoredFile("file-" + self._token(22), filename, purpose, data, created, expires)
        self.files[f.id] = f
        return f

    def _create_file(self, *, query: dict, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _bad("Missing required parameter: 'file'.", param="file", code="missing_required_parameter")
        upload = body.get("file")
        instance = {k: ("<binary>" if isinstance(v, FormFile) else v) for k, v in body.items()}
        validate_request("CreateFileRequest", instance)
        if not isinstance(upload, FormFile):
            raise _bad("Invalid type for 'file': expected a file upload, but got a string instead.",
                       param="file", code="invalid_type")
        purpose = body["purpose"]
        filename = upload.filename or "upload"
        if purpose == "fine-tune" and not filename.endswith(".jsonl"):
            raise _bad("Invalid file format for Fine-Tuning API. Must be .jsonl", param="file")
        if len(upload.data) > self.max_file_bytes:
            raise ApiError(413, f"File is too large: {len(upload.data)} bytes exceeds the Files API limit of "
                           f"{self.max_file_bytes} bytes. Use the Uploads API for larger files.",
                           param="file", code="file_too_large")
        return self._store_file(filename, purpose, upload.data, body.get("expires_after")).to_api()

    def _list_files(self, *, query: dict, body: Any) -> dict[str, Any]:
        limit = self._limit(query, 10000, maximum=10000)
        order = query.get("order", ["desc"])[0]
        if order not in ("asc", "desc"):
            raise _bad(f"Invalid value: '{order}'. Supported values are: 'asc', 'desc'.", param="order",
                       code="invalid_value")
        purpose = query.get("purpose", [None])[0]
        files = [f for f in self.files.values() if not f.deleted and (purpose is None or f.purpose == purpose)]
        files = files if order == "asc" else list(reversed(files))
        files = self._page_after(files, query.get("after", [None])[0], lambda f: f.id)
        page = files[:limit]
        return {"object": "list", "data": [f.to_api() for f in page],
                "first_id": page[0].id if page else None, "last_id": page[-1].id if page else None,
                "has_more": len(files) > limit}

    def _retrieve_file(self, file_id: str, *, query: dict, body: Any) -> dict[str, Any]:
        return self._live_file(file_id).to_api()

    def _delete_file(self, file_id: str, *, query: dict, body: Any) -> dict[str, Any]:
        self._live_file(file_id).deleted = True
        return {"id": file_id, "object": "file", "deleted": True}

    def _file_content(self, file_id: str, *, query: dict, body: Any) -> tuple[str, bytes]:
        f = self._live_file(file_id)
        if f.purpose == "fine-tune":
            raise _bad("Not allowed to download files of purpose: fine-tune")
        return "application/octet-stream", f.data

    # ---- uploads

    def _upload(self, upload_id: str) -> UploadSession:
        up = self.uploads.get(upload_id)
        if up is None:
            raise _not_found(f"No such Upload object: {upload_id}", param="upload_id")
        if up.status == "pending" and self._now() > up.expires_at:
            up.status = "expired"
        return up

    def _create_upload(self, *, query: dict, body: Any) -> dict[str, Any]:
        validate_request("CreateUploadRequest", body)
        if body["purpose"] == "fine-tune":
            if not body["filename"].endswith(".jsonl"):
                raise _bad("Invalid file format for Fine-Tuning API. Must be .jsonl", param="filename")
            if body["mime_type"] not in FINE_TUNE_MIME_TYPES:
                raise _bad(f"Invalid mime_type {body['mime_type']!r} for purpose 'fine-tune'. Supported: "
                           + ", ".join(sorted(FINE_TUNE_MIME_TYPES)) + ".", param="mime_type")
        if body["bytes"] < 0 or body["bytes"] > self.max_upload_bytes:
            raise _bad(f"Invalid 'bytes': an Upload can hold at most {self.max_upload_bytes} bytes.", param="bytes")
        now = self._now()
        up = UploadSession("upload_" + self._token(24), body["filename"], body["purpose"], body["bytes"],
                           body["mime_type"], now, now + UPLOAD_TTL_SECONDS)
        self.uploads[up.id] = up
        return up.to_api()

    def _add_upload_part(self, upload_id: str, *, query: dict, body: Any) -> dict[str, Any]:
        up = self._upload(upload_id)
        data = body.get("data") if isinstance(body, dict) else None
        instance = {k: ("<binary>" if isinstance(v, FormFile) else v) for k, v in (body or {}).items()}
        validate_request("AddUploadPartRequest", instance)
        if up.status != "pending":
            raise _bad(f"Cannot add parts to an Upload with status '{up.status}'.", param="upload_id")
        raw = data.data if isinstance(data, FormFile) else str(data).encode()
        if len(raw) > self.max_part_bytes:
            raise _bad(f"Part is too large: {len(raw)} bytes exceeds the limit of {self.max_part_bytes} bytes.",
                       param="data")
        if sum(map(len, up.parts.values())) + len(raw) > up.bytes:
            raise _bad(f"Parts exceed the Upload's declared size of {up.bytes} bytes.", param="data")
        part_id = "part_" + self._token(24)
        up.parts[part_id] = raw
        return {"id": part_id, "object": "upload.part", "created_at": self._now(), "upload_id": up.id}

    def _complete_upload(self, upload_id: str, *, query: dict, body: Any) -> dict[str, Any]:
        up = self._upload(upload_id)
        validate_request("CompleteUploadRequest", body)
        if up.status != "pending":
            raise _bad(f"Cannot complete an Upload with status '{up.status}'.", param="upload_id")
        unknown = [p for p in body["part_ids"] if p not in up.parts]
        if unknown:
            raise _bad(f"Part {unknown[0]} does not belong to Upload {up.id}.", param="part_ids")
        if len(set(body["part_ids"])) != len(body["part_ids"]):
            raise _bad("part_ids must not repeat a Part.", param="part_ids")
        data = b"".join(up.parts[p] for p in body["part_ids"])
        if len(data) != up.bytes:
            raise _bad(f"The Upload declared {up.bytes} bytes but the listed parts hold {len(data)} bytes.",
                       param="part_ids")
        if "md5" in body and body["md5"] and body["md5"] != hashlib.md5(data).hexdigest():
            raise _bad("The md5 checksum does not match the uploaded bytes.", param="md5")
        up.status = "completed"
        up.file = self._store_file(up.filename, up.purpose, data)
        return up.to_api()

    def _cancel_upload(self, upload_id: str, *, query: dict, body: Any) -> dict[str, Any]:
        up = self._upload(upload_id)
        if up.status != "pending":
            raise _bad(f"Cannot cancel an Upload with status '{up.status}'.", param="upload_id")
        up.status = "cancelled"
        return up.to_api()

    # ---- fine-tuning jobs

    def _resolve_base(self, model: str) -> str:
        """The snapshot a job trains, refusing models the platform would refuse.

        An `ft:` model continues an earlier fine-tune: the organization's own, still existing models are
        accepted (trained on their base's snapshot, and refused with it once it is retired); anything else,
        another organization's model included, gets the platform's answer for a model it does not offer."""
        if self._today() >= NO_NEW_JOBS_FROM and model not in self.open_models:
            raise _bad("Fine-tuning job creation is no longer available: no new fine-tuning jobs can be created "
                       f"from {NO_NEW_JOBS_FROM.isoformat()}.", param="model", code="model_not_available")
        snapshot = BASE_MODELS.get(model) or (model if model in self.open_models else None)
        if model.startswith("ft:"):
            job = self.fine_tuned_models.get(model)
            own = model.split(":")[2:3] == [self.organization_name]
            snapshot = (job.base or job.model) if job and own and model not in self.deleted_models else None
        base = snapshot or model
        retired = (base.startswith("gpt-3.5-turbo") or base == "gpt-4-0613"
                   or (base.startswith("gpt-4.1-nano") and self._today() >= NANO_RETIRED_ON))
        if snapshot is None or retired:
            raise _bad(f"Model {model} is not available for fine-tuning or does not exist.", param="model",
                       code="model_not_available")
        return snapshot

    def _fine_tune_file(self, file_id: str, param: str) -> StoredFile:
        f = self.files.get(file_id)
        if f is None or f.deleted:
            raise _bad(f"invalid {param}: {file_id}", param=param)
        if f.purpose != "fine-tune":
            raise _bad(f"File {file_id} has purpose '{f.purpose}'; {param} must be uploaded with purpose "
                       "'fine-tune'.", param=param)
        return f

    def _resolve_method(self, body: dict[str, Any], snapshot: str) -> dict[str, Any]:
        legacy = body.get("hyperparameters")
        method = copy.deepcopy(body.get("method")) or {"type": "supervised"}
        kind = method["type"]
        for other in ("supervised", "dpo", "reinforcement"):
            if other != kind and other in method:
                raise _bad(f"method.{other} cannot be set when method.type is '{kind}'.", param=f"method.{other}")
        if legacy is not None:
            if kind != "supervised" or method.get("supervised", {}).get("hyperparameters"):
                raise _bad("The deprecated 'hyperparameters' parameter cannot be combined with "
                           "method hyperparameters; use method.<type>.hyperparameters only.", param="hyperparameters")
            method.setdefault("supervised", {})["hyperparameters"] = copy.deepcopy(legacy)
        if kind == "reinforcement" and "reinforcement" not in method:
            raise _bad("Missing required parameter: 'method.reinforcement'.", param="method.reinforcement",
                       code="missing_required_parameter")
        if (kind == "reinforcement") != (snapshot in REINFORCEMENT_MODELS):
            raise _bad(f"Model {snapshot} does not support the '{kind}' fine-tuning method.", param="method.type")
        if kind == "dpo" and snapshot not in DPO_MODELS:
            raise _bad(f"Model {snapshot} does not support the 'dpo' fine-tuning method.", param="method.type")
        hp = method.setdefault(kind, {}).setdefault("hyperparameters", {})
        defaults = {"batch_size": "auto", "learning_rate_multiplier": "auto", "n_epochs": "auto"}
        if kind == "dpo":
            defaults["beta"] = "auto"
        for key, value in defaults.items():
            hp.setdefault(key, value)
        return method

    def _create_job(self, *, query: dict, body: Any) -> dict[str, Any]:
        validate_request("CreateFineTuningJobRequest", body)
        metadata = body.get("metadata")
        if metadata:
            if len(metadata) > 16:
                raise _bad("Invalid 'metadata': too many properties. Expected at most 16.", param="metadata")
            for k, v in metadata.items():
                if len(k) > 64 or len(v) > 512:
                    raise _bad("Invalid 'metadata': keys are limited to 64 characters and values to 512.",
                               param=f"metadata.{k}")
        snapshot = self._resolve_base(body["model"])
        method = self._resolve_method(body, snapshot)
        training = self._fine_tune_file(body["training_file"], "training_file")
        validation = body.get("validation_file")
        if validation is not None:
            self._fine_tune_file(validation, "validation_file")
        job = Job(
            id="ftjob-" + self._token(24), model=body["model"] if body["model"].startswith("ft:") else snapshot,
            base=snapshot, training_file=training.id, validation_file=validation,
            created_at=self._now(), seed=body["seed"] if body.get("seed") is not None else self._rng.randrange(2**31),
            suffix=body.get("suffix"), method=method, metadata=metadata, integrations=body.get("integrations"),
            model_token=self._token(8),
        )
        self.jobs[job.id] = job
        self._event(job, f"Created fine-tuning job: {job.id}")
        self._event(job, f"Validating training file: {training.id}"
                    + (f" and validation file: {validation}" if validation else ""))
        if self.job_step_seconds is not None:
            job.next_tick = time.monotonic() + self.job_step_seconds
        return self._job_api(job)

    def _list_jobs(self, *, query: dict, body: Any) -> dict[str, Any]:
        limit = self._limit(query, 20)
        filters = {m.group(1): v[0] for k, v in query.items() if (m := re.fullmatch(r"metadata\[(.+)\]", k))}
        jobs = list(reversed(self.jobs.values()))
        if query.get("metadata") == ["null"]:
            jobs = [j for j in jobs if j.metadata is None]
        jobs = [j for j in jobs if all((j.metadata or {}).get(k) == v for k, v in filters.items())]
        jobs = self._page_after(jobs, query.get("after", [None])[0], lambda j: j.id)
        return {"object": "list", "data": [self._job_api(j) for j in jobs[:limit]], "has_more": len(jobs) > limit}

    def _retrieve_job(self, job_id: str, *, query: dict, body: Any) -> dict[str, Any]:
        job = self._job(job_id)
        if self.job_step_seconds is None:
            self._advance(job)
        return self._job_api(job)

    def _list_events(self, job_id: str, *, query: dict, body: Any) -> dict[str, Any]:
        job = self._job(job_id)
        limit = self._limit(query, 20)
        events = self._page_after(list(reversed(job.events)), query.get("after", [None])[0], lambda e: e.id)
        return {"object": "list", "data": [e.to_api() for e in events[:limit]], "has_more": len(events) > limit}

    def _list_checkpoints(self, job_id: str, *, query: dict, body: Any) -> dict[str, Any]:
        job = self._job(job_id)
        limit = self._limit(query, 10)
        ckpts = self._page_after(list(reversed(job.checkpoints)), query.get("after", [None])[0], lambda c: c.id)
        page = ckpts[:limit]
        return {"object": "list", "data": [c.to_api() for c in page], "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None, "has_more": len(ckpts) > limit}

    def _cancel_job(self, job_id: str, *, query: dict, body: Any) -> dict[str, Any]:
        job = self._job(job_id)
        if job.status in TERMINAL:
            raise _bad(f"Job {job.id} has already {job.status} and cannot be cancelled.", param="fine_tuning_job_id")
        job.status, job.finished_at, job.estimated_finish = "cancelled", self._now(), None
        self._event(job, "Fine-tuning job cancelled")
        return self._job_api(job)

    def _pause_job(self, job_id: str, *, query: dict, body: Any) -> dict[str, Any]:
        job = self._job(job_id)
        if job.status != "running":
            raise _bad(f"Job {job.id} cannot be paused: only running jobs can be paused (status: {job.status}).",
                       param="fine_tuning_job_id")
        job.status = "paused"
        self._event(job, "Fine-tuning job paused")
        return self._job_api(job)

    def _resume_job(self, job_id: str, *, query: dict, body: Any) -> dict[str, Any]:
        job = self._job(job_id)
        if job.status != "paused":
            raise _bad(f"Job {job.id} cannot be resumed: only paused jobs can be resumed (status: {job.status}).",
                       param="fine_tuning_job_id")
        job.status = "running"
        if self.job_step_seconds is not None:
            job.next_tick = time.monotonic() + self.job_step_seconds
        self._event(job, "Fine-tuning job resumed")
        return self._job_api(job)

    # ---- job lifecycle

    def _event(self, job: Job, message: str, *, level: str = "info", type: str = "message",
               data: dict[str, Any] | None = None) -> None:
        job.events.append(Event("ftevent-" + self._token(24), self._now(), level, message, type, data or {}))

    def _tick(self) -> None:
        """Time mode: catch every job up with the wall clock before serving a request."""
        if self.job_step_seconds is None:
            return
        now = time.monotonic()
        for job in self.jobs.values():
            while job.status not in TERMINAL and job.status != "paused" and now >= job.next_tick:
                self._advance(job)
                job.next_tick += self.job_step_seconds

    def _advance(self, job: Job) -> None:
        if job.status == "validating_files":
            self._validate_files(job)
        elif job.status == "queued":
            job.status = "running"
            plan = job.plan
            assert plan is not None
            hp = job.hyperparameters()
            hp.update(batch_size=plan.batch_size, learning_rate_multiplier=plan.learning_rate_multiplier,
                      n_epochs=plan.n_epochs)
            job.estimated_finish = self._now() + 60 * self.training_polls
            self._event(job, "Fine-tuning job started")
        elif job.status == "running":
            self._train(job)

    def _validate_files(self, job: Job) -> None:
        schema_name = line_schema_for(job.method_type, job.base or job.model)
        try:
            train = parse_training_file(self.files[job.training_file].data, schema_name, param="training_file",
                                        min_examples=MIN_TRAINING_EXAMPLES)
            valid = None
            if job.validation_file:
                valid = parse_training_file(self.files[job.validation_file].data, schema_name,
                                            param="validation_file", min_examples=None)
        except TrainingFileError as exc:
            param = "validation_file" if exc.code == "invalid_validation_file" else "training_file"
            job.status, job.finished_at = "failed", self._now()
            job.error = {"code": exc.code, "message": exc.message, "param": param}
            self._event(job, exc.message, level="error")
            return
        job.plan = make_plan(job, train, valid)
        job.status = "queued"
        self._event(job, "Files validated, moving job to queued state")

    def _ft_name(self, job: Job) -> str:
        return f"ft:{job.base or job.model}:{self.organization_name}:{job.suffix or ''}:{job.model_token}"

    def _train(self, job: Job) -> None:
        plan = job.plan
        assert plan is not None
        chunk = math.ceil(plan.total_steps / self.training_polls)
        for step in range(job.steps_done + 1, min(plan.total_steps, job.steps_done + chunk) + 1):
            m = plan.step_metrics[step - 1]
            text = f"Step {step}/{plan.total_steps}: training loss={m['train_loss']:.2f}"
            if "valid_loss" in m:
                text += f", validation loss={m['valid_loss']:.2f}"
            self._event(job, text, type="metrics", data={**m, "total_steps": plan.total_steps})
            if step in plan.checkpoint_steps:
                name = f"{self._ft_name(job)}:ckpt-step-{step}"
                ckpt_metrics = {k: float(v) for k, v in m.items()}
                ckpt_metrics.setdefault("valid_loss", m["train_loss"] + 0.1)
                ckpt_metrics.setdefault("valid_mean_token_accuracy", m["train_mean_token_accuracy"] - 0.03)
                job.checkpoints.append(Checkpoint("ftckpt_" + self._token(24), self._now(), step, name,
                                                  ckpt_metrics, job.id))
                self.fine_tuned_models[name] = job
                self._event(job, f"Checkpoint created at step {step}")
            job.steps_done = step
        if job.steps_done >= plan.total_steps:
            self._succeed(job)

    def _succeed(self, job: Job) -> None:
        plan = job.plan
        assert plan is not None
        data = results_csv(plan)
        result = self._store_file("step_metrics.csv", "fine-tune-results",
                                  base64.b64encode(data) if self.results_base64 else data)
        job.fine_tuned_model = self._ft_name(job)
        self.fine_tuned_models[job.fine_tuned_model] = job
        job.status, job.finished_at, job.estimated_finish = "succeeded", self._now(), None
        job.trained_tokens, job.result_files = plan.trained_tokens, [result.id]
        self._event(job, f"New fine-tuned model created: {job.fine_tuned_model}")
        self._event(job, "Evaluating model against our usage policies")
        self._event(job, "Usage policy evaluations completed, model is now enabled for sampling")
        self._event(job, "The job has successfully completed")

    # ---- models

    def _delete_model(self, model: str, *, query: dict, body: Any) -> dict[str, Any]:
        job = self.fine_tuned_models.get(model)
        if job is None or model in self.deleted_models or model != job.fine_tuned_model:
            if model in BASE_MODELS:
                raise ApiError(403, f"You have insufficient permissions to delete model {model}: only fine-tuned "
                               "models owned by your organization can be deleted.", code="insufficient_permissions")
            raise _not_found(f"The model `{model}` does not exist or you do not have access to it.",
                             param="model", code="model_not_found")
        self.deleted_models.add(model)
        return {"id": model, "object": "model", "deleted": True}

    # ---- chat completions

    def _learned(self, model: str, question: str) -> str | None:
        """What a fine-tuned model recalls for a question at its step (a checkpoint's, else the last; see
        `recalled`): the answer of the same question in its training or validation file, else of the most similar
        one when their words overlap by `ft_match_threshold`. None for a base model or an unknown question."""
        job = self.fine_tuned_models.get(model)
        if job is None or job.plan is None:
            return None
        plan = job.plan
        step = int(m[1]) if (m := re.search(r":ckpt-step-(\d+)$", model)) else plan.total_steps
        wanted = _normalize_question(question)
        best, best_score = None, 0.0
        words = set(wanted.split())
        known = [(pair, True) for pair in plan.qa_pairs] + [(pair, False) for pair in plan.valid_pairs]
        for (asked, answer), memorised in known:
            norm = _normalize_question(asked)
            if norm == wanted:
                return recalled(answer, step, plan, memorised=memorised)
            other = set(norm.split())
            score = len(words & other) / len(words | other) if words | other else 0.0
            if score > best_score:
                best, best_score = answer, score
        if best is None or best_score < self.ft_match_threshold:
            return None
        return recalled(best, step, plan, memorised=False)

    def _embeddings(self, *, query: dict, body: Any) -> dict[str, Any]:
        """POST /v1/embeddings, checked against tests/embeddings_schema.json and the API's limits; the vectors
        are `embedding_vector`'s, as float lists or (encoding_format base64, the SDK's default) base64 of
        little-endian float32."""
        if not isinstance(body, dict):
            raise _bad(f"Invalid type for 'body': expected an object, but got {_type_word(body)} instead.",
                       code="invalid_type")
        if body.get("input") in ("", []):
            raise _bad("'$.input' is invalid. Please check the API reference: "
                       "https://platform.openai.com/docs/api-reference.")
        error = best_match(_embeddings_validator("CreateEmbeddingRequest").iter_errors(body))
        if error is not None and list(error.absolute_path) == ["input"] and error.validator == "anyOf":
            error = _input_error(body["input"], error)  # the branch of the array's kind says what is wrong
        if error is not None:
            message, param, code = describe_validation_error(error)
            raise _bad(message, param=param, code=code)
        model, given = body["model"], body["input"]
        if model not in EMBEDDING_MODELS:
            raise _not_found(f"The model `{model}` does not exist or you do not have access to it.",
                             code="model_not_found")
        dimensions = body.get("dimensions", EMBEDDING_MODELS[model])
        if "dimensions" in body and not model.startswith("text-embedding-3"):
            raise _bad("This model does not support specifying dimensions.", param="dimensions")
        if dimensions > EMBEDDING_MODELS[model]:
            raise _bad(f"Invalid value for 'dimensions' = {dimensions}. Must be less than or equal to "
                       f"{EMBEDDING_MODELS[model]}.", param="dimensions")
        if isinstance(given, str) or (given and isinstance(given[0], int)):
            given = [given]
        texts = [item if isinstance(item, str) else " ".join(map(str, item)) for item in given]
        if any(t == "" for t in texts):
            raise _bad("'$.input' is invalid. Please check the API reference: "
                       "https://platform.openai.com/docs/api-reference.")
        tokens = [count_tokens(t) if isinstance(item, str) else len(item) for t, item in zip(texts, given)]
        if max(tokens) > EMBEDDING_INPUT_TOKENS:
            raise _bad(f"This model's maximum context length is {EMBEDDING_INPUT_TOKENS} tokens, however you "
                       f"requested {max(tokens)} tokens ({max(tokens)} in your prompt; 0 for the completion). "
                       "Please reduce your prompt; or completion length.")
        if sum(tokens) > EMBEDDING_REQUEST_TOKENS:
            raise _bad(f"Requested {sum(tokens)} tokens, max {EMBEDDING_REQUEST_TOKENS} tokens per request",
                       param="input")
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for i, text in enumerate(texts):
            vector = embedding_vector(text, dimensions)
            data.append({"object": "embedding", "index": i, "embedding": base64.b64encode(
                struct.pack(f"<{dimensions}f", *vector)).decode() if as_base64 else vector})
        result = {"object": "list", "data": data, "model": model,
                  "usage": {"prompt_tokens": sum(tokens), "total_tokens": sum(tokens)}}
        error = best_match(_embeddings_validator("CreateEmbeddingResponse").iter_errors(result))
        if error is not None:
            self.schema_violations.append(f"POST /embeddings -> CreateEmbeddingResponse: {error.message}")
        return result

    def _chat_completion(self, *, query: dict, body: Any) -> Any:
        validate_request("CreateChatCompletionRequest", body)
        model = body["model"]
        known = model in BASE_MODELS or (model in self.fine_tuned_models and model not in self.deleted_models)
        if model == JUDGE_MODEL:
            return self._completion(model, body["messages"], [(judged(_text_of(body["messages"][-1]["content"])),
                                                               "stop")])
        if not known:
            raise _not_found(f"The model `{model}` does not exist or you do not have access to it.",
                             code="model_not_found")
        if body.get("top_logprobs") is not None and not body.get("logprobs"):
            raise _bad("Invalid 'top_logprobs': 'logprobs' must be set to true when 'top_logprobs' is used.",
                       param="top_logprobs")
        for key in ("max_completion_tokens", "max_tokens"):  # a minimum the spec does not state; the API does
            if isinstance(body.get(key), int) and body[key] < 1:
                raise _bad(f"Invalid '{key}': integer below minimum value. Expected a value >= 1, but got "
                           f"{body[key]} instead.", param=key, code="integer_below_min_value")
        messages = body["messages"]
        question = next((_text_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
        learned = self._learned(model, question) or from_context(messages, question)
        temperature = 1 if body.get("temperature") is None else body["temperature"]  # the API's defaults
        top_p = 1 if body.get("top_p") is None else body["top_p"]
        cap = body.get("max_completion_tokens") or body.get("max_tokens")
        choices: list[tuple[str, str]] = []  # (text, finish_reason)
        for i in range(body.get("n") or 1):
            answer = BASE_MODEL_REPLY if learned is None else learned if temperature == 0 else sampled(
                learned, temperature, top_p, _seeded(model, messages, temperature, top_p, i))
            finish = "stop"
            if cap is not None and count_tokens(answer) > cap:
                ends = [m.end() for m in re.finditer(r"\w+|[^\w\s]", answer)]
                answer, finish = answer[: ends[cap - 1]], "length"
            choices.append((answer, finish))
        prompt_tokens = sum(count_tokens(_text_of(m.get("content"))) + 3 for m in messages) + 3
        completion_tokens = sum(count_tokens(answer) for answer, _ in choices)
        usage = {
            "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
        }
        if body.get("stream"):
            completion_id, created = "chatcmpl-" + self._token(29), self._now()
            return "text/event-stream", self._stream(completion_id, created, model, choices, usage,
                                                     bool((body.get("stream_options") or {}).get("include_usage")))
        return self._completion(model, messages, choices, usage)

    def _completion(self, model: str, messages: list[dict], choices: list[tuple[str, str]],
                    usage: dict | None = None) -> dict[str, Any]:
        if usage is None:
            prompt_tokens = sum(count_tokens(_text_of(m.get("content"))) + 3 for m in messages) + 3
            completion_tokens = sum(count_tokens(answer) for answer, _ in choices)
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                     "total_tokens": prompt_tokens + completion_tokens}
        completion_id, created = "chatcmpl-" + self._token(29), self._now()
        return {
            "id": completion_id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": i, "message": {"role": "assistant", "content": answer, "refusal": None,
                                                 "annotations": []},
                         "logprobs": None, "finish_reason": finish} for i, (answer, finish) in enumerate(choices)],
            "usage": usage, "service_tier": "default", "system_fingerprint": "fp_fake0000",
        }

    @staticmethod
    def _stream(cid: str, created: int, model: str, answers: list[tuple[str, str]], usage: dict,
                include_usage: bool) -> bytes:
        def chunk(choices: list[dict], **extra: Any) -> bytes:
            payload = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                       "system_fingerprint": "fp_fake0000", "choices": choices, **extra}
            return b"data: " + json.dumps(payload).encode() + b"\n\n"

        out = b""
        for i, (answer, finish) in enumerate(answers):
            out += chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
            for piece in re.findall(r"\S+\s*", answer):
                out += chunk([{"index": i, "delta": {"content": piece}, "finish_reason": None}])
            out += chunk([{"index": i, "delta": {}, "finish_reason": finish}])
        if include_usage:
            out += chunk([], usage=usage)
        return out + b"data: [DONE]\n\n"


_RESPONSE_COMPONENTS = {
    ("POST", r"/files"): "OpenAIFile",
    ("GET", r"/files"): "ListFilesResponse",
    ("GET", r"/files/([^/]+)"): "OpenAIFile",
    ("DELETE", r"/files/([^/]+)"): "DeleteFileResponse",
    ("POST", r"/uploads"): "Upload",
    ("POST", r"/uploads/([^/]+)/parts"): "UploadPart",
    ("POST", r"/uploads/([^/]+)/complete"): "Upload",
    ("POST", r"/uploads/([^/]+)/cancel"): "Upload",
    ("POST", r"/fine_tuning/jobs"): "FineTuningJob",
    ("GET", r"/fine_tuning/jobs"): "ListPaginatedFineTuningJobsResponse",
    ("GET", r"/fine_tuning/jobs/([^/]+)"): "FineTuningJob",
    ("GET", r"/fine_tuning/jobs/([^/]+)/events"): "ListFineTuningJobEventsResponse",
    ("GET", r"/fine_tuning/jobs/([^/]+)/checkpoints"): "ListFineTuningJobCheckpointsResponse",
    ("POST", r"/fine_tuning/jobs/([^/]+)/cancel"): "FineTuningJob",
    ("POST", r"/fine_tuning/jobs/([^/]+)/pause"): "FineTuningJob",
    ("POST", r"/fine_tuning/jobs/([^/]+)/resume"): "FineTuningJob",
    ("DELETE", r"/models/(.+)"): "DeleteModelResponse",
}
