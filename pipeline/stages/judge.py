"""Judge: an LLM scores each conversation's text 1-5 for speech-naturalness, coherence, helpfulness and safety
before any audio is made (`judge.enabled`), through any OpenAI-compatible endpoint (`judge.base_url`, by default
the generation LLM's server). A score under `judge.min_scores` rejects the conversation
(`judge_below_threshold`, one structured failure per criterion missed); the scores go into the sample JSON and
the manifest.

A judge that is down, slow or answers garbage never stops the run and never loses a conversation: after its
retries and repair requests the conversation is kept unscored (-1) or, with `judge.on_error: reject`, rejected
as `judge_failed`. The client and the validation are `pipeline/llm/judge.py`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline.config import JudgeConfig
from pipeline.faults import checkpoint
from pipeline.llm.judge import JudgePrompts, OpenAICompatibleJudge, below_threshold, unscored
from pipeline.reasons import Failure
from pipeline.schema import is_rejected, reject, rows_to_table, table_to_rows
from pipeline.stages.base import Resources, RunContext, Stage
from pipeline.stages.generate import is_loopback

log = logging.getLogger(__name__)


class JudgeStage(Stage):
    name = "judge"

    def __init__(self, cfg: JudgeConfig, base_url: str, prompts_dir: Path, default_model: str,
                 default_response_format: str):
        super().__init__()
        self.cfg = cfg
        self.judge = OpenAICompatibleJudge(cfg, base_url, prompts_dir, default_model, default_response_format)
        # a judge on the driver's loopback (the embedded server) must run on the driver's node
        self.resources = Resources(num_cpus=cfg.num_cpus, actors=1, driver_node=is_loopback(base_url))
        self.batch_size = cfg.batch_size

    @classmethod
    def check(cls, ctx: RunContext) -> list[str]:
        cfg, problems = ctx.cfg, []
        for lang in ctx.languages:
            try:
                JudgePrompts.load(ctx.prompts_dir, lang, cfg.judge.system_prompt, cfg.judge.user_prompt,
                                  cfg.judge.repair_prompt)
            except (OSError, ValueError) as exc:  # jinja2's TemplateNotFound is an OSError
                problems.append(f"judge prompts for {lang}: {exc}")
        if cfg.judge.base_url is None and cfg.llm.base_url is None:
            if cfg.llm.backend != "openai":
                problems.append("judge.enabled with llm.backend vllm needs judge.base_url (an OpenAI-compatible server)")
            elif ctx.gguf is None:  # the embedded llama.cpp server judges: its model file and its package
                from pipeline.llm.server import embedded_server_problems

                ctx.gguf, more = embedded_server_problems(cfg.llm, cfg.resolve_path)
                problems += more
        return problems

    @classmethod
    def build(cls, ctx: RunContext) -> JudgeStage:
        base_url = ctx.cfg.judge.base_url or ctx.llm_base_url
        return cls(ctx.cfg.judge, base_url, ctx.prompts_dir, ctx.cfg.llm.model, ctx.cfg.llm.response_format)

    def process_batch(self, batch: pa.Table) -> pa.Table:
        rows = table_to_rows(batch)
        live = [r for r in rows if not is_rejected(r)]
        if live:
            checkpoint(self.name)
            try:
                results = self.judge.score_batch(live)
            except Exception as exc:  # noqa: BLE001 - the judge is optional: it never fails the batch
                log.warning("judge: batch of %d not scored: %s", len(live), exc, exc_info=True)
                results = [(unscored(), f"{type(exc).__name__}: {exc}")] * len(live)
            for row, (scores, why) in zip(live, results):
                self.apply(row, scores, why)
        return rows_to_table(rows)

    def apply(self, row: dict[str, Any], scores: dict[str, int], why: str | None) -> None:
        row["judge_scores"], row["judge_model"] = dict(scores), self.judge.model
        if why is not None:
            log.warning("judge: conversation %s not scored: %s", row["conversation_id"], why)
            if self.cfg.on_error == "reject":
                reject(row, self.name, "judge_failed", why)
            return
        missed = below_threshold(scores, self.cfg.min_scores)
        if missed:
            reject(row, self.name, "judge_below_threshold",
                   ", ".join(f"{c} {score} < {limit:g}" for c, score, limit in missed),
                   [Failure(metric=c, value=float(score), limit=float(limit)) for c, score, limit in missed])
