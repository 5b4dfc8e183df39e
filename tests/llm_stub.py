"""A replay stub of the LLM for tests: a tiny OpenAI-compatible server on 127.0.0.1 that answers with
RECORDED SmolLM2-135M-Instruct answers (tests/data/llm_answers.jsonl, made by tests/record_llm_answers.py
from the real llama.cpp server). It is not a model: it exists so that tests whose claim is about something
else (resume, exact counts, faults around a run) get the same text on every run and every machine.

What it serves:
  GET  /v1/models             one model (the requested alias), owned_by says it is a replay
  POST /v1/chat/completions   a recorded answer with its recorded usage counts

Which answer: the request's key is sha256 of (messages, seed, num_exchanges) with num_exchanges read from
the response schema (`exchanges.minItems`). A key in the bank gets its recorded answer. Any other request
(a prompt edit, a new seed, a repair the recording never saw) gets a recorded answer chosen by its seed among
the answers with the same exchange count, so edits to prompts change nothing but which key hits. Both are
deterministic: the same request always gets the same answer, whatever ran before.

Knobs (constructor, or the command line of `python tests/llm_stub.py`):
  valid_only     answer only with recorded answers that pass the pipeline's validation (a test that needs
                 every conversation to reach TTS); an exact hit whose answer was rejected falls back too
  exact_only     refuse (HTTP 404) what the bank does not hold, to prove a test hits the recording
  fallback_only  ignore exact keys (what an edit of every prompt looks like)
  script         faults for the next requests, one per request: "429" (with Retry-After: `retry_after`,
                 None = no header), "500", "hang" (sleeps `hang_s`, then 504), "cut" (closes the connection),
                 "bad_json", "truncated_json", "pass"; used up, every request is answered
  delay_s        seconds before each answer (a slow server)
Every request is counted (`requests`: seed, exchanges, how it was answered), so a test can say how often
the LLM was paid for one conversation. The server is a daemon thread; start and stop are bounded in time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

BANK = Path(__file__).resolve().parent / "data" / "llm_answers.jsonl"
REPLAY_NOTE = "recorded SmolLM2-135M-Instruct answers replayed by tests/llm_stub.py (not a model)"
FAULTS = {"429", "500", "hang", "cut", "bad_json", "truncated_json", "pass"}


def request_key(messages: list[dict[str, Any]], seed: int | None, num_exchanges: int | None) -> str:
    """The bank's key of a chat request: what decides SmolLM2's answer apart from sampling settings."""
    canonical = json.dumps({"messages": [{"role": m.get("role"), "content": m.get("content")} for m in messages],
                            "seed": seed, "num_exchanges": num_exchanges}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def schema_exchanges(body: dict[str, Any]) -> int | None:
    """num_exchanges from the response schema (llama.cpp's json_object+schema or OpenAI's json_schema)."""
    fmt = body.get("response_format") or {}
    schema = fmt.get("schema") or (fmt.get("json_schema") or {}).get("schema") or {}
    items = ((schema.get("properties") or {}).get("exchanges") or {}).get("minItems")
    return int(items) if isinstance(items, int) else None


def load_bank(path: Path = BANK) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not records:
        raise ValueError(f"{path}: the answer bank is empty; record it with tests/record_llm_answers.py")
    return records


@dataclass
class Seen:
    seed: int | None
    num_exchanges: int | None
    messages: int
    answered: str  # exact | fallback | fault:<name> | missing
    at: float = 0.0  # time.monotonic() when the request arrived


def passes_validation(record: dict[str, Any]) -> bool:
    """Whether today's parser accepts a recorded answer (the recorded `valid` was the parser's word at recording
    time; a new check, e.g. for meta text, may refuse answers it accepted)."""
    from pipeline.config import LLMConfig
    from pipeline.llm.parse import Rejected, parse_conversation

    try:
        parse_conversation(record["content"], record["num_exchanges"], LLMConfig(), record.get("language", "en"))
    except (Rejected, KeyError, TypeError):
        return False
    return True


class LLMStub:
    """`with LLMStub() as base_url:` - an OpenAI-compatible replay server on 127.0.0.1 (port chosen by the OS)."""

    def __init__(self, bank: Path | list[dict[str, Any]] = BANK, *, valid_only: bool = False, exact_only: bool = False,
                 fallback_only: bool = False, script: list[str] | None = None, retry_after: float | None = 1.0,
                 hang_s: float = 3.0, delay_s: float = 0.0, port: int = 0):
        self.records = [{**r, "valid": passes_validation(r)}
                        for r in (load_bank(bank) if isinstance(bank, Path) else list(bank))]
        self.by_key = {r["key"]: r for r in self.records}
        unknown = sorted(set(script or []) - FAULTS)
        if unknown:
            raise ValueError(f"unknown fault(s) {unknown}; choose from {sorted(FAULTS)}")
        self.valid_only, self.exact_only, self.fallback_only = valid_only, exact_only, fallback_only
        self.script, self.retry_after, self.hang_s, self.delay_s = list(script or []), retry_after, hang_s, delay_s
        self.requests: list[Seen] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.server.daemon_threads = True  # a hung handler never blocks stop()
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True,
                                       name="llm-stub")

    # --- which answer -------------------------------------------------------------------------------

    def answer(self, body: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
        messages, seed, n = body.get("messages") or [], body.get("seed"), schema_exchanges(body)
        hit = None if self.fallback_only else self.by_key.get(request_key(messages, seed, n))
        if hit is not None and (hit.get("valid") or not self.valid_only):
            return hit, "exact"
        if self.exact_only:
            return None, "missing"
        pool = [r for r in self.records if r["num_exchanges"] == n and (r.get("valid") or not self.valid_only)]
        if not pool:
            return None, "missing"
        # seed-chosen, stable across runs and processes (not Python's salted hash)
        pick = int(hashlib.sha256(f"{seed}:{len(messages)}".encode()).hexdigest()[:12], 16) % len(pool)
        return pool[pick], "fallback"

    def counts_by_seed(self, include_faults: bool = True) -> dict[int | None, int]:
        out: dict[int | None, int] = {}
        with self.lock:
            for r in self.requests:
                if include_faults or not r.answered.startswith("fault"):
                    out[r.seed] = out.get(r.seed, 0) + 1
        return out

    def reset_counts(self) -> None:
        with self.lock:
            self.requests.clear()

    # --- HTTP -------------------------------------------------------------------------------------

    def _handler(self):
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet test output
                pass

            def _reply(self, code: int, payload: dict[str, Any] | bytes, headers: dict[str, str] | None = None):
                body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(code)
                for k, v in {"Content-Type": "application/json", "X-Replayed-By": "tests/llm_stub.py",
                             **(headers or {})}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout under test)
                    pass

            def do_GET(self):
                if self.path.rstrip("/") in ("/v1/models", "/models"):
                    return self._reply(200, {"object": "list", "data": [
                        {"id": "SmolLM2-135M-Instruct", "object": "model", "owned_by": REPLAY_NOTE}]})
                return self._reply(404, {"error": f"no route {self.path}"})

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
                    return self._reply(404, {"error": f"no route {self.path}"})
                try:
                    body = json.loads(raw)
                except json.JSONDecodeError:
                    return self._reply(400, {"error": "request body is not JSON"})
                with stub.lock:
                    fault = stub.script.pop(0) if stub.script else "pass"
                record, how = stub.answer(body)
                seen = Seen(body.get("seed"), schema_exchanges(body), len(body.get("messages") or []),
                            how if fault in ("pass", "bad_json", "truncated_json") else f"fault:{fault}",
                            time.monotonic())
                with stub.lock:
                    stub.requests.append(seen)
                if stub.delay_s:
                    time.sleep(stub.delay_s)
                if fault == "429":
                    headers = {} if stub.retry_after is None else {"Retry-After": f"{stub.retry_after:g}"}
                    return self._reply(429, {"error": "rate limited (injected)"}, headers)
                if fault == "500":
                    return self._reply(500, {"error": "boom (injected)"})
                if fault == "hang":
                    time.sleep(stub.hang_s)
                    return self._reply(504, {"error": "late (injected)"})
                if fault == "cut":
                    self.connection.shutdown(2)  # drop the connection without an answer
                    self.close_connection = True
                    return None
                if record is None:
                    return self._reply(404, {"error": f"no recorded answer for {body.get('seed')=} with "
                                                      f"{schema_exchanges(body)} exchanges ({REPLAY_NOTE})"})
                content = record["content"]
                if fault == "bad_json":
                    content = "Sure! Here is the conversation you asked for."
                elif fault == "truncated_json":
                    content = content[: len(content) // 2]
                usage = record.get("usage") or {}
                return self._reply(200, {
                    "id": "chatcmpl-replay-" + record["key"][:12], "object": "chat.completion",
                    "created": 0, "model": body.get("model") or "SmolLM2-135M-Instruct",
                    "system_fingerprint": "llm-stub-replay",
                    "choices": [{"index": 0, "finish_reason": record.get("finish_reason") or "stop",
                                 "message": {"role": "assistant", "content": content}}],
                    "usage": {"prompt_tokens": usage.get("prompt_tokens", 0),
                              "completion_tokens": usage.get("completion_tokens", 0),
                              "total_tokens": usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0)},
                })

        return Handler

    # --- lifetime ----------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def start(self, timeout_s: float = 10.0) -> str:
        """Serve from a daemon thread; returns once GET /v1/models answers (at most `timeout_s`)."""
        import http.client

        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.server.server_address[1], timeout=1.0)
                conn.request("GET", "/v1/models")
                if conn.getresponse().status == 200:
                    conn.close()
                    return self.base_url
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"LLM stub on {self.base_url} did not answer within {timeout_s} s")
            time.sleep(0.05)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop serving within `timeout_s` (a handler still sleeping in a hang is a daemon thread)."""
        stopper = threading.Thread(target=self.server.shutdown, daemon=True)
        stopper.start()
        stopper.join(timeout_s)
        self.server.server_close()
        self.thread.join(timeout_s)
        if self.thread.is_alive():
            raise RuntimeError(f"LLM stub on {self.base_url} did not stop within {timeout_s} s")

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """Run the stub as its own process (e.g. for a golden before/after run of the pipeline):
    `python tests/llm_stub.py --port-file /tmp/stub.url` then `run ... llm.base_url=$(cat /tmp/stub.url)`.
    With --requests-log every request is appended as one JSON line (seed, exchanges, how it was answered)."""
    ap = argparse.ArgumentParser(description="replay recorded SmolLM2 answers on 127.0.0.1 (tests/llm_stub.py)")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--bank", type=Path, default=BANK)
    ap.add_argument("--valid-only", action="store_true")
    ap.add_argument("--exact-only", action="store_true")
    ap.add_argument("--fallback-only", action="store_true")
    ap.add_argument("--port-file", type=Path, help="write the base URL here once serving")
    ap.add_argument("--requests-log", type=Path, help="append one JSON line per request")
    ap.add_argument("--max-s", type=float, default=3600.0, help="stop after this many seconds (bounded)")
    args = ap.parse_args(argv)
    stub = LLMStub(args.bank, valid_only=args.valid_only, exact_only=args.exact_only,
                   fallback_only=args.fallback_only, port=args.port)
    url = stub.start()
    if args.port_file:
        args.port_file.write_text(url + "\n")
    print(url, flush=True)
    written = 0
    try:
        deadline = time.monotonic() + args.max_s
        while time.monotonic() < deadline:
            time.sleep(0.2)
            if args.requests_log:
                with stub.lock:
                    new = stub.requests[written:]
                    written += len(new)
                with open(args.requests_log, "a", encoding="utf-8") as fh:
                    fh.writelines(json.dumps(r.__dict__) + "\n" for r in new)
    except KeyboardInterrupt:
        pass
    finally:
        stub.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
