"""A real S3-compatible server for the tests: moto's standalone server (moto[server], from PyPI), on 127.0.0.1.

It speaks the S3 REST API (multipart uploads, listings, ranged reads) in memory; buckets are made through that
API. Not AWS: it accepts any credentials (the tests plant fake ones and check that they leak nowhere).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from proc import kill_tree, popen


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    """`with S3Server(port, log) as endpoint:` starts `moto_server` on 127.0.0.1:port and stops it (its own PID)."""

    def __init__(self, port: int, log_path: Path, start_timeout_s: float = 60.0):
        self.port, self.log_path, self.start_timeout_s = port, log_path, start_timeout_s
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> str:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                              stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto server exited ({self.proc.returncode}): {self.log_path.read_text()[-2000:]}")
            try:
                httpx.get(self.endpoint, timeout=2.0)
                return self.endpoint
            except httpx.HTTPError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"moto server did not answer on {self.endpoint} within {self.start_timeout_s} s")

    def stop(self) -> None:
        if self.proc is not None:
            kill_tree(self.proc.pid)  # the server and anything it started, by its own session
        self.proc = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def s3fs_client():
    """An s3fs filesystem with the environment's endpoint and credentials (what the pipeline uses)."""
    import s3fs

    return s3fs.S3FileSystem(use_listings_cache=False, skip_instance_cache=True)


def make_bucket(name: str) -> str:
    """Create a bucket through the S3 API; return its URL."""
    fs = s3fs_client()
    fs.mkdir(name)
    return f"s3://{name}"


def all_objects(prefix_url: str) -> dict[str, bytes]:
    """{key relative to the prefix: bytes} of every object under an s3:// prefix."""
    fs = s3fs_client()
    root = prefix_url.split("://", 1)[1].rstrip("/")
    return {key[len(root) + 1:]: fs.cat_file(key) for key in fs.find(root)}


def unfinished_uploads(prefix_url: str) -> list[str]:
    fs = s3fs_client()
    bucket, _, prefix = prefix_url.split("://", 1)[1].partition("/")
    page = fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=prefix)
    return [u["Key"] for u in page.get("Uploads", [])]


assert os.name == "posix"
