"""A scripted OpenAI-compatible stand-in on 127.0.0.1 for the hostile-input tests (it is not a model).

It answers what a test tells it to, so that a test can be an LLM that returns hostile text, a server that
refuses every key, one that answers 200 with an empty or an HTML body, or one that trickles its answer a byte
at a time. The real llama.cpp server cannot be made to do these on purpose; everything else the pipeline does
with the answer (the openai client, retries, validation, rejections) is the real code.

`answer(request_body, path) -> Reply` decides each answer; `content_reply(text)` wraps text as a chat
completion. GET /v1/models answers with one model unless `models_reply` says otherwise. Every request is
recorded (`seen`: path and the Authorization header), so a test can check what the client sent. The server is
a daemon thread; `trickle_s` pauses are bounded by the test's own timeouts.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    trickle_s: float = 0.0  # pause before each byte of the body (a server that trickles its answer)


def content_reply(text: str, usage: tuple[int, int] = (10, 20)) -> Reply:
    """A chat completion whose message content is `text`."""
    body = {"id": "x", "object": "chat.completion", "created": 0, "model": "stand-in",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)}}
    return Reply(body=json.dumps(body).encode())


def conversation_text(n: int, user: str = "Could you tell me how to bake a simple loaf of bread at home?",
                      assistant: str = "Sure, mix flour, water, salt and yeast, let it rise, then bake it.") -> str:
    return json.dumps({"exchanges": [{"user": user, "assistant": assistant}] * n})


def exchanges_asked(body: dict[str, Any]) -> int:
    fmt = body.get("response_format") or {}
    schema = fmt.get("schema") or (fmt.get("json_schema") or {}).get("schema") or {}
    return int(((schema.get("properties") or {}).get("exchanges") or {}).get("minItems") or 1)


MODELS = Reply(body=json.dumps({"object": "list", "data": [{"id": "stand-in", "object": "model",
                                                            "owned_by": "tests/hostile_llm.py"}]}).encode())


class HostileLLM:
    def __init__(self, answer: Callable[[dict[str, Any], str], Reply], models_reply: Reply | None = None):
        self.answer, self.models_reply = answer, models_reply or MODELS
        self.seen: list[dict[str, Any]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, reply: Reply) -> None:
                try:
                    self.send_response(reply.status)
                    for k, v in {"Content-Type": reply.content_type, **reply.headers}.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    if reply.trickle_s:
                        for i in range(len(reply.body)):
                            self.wfile.write(reply.body[i:i + 1])
                            self.wfile.flush()
                            time.sleep(reply.trickle_s)
                    else:
                        self.wfile.write(reply.body)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (its deadline)
                    pass

            def do_GET(self):
                owner.seen.append({"path": self.path, "authorization": self.headers.get("Authorization")})
                self._send(owner.models_reply)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                owner.seen.append({"path": self.path, "authorization": self.headers.get("Authorization")})
                self._send(owner.answer(body, self.path))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> HostileLLM:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
