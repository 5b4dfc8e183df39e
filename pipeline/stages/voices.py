"""Voices: give every turn its speaker (`pipeline.voices.assign` decides which); checks the speaker pool."""

from __future__ import annotations

import logging
from typing import Any

from pipeline.config import ConfigError, VoicesConfig
from pipeline.io.inputs import local_pool_file
from pipeline.stages.base import RowStage, RunContext
from pipeline.voices.assign import VoiceAssigner, assistant_voices
from pipeline.voices.pool import Speaker, check_references, load_pool

log = logging.getLogger(__name__)


class VoiceStage(RowStage):
    name = "voices"

    def __init__(self, pool: list[Speaker], cfg: VoicesConfig, seed: int, languages: list[str]):
        super().__init__()
        self.assigner = VoiceAssigner(pool, cfg, seed, languages)

    @classmethod
    def check(cls, ctx: RunContext) -> list[str]:
        """Load the speaker pool into `ctx` (dropping speakers with unusable reference clips, listed) and check
        that the configured voices exist in it."""
        cfg = ctx.cfg
        try:
            pool_file = local_pool_file(cfg.resolve_location(cfg.voices.pool), cfg.storage.env_names())
            pool = load_pool(pool_file)
        except (ConfigError, OSError, ValueError) as exc:
            return [str(exc)]
        # speakers whose reference clips are missing or unreadable are dropped (listed), not fatal
        pool, dropped = check_references(pool, pool_file)
        ctx.pool, ctx.dropped_speakers = pool, dropped
        if dropped:
            log.warning("voices.pool %s: %d speaker(s) dropped for missing or unreadable reference clips:\n  %s",
                        cfg.voices.pool, len({d["speaker_id"] for d in dropped}),
                        "\n  ".join(f"{d['speaker_id']}: {d['file']}: {d['problem']}" for d in dropped))
        bad = {d["speaker_id"]: d for d in dropped}
        assistants = {sid for ids in assistant_voices(cfg.voices, ctx.languages).values() for sid in ids}
        problems = []
        for sid in sorted(assistants & bad.keys()):
            d = bad[sid]
            problems.append(f"voices.assistant_speaker: {d['speaker_id']!r} has an unusable reference clip "
                            f"{d['file']} ({d['problem']}); fix the clip or choose another assistant speaker")
        empty = [lang for lang in ctx.languages if not any(s.language == lang for s in pool)]
        for lang in empty:
            problems.append(f"voices.pool {cfg.voices.pool} has no usable speaker for language {lang!r}"
                            + (f" ({len(bad)} dropped for bad reference clips)" if bad else ""))
        if not problems:  # the assigner checks assistant voices, filters and held-out speakers when it is built
            try:
                VoiceAssigner(pool, cfg.voices, cfg.plan.seed, ctx.languages)
            except (ConfigError, ValueError) as exc:
                problems.append(str(exc))
            problems += backend_problems(ctx)
        return problems

    @classmethod
    def build(cls, ctx: RunContext) -> VoiceStage:
        return cls(ctx.pool, ctx.cfg.voices, ctx.cfg.plan.seed, ctx.languages)

    def process_row(self, row: dict[str, Any]) -> None:
        user, assistant = self.assigner.assign(row)
        row["user_speaker_id"], row["assistant_speaker_id"] = user.speaker_id, assistant.speaker_id
        for turn in row["turns"]:
            turn["speaker_id"] = user.speaker_id if turn["role"] == "user" else assistant.speaker_id


def backend_problems(ctx: RunContext) -> list[str]:
    """Voices the configured TTS backend cannot speak (missing or unreadable clips were dropped already)."""
    cfg = ctx.cfg
    problems = []
    by_id = {s.speaker_id: s for s in ctx.pool}
    for ids in assistant_voices(cfg.voices, ctx.languages).values():
        for assistant in (by_id[sid] for sid in ids if sid in by_id):
            if assistant.backend != cfg.tts.backend:
                problems.append(f"voices.assistant_speaker: {assistant.speaker_id!r} is a {assistant.backend} voice "
                                f"but tts.backend is {cfg.tts.backend}; pick a {cfg.tts.backend} speaker from "
                                f"{cfg.voices.pool}")
    for lang in ctx.languages:
        if not any(s.language == lang and s.backend == cfg.tts.backend for s in ctx.pool):
            problems.append(f"voices.pool {cfg.voices.pool} has no {cfg.tts.backend} speaker for language {lang!r} "
                            f"(tts.backend is {cfg.tts.backend})")
    return problems
