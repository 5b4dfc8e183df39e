"""The flow: which stages a run executes, in order, for a config and a `--stages` selection.

    plan | source -> generate -> text cache (write) [+ text cache (read): an interrupted run's unspoken text]
    [text cache (read), for --stages tts,verify,shard] -> text -> voices -> tts -> verify
    -> duplicate IDs -> quota (exact-count mode) -> shard
"""

from __future__ import annotations

from pipeline.config import RunConfig
from pipeline.run.selection import StageSelection
from pipeline.stages.base import RunContext, Stage
from pipeline.stages.dedup import DuplicateIdStage
from pipeline.stages.generate import GenerateStage, VLLMGenerateStage
from pipeline.stages.plan import PlanStage
from pipeline.stages.quota import QuotaStage
from pipeline.stages.shard import ShardStage
from pipeline.stages.source import SourcePlanStage
from pipeline.stages.text import TextStage
from pipeline.stages.text_cache import TextCacheReadStage, TextCacheWriteStage
from pipeline.stages.tts import TTSStage
from pipeline.stages.verify import VerifyStage
from pipeline.stages.voices import VoiceStage


def run_languages(cfg: RunConfig) -> list[str]:
    return [cfg.source.language] if cfg.source.kind == "dataset" else list(cfg.plan.languages)


def stage_classes(cfg: RunConfig, selection: StageSelection) -> list[type[Stage]]:
    """The stages the run executes (their `check`s are the preflight), in flow order."""
    if selection.plan_only:
        return [PlanStage if cfg.source.kind == "generate" else SourcePlanStage]
    classes: list[type[Stage]] = []
    if selection.generate:
        classes.append(SourcePlanStage if cfg.source.kind == "dataset" else PlanStage)
        classes.append(VLLMGenerateStage if cfg.llm.backend == "vllm" else GenerateStage)
        classes.append(TextCacheWriteStage)
    else:
        classes.append(TextCacheReadStage)
    if selection.audio:
        classes += [TextStage, VoiceStage, TTSStage] + [VerifyStage] * cfg.verify.enabled
    return classes + [DuplicateIdStage, QuotaStage, ShardStage]


def build_stages(ctx: RunContext, selection: StageSelection, resume_cached: bool = False) -> list[Stage]:
    """The stage instances of one pass; `resume_cached` joins the text an interrupted run generated but did not
    speak to the stream right after the cache writer."""
    stages: list[Stage] = []
    for cls in stage_classes(ctx.cfg, selection):
        if cls is QuotaStage and ctx.quota is None:
            continue
        stages.append(cls.build(ctx))
        if cls is TextCacheWriteStage and resume_cached:
            stages.append(TextCacheReadStage.build(ctx, resuming=True))
    return stages
