"""A fake OpenAI-compatible chat server on 127.0.0.1 that answers `generate`'s prompts from the section it is sent.

Every POST /v1/chat/completions is checked against the documented request (CreateChatCompletionRequest from
tests/openai_schemas.json, response_format from tests/chat_schemas.json with Structured Outputs' strict-mode
rules); a bad one is answered 400 and listed in `schema_violations`. The reply's pairs quote the section's own
sentences, so they are grounded. Faults are planted per section (a substring of its heading → the faults of its
successive requests, `+` joining faults of one reply): 429 (with retry-after-ms), 500, timeout (answers after `slow_seconds`), garbage (no JSON),
fenced, think, around (prose around the JSON), and the bad pairs added to a good reply: invented (evidence
the section does not hold), english (an English answer to a Korean section), duplicate (the first question again),
vague (a grounded pair with a question too short to be useful, which the judge scores 2). A judge's request (its
user message holds the pairs between <pairs> tags) is answered with scores and consumes no fault.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema.exceptions import best_match

from fake_openai import ApiError, validate_request

CHAT_SCHEMAS = json.loads(Path(__file__).with_name("chat_schemas.json").read_text(encoding="utf-8"))
INVENTED = "이 설정은 관리자 콘솔에서만 바꿀 수 있으며 변경 후 반드시 서버를 재시작해야 합니다."
ENGLISH = "The default value is documented in this section and applies to every channel of the adapter."
_SECTION = re.compile(r"<section>\n(.*)\n</section>", re.DOTALL)
_HEADING = re.compile(r"^(?:문서|Document): (.+)$", re.MULTILINE)
_COUNT = re.compile(r"질문 (\d+)개|Write (\d+) questions")
_PAIRS = re.compile(r"<pairs>\n(.*)\n</pairs>", re.DOTALL)
_JUDGED = re.compile(r"^\[(\d+)\] Q: (.*)$", re.MULTILINE)
VAGUE = "이건 뭐야?"  # the judge scores a question this short 2 for usefulness


def sentences(text: str) -> list[str]:
    """The section's lines of prose and table rows (no headings, code or table rules), list markers stripped:
    what pairs quote."""
    out, code = [], False
    for line in text.split("\n"):
        if line.lstrip().startswith(("```", "~~~")):
            code = not code
            continue
        line = re.sub(r"^\s*(?:[-*+]|\d+\.)\s+", "", line).strip()
        if not code and len(line) >= 12 and not line.startswith(("#", ">")) and not re.fullmatch(r"[|:\-\s]+", line):
            out.append(line)
    return out


def _strict_problems(schema: Any, where: str = "schema") -> list[str]:
    """Structured Outputs' strict mode: every object lists all its properties as required, allows no others."""
    problems = []
    if isinstance(schema, dict):
        if schema.get("type") == "object":
            props = set(schema.get("properties", {}))
            if schema.get("additionalProperties") is not False:
                problems.append(f"{where}: additionalProperties must be false")
            if set(schema.get("required", [])) != props:
                problems.append(f"{where}: required must list every property")
        for key, value in schema.items():
            if isinstance(value, (dict, list)):
                problems += _strict_problems(value, f"{where}.{key}")
    elif isinstance(schema, list):
        for i, value in enumerate(schema):
            problems += _strict_problems(value, f"{where}[{i}]")
    return problems


@dataclass
class Received:
    heading: str
    section: str
    body: dict[str, Any]
    at: float
    judge: bool = False  # a judge's request (it consumes no faults)


