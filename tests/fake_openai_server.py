"""A real HTTP server that speaks enough of the OpenAI chat API to test coaches without a model.

It runs ``http.server`` on 127.0.0.1 (random port) in a background thread, answers ``POST /v1/chat/completions``
and ``GET /v1/models``, and records every request body. Behaviour is injectable per request: a function
``behaviour(body, index) -> Reply`` decides each answer (text, HTTP status, delay, dropped connection, raw body),
and ``accepted_formats`` mimics servers that reject some ``response_format`` types — llama.cpp server 0.3.36
answers ``json_schema`` with HTTP 500 "Input should be 'text' or 'json_object'".
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """One answer. ``text`` is the assistant message; ``status`` != 200 sends ``error`` as an OpenAI error body;
    ``delay_s`` sleeps first (interrupted by shutdown); ``drop`` closes the connection without answering; ``raw``
    sends these bytes as the body verbatim."""

    text: str | None = '{"rationale": "fine", "score": 7}'
    status: int = 200
    error: str = ""
    delay_s: float = 0.0
    drop: bool = False
    raw: bytes | None = None
    content_type: str = "application/json"


def judgement(score: Any = 7, rationale: str = "fine") -> Reply:
    return Reply(text=json.dumps({"rationale": rationale, "score": score}))


LLAMACPP_JSON_SCHEMA_ERROR = (
    "1 validation error for CreateChatCompletionRequest\nresponse_format.type\n"
    "  Input should be 'text' or 'json_object' [type=literal_error, input_value='json_schema', input_type=str]"
)


@dataclass
class Request:
    index: int
    body: dict[str, Any]
    received_at: float

    @property
    def format_type(self) -> str:
        rf = self.body.get("response_format") or {}
        return rf.get("type", "text") if isinstance(rf, dict) else "text"

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self.body.get("messages", [])


@dataclass
class FakeOpenAIServer:
    """Start with ``with FakeOpenAIServer() as srv:``; point a client at ``srv.base_url``."""

    behaviour: Callable[[dict[str, Any], int], Reply] | None = None
    replies: list[Reply] = field(default_factory=list)
    latency_s: float = 0.0
    accepted_formats: tuple[str, ...] = ("text", "json_object", "json_schema")
    model: str = "fake-coach"
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.in_flight = 0
        self.max_in_flight = 0

    # --------------------------------------------------------------------------------------------- control

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeOpenAIServer:
        server = _Server(("127.0.0.1", 0), _handler(self))
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def chat_requests(self) -> list[Request]:
        with self._lock:
            return list(self.requests)

    # --------------------------------------------------------------------------------------------- serving

    def _decide(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            index = len(self.requests)
            self.requests.append(Request(index, body, time.monotonic()))
        fmt = Request(index, body, 0.0).format_type
        if fmt not in self.accepted_formats:
            return Reply(status=500, error=LLAMACPP_JSON_SCHEMA_ERROR)
        if self.behaviour is not None:
            return self.behaviour(body, index)
        if self.replies:
            with self._lock:
                return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        return Reply()

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stop.wait(seconds)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # listen() backlog; the default 5 drops SYNs from 16 concurrent clients for 1 s


def _handler(srv: FakeOpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
            return

        def _send(
            self, status: int, payload: dict[str, Any] | bytes, content_type: str = "application/json"
        ) -> None:
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path.rstrip("/") in ("/v1/models", "/models"):
                self._send(
                    200, {"object": "list", "data": [{"id": srv.model, "object": "model", "owned_by": "t"}]}
                )
            else:
                self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
                self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
                return
            try:
                body = json.loads(raw)
            except ValueError:
                self._send(400, {"error": {"message": "body is not JSON", "type": "invalid_request_error"}})
                return
            with srv._lock:
                srv.in_flight += 1
                srv.max_in_flight = max(srv.max_in_flight, srv.in_flight)
            try:
                reply = srv._decide(body)
                srv._sleep(srv.latency_s + reply.delay_s)
                if srv._stop.is_set():
                    return
                if reply.drop:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if reply.raw is not None:
                    self._send(reply.status, reply.raw, reply.content_type)
                elif reply.status != 200:
                    self._send(
                        reply.status,
                        {
                            "error": {
                                "message": reply.error or "fake error",
                                "type": "server_error",
                                "code": reply.status,
                            }
                        },
                    )
                else:
                    self._send(200, _completion(body, reply.text, srv.model))
            finally:
                with srv._lock:
                    srv.in_flight -= 1

    return Handler


def _completion(body: dict[str, Any], text: str | None, model: str) -> dict[str, Any]:
    prompt_chars = sum(len(str(m.get("content", ""))) for m in body.get("messages", []))
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": body.get("model", model),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_chars // 4,
            "completion_tokens": len(text or "") // 4,
            "total_tokens": prompt_chars // 4 + len(text or "") // 4,
        },
    }


def closed_port() -> int:
    """A local port with nothing listening (bound then released): connections to it are refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
