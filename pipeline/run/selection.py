"""`--stages`: which part of the flow a run executes, with names that mean what they say."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.config import ConfigError

STAGE_NAMES = ("plan", "generate", "text", "voices", "tts", "verify", "shard")
AUDIO_STAGES = {"tts", "verify", "shard"}


@dataclass(frozen=True)
class StageSelection:
    """Which part of the flow runs. Audio stages run as one unit (audio is not persisted between them);
    text normalisation and voice assignment run with them (they are cheap and deterministic)."""

    generate: bool = True     # plan + LLM; False: conversations come from a text cache
    audio: bool = True        # text, voices, tts, verify, shard; False: a text-only run
    plan_only: bool = False   # `--stages plan`: write the plan's specs, run nothing else

    @classmethod
    def parse(cls, text: str | None) -> StageSelection:
        if not text:
            return cls()
        names = {s.strip() for s in text.split(",") if s.strip()}
        unknown = sorted(names - set(STAGE_NAMES))
        if unknown:
            raise ConfigError(f"--stages: unknown stage(s) {unknown}; choose from {','.join(STAGE_NAMES)}")
        audio_given = names & AUDIO_STAGES
        if audio_given and audio_given != AUDIO_STAGES:
            raise ConfigError("--stages: tts, verify and shard run together (audio is not kept between them); "
                              f"got only {sorted(audio_given)}")
        if names == {"plan"}:
            return cls(generate=False, audio=False, plan_only=True)
        selection = cls(generate="generate" in names, audio=bool(audio_given))
        if not (selection.generate or selection.audio):
            given = sorted(names - {"plan"})
            raise ConfigError(f"--stages {','.join(sorted(names))}: nothing to run on its own: {' and '.join(given)} "
                              f"(spoken-form text and voice assignment) run with tts,verify,shard, just before "
                              f"synthesis; name tts,verify,shard for audio, generate for text only, or plan for the "
                              f"plan alone")
        return selection

    def describe(self) -> str:
        """What the run executes, as recorded in stats.json (last_run.stages)."""
        if self.plan_only:
            return "plan"
        return ",".join(["generate"] * self.generate + ["tts,verify,shard"] * self.audio)
