"""A small JSON-over-HTTPS client for the fine-tuning services that have no SDK here (Together, Fireworks).

Standard library only (urllib): bearer auth from a key the caller read from the environment, retries of 429,
5xx and lost connections with backoff (honouring Retry-After), and every failure raised as our ApiError or
TransientError carrying the service's own message with the key scrubbed out.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

from finetune.backend import ApiError, ChatReply, MissingCredentials, TransientError

if TYPE_CHECKING:
    from configs import SamplingConfig


def api_key(env: Mapping[str, str], name: str, service: str) -> str:
    """The key from the variable `name`, or a one-line error saying which variable to set."""
    key = env.get(name, "").strip()
    if not key:
        raise MissingCredentials(f"no API key for {service}: export {name}=… (or name another variable in "
                                 "finetune.api_key_env) and run the command again; keys are never read from files")
    return key


@dataclass(frozen=True)
class Rest:
    base_url: str
    timeout: float
    max_retries: int
    service: str
    key: str = field(repr=False)

    def _scrub(self, text: str) -> str:
        return text.replace(self.key, "***") if len(self.key) >= 8 else text  # an empty key: none sent

    def request(self, method: str, path: str, *, body: Any = None, query: Mapping[str, Any] | None = None,
                data: bytes | None = None, content_type: str | None = None, what: str = "",
                sleep=time.sleep) -> Any:
        """JSON in and out (`data` + `content_type` send raw bytes instead); returns the decoded body, or the raw
        bytes of a non-JSON answer."""
        url = self.base_url.rstrip("/") + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        if body is not None:
            data, content_type = json.dumps(body).encode("utf-8"), "application/json"
        headers = {"Accept": "application/json", **({"Authorization": f"Bearer {self.key}"} if self.key else {})}
        if content_type:
            headers["Content-Type"] = content_type
        what = what or f"{method} {path}"
        for attempt in range(self.max_retries + 1):
            req = urllib.request.Request(url, data=data, method=method, headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    raw = resp.read()
                    if "json" in (resp.headers.get("content-type") or ""):
                        return json.loads(raw) if raw else None
                    return raw
            except urllib.error.HTTPError as exc:
                status, payload = exc.code, exc.read()
                retry_after = exc.headers.get("retry-after")
                transient = status == 429 or status >= 500
                if transient and attempt < self.max_retries:
                    sleep(float(retry_after) if retry_after and retry_after.isdigit() else 0.5 * 2 ** attempt)
                    continue
                message, code = _error_of(payload)
                kind = TransientError if transient else ApiError
                raise kind(self._scrub(f"{what} failed (HTTP {status}{', ' + code if code else ''}): {message}"),
                           status=status, code=code) from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                if attempt < self.max_retries:
                    sleep(0.5 * 2 ** attempt)
                    continue
                raise TransientError(f"{what} failed: cannot reach {self.service} at {self.base_url} after "
                                     f"{self.max_retries} retries ({' '.join(str(exc).split())}); check the network "
                                     "and finetune.base_url") from None
        raise AssertionError("unreachable")

    def upload(self, path: str, fields: Mapping[str, str], *, file_field: str, filename: str, content: bytes,
               what: str) -> Any:
        """A multipart/form-data POST of `fields` and one file."""
        boundary = uuid.uuid4().hex
        parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                 for k, v in fields.items()]
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{filename}"'
                     f'\r\nContent-Type: application/jsonl\r\n\r\n'.encode() + content + b"\r\n")
        parts.append(f"--{boundary}--\r\n".encode())
        return self.request("POST", path, data=b"".join(parts), what=what,
                            content_type=f"multipart/form-data; boundary={boundary}")


def _error_of(payload: bytes) -> tuple[str, str | None]:
    """The service's message (and code) from its error body, whatever of the usual shapes it takes."""
    try:
        body = json.loads(payload)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return " ".join(payload.decode("utf-8", "replace").split())[:300] or "no message", None
    error = body.get("error", body) if isinstance(body, dict) else {}
    if isinstance(error, str):
        return error, None
    message = error.get("message") or body.get("message") or json.dumps(body)[:300]
    code = error.get("code") or error.get("type")
    return " ".join(str(message).split()), str(code) if code is not None else None


def chat_completions(rest: Rest, path: str, model: str, messages: list[dict[str, Any]],
                     sampling: SamplingConfig) -> list[ChatReply]:
    """`sampling.n` answers from an OpenAI-compatible chat-completions route (Together, Fireworks, vLLM, Ollama,
    llama.cpp's server …)."""
    body: dict[str, Any] = {"model": model, "messages": messages, "n": sampling.n,
                            "temperature": sampling.temperature, "top_p": sampling.top_p,
                            "frequency_penalty": sampling.frequency_penalty,
                            "presence_penalty": sampling.presence_penalty}
    if sampling.max_tokens:
        body["max_tokens"] = sampling.max_tokens
    reply = rest.request("POST", path, body=body, what=f"asking {model}")
    usage = reply.get("usage") or {}
    choices = sorted(reply.get("choices") or [], key=lambda c: c.get("index", 0))
    return [ChatReply(text=(c.get("message") or {}).get("content") or "", finish_reason=c.get("finish_reason"),
                      prompt_tokens=usage.get("prompt_tokens"),
                      completion_tokens=usage.get("completion_tokens") if len(choices) == 1 else None)
            for c in choices]
