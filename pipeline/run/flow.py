"""The flow: which stages a run executes, in order, for a config and a `--stages` selection.

    plan | source -> generate -> text cache (write) [+ text cache (read): an interrupted run's unspoken text]
    [text cache (read), for --stages tts,verify,shard]
    -> personal data -> text -> near-duplicates -> judge            (the text checks: also in a text-only run)
    -> voices -> tts -> verify                                       (audio)
    -> duplicate IDs -> quota (exact-count mode) -> shard

The text checks run after the text cache, which keeps what the LLM wrote: audio remade from it goes through
them again (their settings may have changed; the judge is then asked again).
"""

from __future__ import annotations

from pipeline.config import RunConfig
from pipeline.run.selection import StageSelection
from pipeline.stages.base import RunContext, Stage
from pipeline.stages.dedup import DuplicateIdStage
from pipeline.stages.generate import GenerateStage, VLLMGenerateStage
from pipeline.stages.judge import JudgeStage
from pipeline.stages.near_dup import NearDupStage
from pipeline.stages.personal_data import PersonalDataStage
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
    classes += text_check_classes(cfg)
    if selection.audio:
        classes += [VoiceStage, TTSStage] + [VerifyStage] * cfg.verify.enabled
    return classes + [DuplicateIdStage, QuotaStage, ShardStage]


def text_check_classes(cfg: RunConfig) -> list[type[Stage]]:
    """What looks at the text before any audio: personal data (on the display text), the spoken form,
    near-duplicates (on the spoken text), the judge (last: it is paid per conversation)."""
    return ([PersonalDataStage] * cfg.personal_data.enabled + [TextStage] + [NearDupStage] * cfg.dedup.enabled
            + [JudgeStage] * cfg.judge.enabled)


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
