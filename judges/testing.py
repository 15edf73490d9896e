"""A scriptable OpenAI-compatible chat server on loopback, for tests and offline dry runs.

It speaks just enough of ``POST /v1/chat/completions`` for the ``openai`` client, records every
request (body and headers) and the highest number of requests it served at once, so tests can
check retries, JSON-mode fallbacks, the concurrency bound and what was sent - over real HTTP.
Requests of the preflight (:mod:`llamavid_eval.judges.preflight`) are recorded apart, in
``preflight_calls``, so that ``calls`` counts judged items only.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from llamavid_eval.judges.backends.openai_compat import PREFLIGHT_HEADER


@dataclass
class Call:
    """One request as the server saw it; ``n`` counts from 0 in arrival order."""

    n: int
    body: dict[str, Any]
    headers: dict[str, str]

    @property
    def user_text(self) -> str:
        return next((m["content"] for m in self.body.get("messages", []) if m.get("role") == "user"), "")

    def field(self, label: str) -> str:
        """A line of the judge prompt, e.g. ``field("Predicted Answer")``."""
        m = re.search(rf"^{re.escape(label)}: (.*)$", self.user_text, re.MULTILINE)
        return m.group(1) if m else ""


@dataclass
class Response:
    status: int = 200
    content: str | None = None  # the assistant message for a 200; None with ``body`` for anything else
    body: Any = None
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    model: str | None = None  # the model the reply says answered; None: the one asked for
    finish_reason: str = "stop"  # "length": cut at max_tokens


def reply(content: str, delay: float = 0.0) -> Response:
    return Response(200, content=content, delay=delay)


def error(status: int, message: str = "error", delay: float = 0.0, **headers: str) -> Response:
    return Response(
        status, body={"error": {"message": message, "type": "test", "code": status}}, delay=delay, headers=headers
    )


def word_judge(call: Call) -> Response:
    """A default script: yes/5 when the reference answer occurs in the prediction, else no/1.

    Like a server with guided decoding, it answers strict JSON when a ``response_format`` is sent and
    the prompt's Python-dict style otherwise.
    """
    ok = call.field("Correct Answer").lower() in call.field("Predicted Answer").lower()
    if call.body.get("response_format"):
        return reply(json.dumps({"pred": "yes" if ok else "no", "score": 5 if ok else 1}))
    return reply(f"{{'pred': '{'yes' if ok else 'no'}', 'score': {5 if ok else 1}}}")


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # the default backlog of 5 drops connections of a client with 64 in flight


class FakeChatServer:
    """Use as a context manager; ``script(call) -> Response`` decides every answer."""

    def __init__(self, script: Callable[[Call], Response] = word_judge, models: list[str] | None = None) -> None:
        self.script = script
        self.models = models  # GET /models lists these; None: the endpoint does not exist (404), as on some servers
        self.calls: list[Call] = []
        self.preflight_calls: list[Call] = []  # requests of judges.preflight, kept out of ``calls``
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> FakeChatServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("content-length") or 0)
        try:
            body = json.loads(handler.rfile.read(length) or b"{}")
        except ValueError:
            body = {}
        headers = {k.lower(): v for k, v in handler.headers.items()}
        with self._lock:
            if PREFLIGHT_HEADER.lower() in headers:  # a preflight probe is not a judged item
                call = Call(len(self.preflight_calls), body, headers)
                self.preflight_calls.append(call)
            else:
                call = Call(len(self.calls), body, headers)
                self.calls.append(call)
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            resp = self.script(call)
            if resp.delay:
                time.sleep(resp.delay)
            if resp.status == 200 and resp.content is not None:
                payload: Any = {
                    "id": f"chatcmpl-{call.n}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body.get("model", "") if resp.model is None else resp.model,
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": resp.finish_reason,
                            "message": {"role": "assistant", "content": resp.content},
                        }
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }
            else:
                payload = resp.body
            data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
            handler.send_response(resp.status)
            handler.send_header("content-type", "application/json")
            handler.send_header("content-length", str(len(data)))
            for k, v in resp.headers.items():
                handler.send_header(k.replace("_", "-"), v)
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
            pass
        finally:
            with self._lock:
                self.active -= 1

    def _list_models(self, handler: BaseHTTPRequestHandler) -> None:
        if self.models is None or handler.path.rstrip("/") != "/v1/models":
            status, payload = 404, {"detail": "Not Found"}
        else:
            status, payload = 200, {"object": "list", "data": [{"id": m, "object": "model"} for m in self.models]}
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("content-type", "application/json")
        handler.send_header("content-length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                server._serve(self)

            def do_GET(self) -> None:  # noqa: N802
                server._list_models(self)

            def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
                pass

        return Handler
