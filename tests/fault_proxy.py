"""A fault-injecting HTTP proxy for tests: sits on 127.0.0.1 in front of a real llama.cpp server.

Each incoming request takes the next fault from a script ("429", "500", "hang", "cut", "bad_json",
"truncated_json", "pass");
when the script is used up every request passes through. Bounded: a hang sleeps at most `hang_s`.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx


class FaultProxy:
    def __init__(self, upstream: str, script: list[str], hang_s: float = 3.0, faults_on_get: bool = True):
        self.upstream = upstream.rstrip("/")  # e.g. http://127.0.0.1:1234/v1
        self.script, self.hang_s = list(script), hang_s
        # False: GET requests (the client's /models probes after a failure) pass through without taking a fault, so
        # the script counts chat requests only
        self.faults_on_get = faults_on_get
        self.seen: list[str] = []
        self.requests: list[dict] = []  # the JSON body of every POST, in arrival order (what the LLM was asked)
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):
                self._forward(None)

            def do_POST(self):
                self._forward(self.rfile.read(int(self.headers.get("Content-Length", 0))))

            def _reply(self, code: int, body: bytes, headers: dict[str, str] | None = None):
                self.send_response(code)
                for k, v in {"Content-Type": "application/json", **(headers or {})}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout under test)
                    pass

            def _forward(self, body: bytes | None):
                with proxy.lock:
                    scripted = proxy.script and (body is not None or proxy.faults_on_get)
                    fault = proxy.script.pop(0) if scripted else "pass"
                    proxy.seen.append(fault)
                    if body:
                        proxy.requests.append(json.loads(body))
                if fault == "429":
                    return self._reply(429, b'{"error": "rate limited"}', {"Retry-After": "1"})
                if fault == "500":
                    return self._reply(500, b'{"error": "boom"}')
                if fault == "hang":
                    time.sleep(proxy.hang_s)
                    return self._reply(504, b'{"error": "late"}')
                if fault == "cut":
                    self.connection.shutdown(2)  # drop the connection without an answer
                    return None
                path = self.path[len("/v1"):] if self.path.startswith("/v1") else self.path
                resp = httpx.request(self.command, proxy.upstream + path, content=body,
                                     headers={"Content-Type": "application/json"}, timeout=120)
                data = resp.content
                if fault in ("bad_json", "truncated_json") and resp.status_code == 200:
                    payload = json.loads(data)
                    message = payload["choices"][0]["message"]
                    message["content"] = ("Sure! Here is the conversation you asked for." if fault == "bad_json"
                                          else message["content"][: len(message["content"]) // 2])
                    data = json.dumps(payload).encode()
                return self._reply(resp.status_code, data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
