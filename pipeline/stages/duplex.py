"""Duplex: lay each kept conversation's turns on one two-channel timeline (the duplex subset).

Uses the clean turn audio (before any user-side augmentation), the assistant turns' ASR word timings from verify
(an interruption cuts at a word boundary; without timings a turn is never interrupted) and the backchannel clips
the TTS stage spoke in each listener's voice. The timeline JSON and the stereo FLAC ride in the row to the shard
stage, which writes them as data/<lang>/duplex/<split>/*.tar. Seeded per conversation from duplex.seed.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from pipeline.audio import decode_audio
from pipeline.config import DuplexConfig
from pipeline.reasons import Rejected
from pipeline.render.duplex import TurnClip, Word, render_duplex
from pipeline.render.seeding import derive_seed
from pipeline.stages.base import Resources, RowStage, RunContext


class DuplexStage(RowStage):
    name = "duplex"

    @classmethod
    def build(cls, ctx: RunContext) -> DuplexStage:
        d = ctx.cfg.duplex
        stage = cls(d)
        stage.resources = Resources(threads=1)  # no model to load: stateless tasks (silero-vad is cached per process)
        stage.batch_size = d.batch_size
        return stage

    def __init__(self, cfg: DuplexConfig):
        super().__init__()
        self.cfg = cfg

    def process_row(self, row: dict[str, Any]) -> None:
        turns = []
        for turn in row["turns"]:
            samples, rate = decode_audio(turn.get("clean_audio_flac") or turn["audio_flac"])
            words = [Word(w["word"], w["start"], w["end"]) for w in turn.get("asr_words") or []] or None
            turns.append(TurnClip(turn["role"], turn["spoken_text"] or "", samples, rate,
                                  speaker_id=turn["speaker_id"] or "", words=words))
        clips: dict[tuple[str, str], tuple[np.ndarray, int]] = {}
        for bc in row.get("backchannels") or []:
            clips[(bc["role"], bc["text"])] = decode_audio(bc["audio_flac"])

        def backchannel(role: str, text: str) -> tuple[np.ndarray, int]:
            return clips.get((role, text), (np.zeros(0, dtype=np.float32), 16000))  # missing: not said

        try:
            rendering = render_duplex(turns, self.cfg, derive_seed(self.cfg.seed, row["conversation_id"]),
                                      row["language"], backchannel if clips else None)
        except ValueError as exc:
            raise Rejected("duplex_render_failed", str(exc)) from None
        row["duplex_json"] = json.dumps(rendering.timeline(row["conversation_id"]), ensure_ascii=False)
        row["duplex_flac"] = rendering.flac()
        row["backchannels"] = None  # used up: keep the stream light
