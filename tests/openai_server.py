"""A local, stdlib-only fake of the OpenAI HTTP API, so tests drive the real `openai` SDK and `OpenAIChatModel`.

`FakeOpenAIServer` answers `POST /v1/chat/completions` (JSON, or SSE for `stream: true`) and `POST /v1/responses`
(JSON only) on 127.0.0.1. Each request takes the next scripted reply (`server.script(...)`), else the default
responder's (`server.respond_with(fn)`; by default it echoes the last user message). A reply is a `Reply`, a chat
completion dict (status 200), or a callable taking the request JSON and returning one of those. Replies are written
in Chat Completions form: the server fills a missing `model` with the dated name of the requested model and rewrites
the reply as SSE chunks or as a Responses API object when the request needs that. Every request is recorded in
`server.requests`. The server speaks HTTP/1.0, so no connection (or socket) outlives its response.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx2
import pytest
from openai import AsyncOpenAI
from pydantic_ai import models
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

JSON = dict[str, Any]
DATED_MODELS = {"gpt-4o-mini": "gpt-4o-mini-2024-07-18", "gpt-4o": "gpt-4o-2024-08-06", "gpt-4.1": "gpt-4.1-2025-04-14"}
ROUTES = ("/v1/chat/completions", "/v1/responses")
_ids = itertools.count(1)


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: Any  # the parsed JSON, or None


Responder = Callable[[JSON], "Reply | JSON"]
ScriptItem = Reply | JSON | Responder


def usage(prompt_tokens: int = 10, completion_tokens: int = 5, cached_tokens: int = 0) -> JSON:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }


def completion(message: JSON, finish_reason: str, model: str | None = None, usage_: JSON | None = None) -> JSON:
    """A chat completion; `model=None` is answered with the dated name of the requested model."""
    choice = {"index": 0, "message": {"role": "assistant", "refusal": None, **message}, "finish_reason": finish_reason}
    return {
        "id": f"chatcmpl-{next(_ids)}", "object": "chat.completion", "created": 1_700_000_000, "model": model,
        "choices": [choice | {"logprobs": None}], "usage": usage_ or usage(), "system_fingerprint": "fp_fake",
    }  # fmt: skip


def text_reply(text: str, model: str | None = None, *, usage: JSON | None = None) -> JSON:
    return completion({"content": text}, "stop", model, usage)


def tool_call_reply(
    name: str, args: Mapping[str, Any], model: str | None = None, *, call_id: str = "", usage: JSON | None = None
) -> JSON:
    function = {"name": name, "arguments": json.dumps(args)}
    call = {"id": call_id or f"call_{next(_ids)}", "type": "function", "function": function}
    return completion({"content": None, "tool_calls": [call]}, "tool_calls", model, usage)


def output_reply(args: Mapping[str, Any], model: str | None = None) -> Responder:
    """Structured output: JSON text if the request has a `response_format`, else a call to its output tool."""

    def respond(request: JSON) -> JSON:
        if (request.get("response_format") or {}).get("type") in ("json_schema", "json_object"):
            return text_reply(json.dumps(args), model)
        names = [t["function"]["name"] for t in request.get("tools", []) if t.get("type") == "function"]
        return tool_call_reply(next((n for n in names if n.startswith("final_result")), "final_result"), args, model)

    return respond


def error_reply(
    status: int, message: str, code: str | None = None, headers: Mapping[str, str] | None = None, *, type: str = ""
) -> Reply:
    """An OpenAI-style error, e.g. `error_reply(429, 'Slow down', 'rate_limit_exceeded', {'retry-after-ms': '1'})`."""
    type = type or ("requests" if status == 429 else "invalid_request_error" if status < 500 else "server_error")
    error = {"message": message, "type": type, "param": None, "code": code}
    return Reply(status, {"error": error}, dict(headers or {}))


def last_user_text(request: JSON) -> str:
    messages = request.get("messages") or request.get("input") or []
    if isinstance(messages, str):
        return messages
    messages = [m for m in messages if m.get("role") == "user"]
    content = messages[-1].get("content", "") if messages else ""
    if isinstance(content, list):
        content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)


def echo_responder(request: JSON) -> JSON:
    return text_reply(f"echo: {last_user_text(request)}")


def _sse_chunks(body: JSON, include_usage: bool) -> Iterator[JSON]:
    base = {k: body[k] for k in ("id", "created", "model", "system_fingerprint")} | {"object": "chat.completion.chunk"}
    choice = body["choices"][0]

    def chunk(delta: JSON, finish_reason: str | None = None) -> JSON:
        return base | {"choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}

    yield chunk({"role": "assistant", "content": ""})
    text = choice["message"].get("content") or ""
    for piece in (text[: len(text) // 2], text[len(text) // 2 :]) if text else ():
        yield chunk({"content": piece})
    for i, call in enumerate(choice["message"].get("tool_calls") or []):
        yield chunk({"tool_calls": [call | {"index": i}]})
    yield chunk({}, choice["finish_reason"])
    if include_usage:
        yield base | {"choices": [], "usage": body["usage"]}


def _to_response(body: JSON) -> JSON:
    """A chat completion rewritten as a Responses API object."""
    message, u = body["choices"][0]["message"], body["usage"]
    output: list[JSON] = [
        {"type": "function_call", "id": f"fc_{next(_ids)}", "call_id": c["id"], "status": "completed", **c["function"]}
        for c in message.get("tool_calls") or []
    ]
    if message.get("content"):
        text = {"type": "output_text", "text": message["content"], "annotations": []}
        output.insert(0, {"type": "message", "id": f"msg_{next(_ids)}", "status": "completed", "role": "assistant",
                          "content": [text]})  # fmt: skip
    usage_ = {
        "input_tokens": u["prompt_tokens"], "output_tokens": u["completion_tokens"], "total_tokens": u["total_tokens"],
        "input_tokens_details": {"cached_tokens": u["prompt_tokens_details"]["cached_tokens"]},
        "output_tokens_details": {"reasoning_tokens": 0},
    }  # fmt: skip
    return {"id": f"resp_{next(_ids)}", "object": "response", "created_at": body["created"], "status": "completed",
            "model": body["model"], "output": output, "usage": usage_, "parallel_tool_calls": True,
            "tool_choice": "auto", "tools": [], "error": None, "incomplete_details": None}  # fmt: skip


class FakeOpenAIServer:
    """`with FakeOpenAIServer() as server:` serves on `server.url`; the SDK's base URL is `server.base_url`."""

    def __init__(self, *, keep_alive: bool = False) -> None:
        """`keep_alive`: speak HTTP/1.1 and keep connections open, as real providers do (clients then pool them)."""
        self._lock = threading.Lock()
        self._script: deque[ScriptItem] = deque()
        self._requests: list[RecordedRequest] = []
        self._default: Responder = echo_responder
        self._clients: list[AsyncOpenAI] = []
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self, keep_alive))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fake-openai", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def __enter__(self) -> FakeOpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)

    def script(self, *replies: ScriptItem) -> None:
        """Queue replies, used one per request in order, before the default responder."""
        with self._lock:
            self._script.extend(replies)

    def respond_with(self, responder: Responder) -> None:
        """Set the default responder, used while the script is empty."""
        with self._lock:
            self._default = responder

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def pending(self) -> int:
        """Scripted replies not used yet."""
        with self._lock:
            return len(self._script)

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self._requests.clear()
            self._default = echo_responder

    def client(self, *, api_key: str = "sk-test-SECRET", max_retries: int = 0) -> AsyncOpenAI:
        """An SDK client for this server, closed by `aclose_clients()` (the `openai_server` fixture calls it)."""
        http_client = httpx2.AsyncClient()
        client = AsyncOpenAI(base_url=self.base_url, api_key=api_key, max_retries=max_retries, http_client=http_client)
        with self._lock:
            self._clients.append(client)
        return client

    async def aclose_clients(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            await client.close()

    def _answer(self, request: RecordedRequest) -> Reply:
        with self._lock:
            self._requests.append(request)
            if request.method != "POST" or request.path not in ROUTES:
                return error_reply(404, f"Unknown route {request.method} {request.path}", "unknown_url")
            if not isinstance(request.body, dict):
                return error_reply(400, "The request body is not a JSON object")
            if request.path == "/v1/responses" and request.body.get("stream"):
                return error_reply(400, "The fake server does not stream /v1/responses")
            item = self._script.popleft() if self._script else self._default
        try:
            reply = item(request.body) if callable(item) else item
        except Exception as e:  # noqa: BLE001 - a broken responder answers 500 instead of dropping the connection
            return error_reply(500, f"The fake server's responder raised {e!r}", "fake_responder_error")
        reply = reply if isinstance(reply, Reply) else Reply(200, reply)
        body = reply.body
        if reply.status == 200 and isinstance(body, dict) and body.get("object") == "chat.completion":
            model = str(request.body.get("model"))
            body = body if body.get("model") else body | {"model": DATED_MODELS.get(model, model)}
            reply = Reply(200, _to_response(body) if request.path == "/v1/responses" else body, reply.headers)
        return reply


def _make_handler(server: FakeOpenAIServer, keep_alive: bool) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"

        def handle(self) -> None:
            try:
                super().handle()
            except (ConnectionResetError, BrokenPipeError):  # a client dropped a kept-alive connection
                pass

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            headers = {k.lower(): v for k, v in self.headers.items()}
            reply = server._answer(RecordedRequest(self.command, self.path, headers, body))
            self.send_response(reply.status)
            for key, value in reply.headers.items():
                self.send_header(key, value)
            if reply.status == 200 and isinstance(body, dict) and body.get("stream") is True:
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")  # the stream ends with the connection
                self.close_connection = True
                self.end_headers()
                for chunk in _sse_chunks(reply.body, bool((body.get("stream_options") or {}).get("include_usage"))):
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.write(b"data: [DONE]\n\n")
                return
            data = json.dumps(reply.body).encode()
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_DELETE = do_POST

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def openai_model(
    server: FakeOpenAIServer, model_name: str = "gpt-4o-mini", *, api_key: str = "sk-test-SECRET", max_retries: int = 0
) -> OpenAIChatModel:
    """The real `OpenAIChatModel` on `server`, through the real SDK making up to `max_retries` retries itself."""
    client = server.client(api_key=api_key, max_retries=max_retries)
    return OpenAIChatModel(model_name, provider=OpenAIProvider(openai_client=client))


@pytest.fixture(scope="session")
def openai_server_session() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
async def openai_server(openai_server_session: FakeOpenAIServer) -> AsyncIterator[FakeOpenAIServer]:
    """The session's server, emptied, with model requests allowed during the test; closes the test's SDK clients."""
    openai_server_session.reset()
    try:
        with models.override_allow_model_requests(True):
            yield openai_server_session
    finally:
        await openai_server_session.aclose_clients()
        openai_server_session.reset()
