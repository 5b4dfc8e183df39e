"""The embedded LLM: llama.cpp's OpenAI-compatible server on 127.0.0.1, started and stopped by the pipeline."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

log = logging.getLogger(__name__)


class ServerStartError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaCppServer:
    """Context manager: `with LlamaCppServer(gguf, alias, log_path) as base_url: ...`."""

    def __init__(self, gguf: Path, alias: str, log_path: Path, n_ctx: int = 4096, threads: int | None = None,
                 start_timeout_s: float = 180.0, port: int | None = None):
        self.gguf, self.alias, self.log_path = gguf, alias, log_path
        self.n_ctx, self.threads, self.start_timeout_s = n_ctx, threads, start_timeout_s
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> str:
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(self.gguf), "--model_alias", self.alias,
               "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(self.n_ctx)]
        if self.threads:
            cmd += ["--n_threads", str(self.threads)]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        logfile = open(self.log_path, "ab")
        log.info("starting llama.cpp server on 127.0.0.1:%d (%s)", self.port, self.gguf.name)
        # The server gets no API keys: it is local and needs none.
        env = {k: v for k, v in os.environ.items() if "KEY" not in k.upper() and "TOKEN" not in k.upper()}
        self.proc = subprocess.Popen(cmd, stdout=logfile, stderr=subprocess.STDOUT, env=env)
        logfile.close()
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise ServerStartError(f"llama.cpp server exited with code {self.proc.returncode}; log {self.log_path}:\n{tail}")
            try:
                if httpx.get(f"{self.base_url}/models", timeout=2.0).status_code == 200:
                    return self.base_url
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise ServerStartError(f"llama.cpp server did not answer within {self.start_timeout_s}s; log {self.log_path}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self.proc = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def embedded_server_problems(cfg, resolve_path) -> tuple[Path | None, list[str]]:
    """(the GGUF file, problems) of the embedded server that `llm.base_url: null` starts (`cfg`: the llm section)."""
    from pipeline.assets import MissingAsset, smollm2_gguf

    problems = []
    try:
        gguf = resolve_path(cfg.gguf_path) if cfg.gguf_path else smollm2_gguf()
    except MissingAsset as exc:
        gguf, problems = None, [str(exc)]
    if gguf is not None and not gguf.is_file():
        problems.append(f"llm.gguf_path: {gguf} does not exist")
    try:
        __import__("llama_cpp.server")
    except ImportError as exc:
        problems.append(str(exc))
    return gguf, problems
