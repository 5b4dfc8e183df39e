"""Generate: an LLM writes each planned conversation (the backend is `llm.backend`; see `pipeline/llm/`).

`GenerateStage` talks to an OpenAI-compatible server (the embedded llama.cpp server by default) through
`pipeline.llm.openai_compat`; `VLLMGenerateStage` runs vLLM engine actors inside the cluster (ray.data.llm),
which the executor builds from the stage's pre- and post-processing. Both use the same prompts and validation.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from pipeline.config import LLMConfig
from pipeline.faults import checkpoint
from pipeline.llm.openai_compat import OpenAICompatibleLLM
from pipeline.llm.prompts import PromptSet
from pipeline.schema import is_rejected, rows_to_table, table_to_rows
from pipeline.stages.base import ProcessorStage, Resources, RunContext, Stage


def prompt_problems(ctx: RunContext) -> list[str]:
    problems = []
    for lang in ctx.languages:
        try:
            PromptSet.load(ctx.prompts_dir, lang)
        except (OSError, ValueError) as exc:  # jinja2's TemplateNotFound is an OSError
            problems.append(str(exc))
    return problems


def is_loopback(base_url: str | None) -> bool:
    """A server on this machine's loopback (the embedded one, or one the user started beside the driver)."""
    from urllib.parse import urlsplit

    host = (urlsplit(base_url).hostname or "") if base_url else ""
    return host == "localhost" or host.startswith("127.") or host == "::1"


class GenerateStage(Stage):
    name = "generate"

    def __init__(self, cfg: LLMConfig, base_url: str, prompts_dir):
        super().__init__()
        self.llm = OpenAICompatibleLLM(cfg, base_url, prompts_dir)
        self.resources = Resources(num_cpus=cfg.num_cpus, actors=1, driver_node=is_loopback(base_url))
        self.batch_size = cfg.batch_size

    @classmethod
    def check(cls, ctx: RunContext) -> list[str]:
        problems = prompt_problems(ctx)
        llm = ctx.cfg.llm
        if llm.base_url is None:  # the embedded llama.cpp server: its model file and its package
            from pipeline.llm.server import embedded_server_problems

            ctx.gguf, more = embedded_server_problems(llm, ctx.cfg.resolve_path)
            problems += more
        return problems

    @classmethod
    def build(cls, ctx: RunContext) -> GenerateStage:
        return cls(ctx.cfg.llm, ctx.llm_base_url, ctx.prompts_dir)

    def process_batch(self, batch: pa.Table) -> pa.Table:
        rows = table_to_rows(batch)
        live = [r for r in rows if not is_rejected(r)]
        if live:
            checkpoint(self.name)
            self.llm.generate_batch(live)
        return rows_to_table(rows)


class VLLMGenerateStage(ProcessorStage):
    """vLLM engine actors inside the cluster: the executor wraps `preprocess`/`postprocess` in a ray.data.llm
    processor built from `processor_kwargs` (GPU engines; needs `pip install -e .[vllm]`)."""

    name = "generate"

    def __init__(self, cfg: LLMConfig, prompts_dir):
        super().__init__()
        from pipeline.llm.vllm import VLLMRequests, processor_kwargs

        self.requests = VLLMRequests(cfg, prompts_dir)
        self.processor_kwargs = processor_kwargs(cfg)

    @classmethod
    def check(cls, ctx: RunContext) -> list[str]:
        return prompt_problems(ctx)

    @classmethod
    def build(cls, ctx: RunContext) -> VLLMGenerateStage:
        return cls(ctx.cfg.llm, ctx.prompts_dir)

    def preprocess(self, row: dict[str, Any]) -> dict[str, Any]:
        return self.requests.preprocess(row)

    def postprocess(self, row: dict[str, Any]) -> dict[str, Any]:
        return self.requests.postprocess(row)