class FakeChat:
    """Use as a context manager; `base_url` for the SDK, `requests` for what arrived (each attempt counted)."""

    def __init__(self, *, api_key: str = "sk-test-chat", latency: float = 0.0, slow_seconds: float = 3.0,
                 faults: dict[str, list[str]] | None = None, refuse_response_format: bool = False):
        self.api_key = api_key
        self.latency = latency
        self.slow_seconds = slow_seconds
        self.faults = {k: list(v) for k, v in (faults or {}).items()}
        self.refuse_response_format = refuse_response_format
        self.requests: list[Received] = []
        self.schema_violations: list[str] = []
        self.planted: list[dict[str, Any]] = []  # the bad pairs sent, for the test to look for
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.in_flight = self.max_in_flight = 0

    # -- lifecycle

    def __enter__(self) -> "FakeChat":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                status, headers, payload = fake._answer(self.path, self.headers.get("authorization", ""), body)
                try:
                    self.send_response(status)
                    for k, v in {"content-type": "application/json", **headers}.items():
                        self.send_header(k, v)
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:  # the client timed out and went away
                    pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    # -- answering

    def _answer(self, path: str, auth: str, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        try:
            if path.rstrip("/") != "/v1/chat/completions":
                raise ApiError(404, f"Invalid URL (POST {path})")
            if auth != f"Bearer {self.api_key}":
                raise ApiError(401, "Incorrect API key provided.", type="invalid_request_error", code="invalid_api_key")
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ApiError(400, "Invalid body: expected an object.")
            # response_format is a dangling ref in the spec extract: checked on its own against chat_schemas.json
            validate_request("CreateChatCompletionRequest", {k: v for k, v in body.items() if k != "response_format"})
            self._check_response_format(body.get("response_format"))
            return self._reply(body)
        except ApiError as exc:
            if exc.status == 400:
                with self._lock:
                    self.schema_violations.append(exc.message)
            return exc.status, exc.headers, json.dumps(exc.body()).encode()

    def _check_response_format(self, fmt: Any) -> None:
        if fmt is None:
            return
        if self.refuse_response_format:
            raise ApiError(400, "Invalid parameter: 'response_format' of type 'json_schema' is not supported with "
                           "this model.", param="response_format")
        kinds = {"text": "ResponseFormatText", "json_object": "ResponseFormatJsonObject",
                 "json_schema": "ResponseFormatJsonSchema"}
        kind = kinds.get(fmt.get("type")) if isinstance(fmt, dict) else None
        if kind is None:
            raise ApiError(400, f"Invalid 'response_format.type': expected one of {', '.join(kinds)}.",
                           param="response_format.type")
        schema = CHAT_SCHEMAS["components"]["schemas"][kind]
        error = best_match(jsonschema.Draft202012Validator(schema).iter_errors(fmt))
        if error is not None:
            raise ApiError(400, f"Invalid 'response_format': {error.message}", param="response_format")
        if fmt["type"] == "json_schema" and fmt["json_schema"].get("strict"):
            problems = _strict_problems(fmt["json_schema"].get("schema", {}))
            if problems:
                raise ApiError(400, f"Invalid schema for response_format 'pairs': {problems[0]}",
                               param="response_format")

    def _reply(self, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        user = next(m["content"] for m in body["messages"] if m["role"] == "user")
        section = _SECTION.search(user)
        heading = _HEADING.search(user)
        text, title = (section.group(1) if section else ""), (heading.group(1) if heading else "")
        judged = _PAIRS.search(user)
        with self._lock:
            self.requests.append(Received(title, text, body, time.monotonic(), judge=bool(judged)))
            fault = "" if judged else next((self.faults[k].pop(0) for k in self.faults
                                            if k in title and self.faults[k]), "")
            kinds = set(fault.split("+"))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            time.sleep(self.latency)
            if "429" in kinds:
                raise ApiError(429, "Rate limit reached for requests", type="requests", code="rate_limit_exceeded",
                               headers={"retry-after-ms": "50", "retry-after": "1"})
            if "500" in kinds:
                raise ApiError(500, "The server had an error while processing your request.", type="server_error")
            if "timeout" in kinds:
                time.sleep(self.slow_seconds)
            counted = _COUNT.search(user)
            n = int(next(g for g in counted.groups() if g)) if counted else 3
            content = self._scores(judged.group(1)) if judged else self._content(text, title, n, kinds)
        finally:
            with self._lock:
                self.in_flight -= 1
        tokens_in = sum(len(m["content"]) for m in body["messages"]) // 2
        completion = {
            "id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion", "created": int(time.time()),
            "model": body["model"], "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": content, "refusal": None}}],
            "usage": {"prompt_tokens": tokens_in, "completion_tokens": len(content) // 2,
                      "total_tokens": tokens_in + len(content) // 2},
        }
        return 200, {}, json.dumps(completion, ensure_ascii=False).encode()

    @staticmethod
    def _scores(pairs: str) -> str:
        """The judge: every pair 5 for faithfulness, 4 for clarity, 5 for usefulness unless its question is
        shorter than 12 characters (then 2)."""
        return json.dumps({"scores": [{"index": int(i), "faithfulness": 5, "usefulness": 2 if len(q) < 12 else 5,
                                       "clarity": 4} for i, q in _JUDGED.findall(pairs)]}, ensure_ascii=False)

    def _content(self, text: str, title: str, n: int, kinds: set[str]) -> str:
        if "garbage" in kinds:
            return "죄송합니다, 지금은 답변을 만들 수 없습니다."
        korean = bool(re.search(r"[가-힣]", text))
        styles = ["factual", "procedure", "troubleshooting", "comparison", "yes_no"]
        pairs = []
        for i, line in enumerate(sentences(text)[:n]):
            gist = line[:70]
            question = f"{gist} 이 내용이 맞나요?" if korean else f"Is it true that {gist}?"
            pairs.append({"question": question,
                          "paraphrases": [f"{gist} 알려줘", f"{gist[:40]} 뭐임"] if korean else
                          [f"Tell me: {gist}", f"{gist[:40]}?"],
                          "answer": line, "evidence": [line], "style": styles[i % len(styles)]})
        bad = {"invented": {"question": f"{title} 설정은 어디에서 바꾸나요?", "paraphrases": [], "answer": INVENTED,
                            "evidence": [INVENTED], "style": "procedure"},
               "english": {"question": f"{title}의 기본값은 무엇인가요?", "paraphrases": [], "answer": ENGLISH,
                           "evidence": [pairs[0]["evidence"][0]] if pairs else [], "style": "factual"},
               "duplicate": dict(pairs[0], paraphrases=[]) if pairs else None,
               "vague": dict(pairs[0], question=VAGUE, paraphrases=[]) if pairs else None}
        for fault in sorted(kinds & set(bad)):
            with self._lock:
                self.planted.append(dict(bad[fault], fault=fault))
            pairs.append(bad[fault])
        payload = json.dumps({"pairs": pairs}, ensure_ascii=False)
        if "fenced" in kinds:
            return f"```json\n{payload}\n```"
        if "think" in kinds:
            return f"<think>The section is about {title}; I will quote it {{verbatim}}.</think>\n{payload}"
        if "around" in kinds:
            return f"Here are the pairs you asked for:\n{payload}\nI hope they help!"
        return payload
