"""The flow: which stages a run executes, in order, for a config and a `--stages` selection.

    plan | source -> generate -> text cache (write) [+ text cache (read): an interrupted run's unspoken text]
    [text cache (read), for --stages tts,verify,shard]
    -> personal data -> text -> near-duplicates -> judge            (the text checks: also in a text-only run)
    -> voices -> tts -> verify                                       (audio)
    [-> augment (augment.enabled)] [-> duplex (duplex.enabled)]
    -> duplicate IDs -> quota (exact-count mode) -> shard

The text checks run after the text cache, which keeps what the LLM wrote: audio remade from it goes through
them again (their settings may have changed; the judge is then asked again). Augment and duplex come before
the quota, so a conversation they reject never counts towards the target.
"""

from __future__ import annotations

from dataclasses import replace

from pipeline.config import RunConfig
from pipeline.run.selection import StageSelection
from pipeline.schema import batch_has_pending_turns
from pipeline.stages.augment import AugmentStage
from pipeline.stages.base import RunContext, Stage
from pipeline.stages.dedup import DuplicateIdStage
from pipeline.stages.duplex import DuplexStage
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
        classes += [AugmentStage] * cfg.augment.enabled + [DuplexStage] * cfg.duplex.enabled
    return classes + [DuplicateIdStage, QuotaStage, ShardStage]


def text_check_classes(cfg: RunConfig) -> list[type[Stage]]:
    """What looks at the text before any audio: personal data (on the display text), the spoken form,
    near-duplicates (on the spoken text), the judge (last: it is paid per conversation)."""
    return ([PersonalDataStage] * cfg.personal_data.enabled + [TextStage] + [NearDupStage] * cfg.dedup.enabled
            + [JudgeStage] * cfg.judge.enabled)


def build_stages(ctx: RunContext, selection: StageSelection, resume_cached: bool = False) -> list[Stage]:
    """The stage instances of one pass; `resume_cached` joins the text an interrupted run generated but did not
    speak to the stream right after the cache writer. With re-synthesis (verify.resynthesis_rounds > 0) the
    tts -> verify pair becomes the loop of `resynthesis_layout`."""
    stages: list[Stage] = []
    for cls in stage_classes(ctx.cfg, selection):
        if cls is QuotaStage and ctx.quota is None:
            continue
        stages.append(cls.build(ctx))
        if cls is TextCacheWriteStage and resume_cached:
            stages.append(TextCacheReadStage.build(ctx, resuming=True))
        if cls is VerifyStage:
            stages[-2:] = resynthesis_loop(ctx, stages[-2], stages[-1])
    return stages


# Later-round stage pairs see only the few conversations with a failed turn (the rest pass through), so each
# reserves this fraction of its stage's CPUs: full reservations for 1 + rounds pairs would not fit a small machine.
LATER_ROUND_CPU_FRACTION = 0.1


def resynthesis_loop(ctx: RunContext, tts: Stage, verify: Stage) -> list[Stage]:
    """TTS and verify as the Ray plan runs them: once (0 rounds); one loop actor repeating the pair on
    conversations with failed turns (one_actor); or 1 + rounds operator pairs, the later ones single actors that
    grow with the backlog (stage_pairs)."""
    from pipeline.executor.ray_data import Loop

    rounds = ctx.cfg.verify.resynthesis_rounds
    if rounds == 0:
        return [tts, verify]
    if ctx.cfg.verify.resynthesis_layout == "one_actor":
        return [Loop([tts, verify], rounds + 1, batch_has_pending_turns)]
    out = [tts, verify]
    for _ in range(rounds):
        for stage in (TTSStage.build(ctx), VerifyStage.build(ctx)):
            r = stage.resources
            stage.resources = replace(r, num_cpus=r.num_cpus * LATER_ROUND_CPU_FRACTION,
                                      actors=r.actors if isinstance(r.actors, int) else max_auto(r))
            out.append(stage)
    return out


def max_auto(resources) -> int:
    """What `actors: auto` would start, as the upper bound of a pool that grows from one actor."""
    import ray

    cluster = ray.cluster_resources()
    if resources.num_gpus > 0:
        return max(1, int(cluster.get("GPU", 0) / resources.num_gpus + 1e-9))
    return max(1, int(cluster.get("CPU", 1) // (resources.threads or 1)))
