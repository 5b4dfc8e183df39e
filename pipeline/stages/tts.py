"""TTS: speak every turn with its assigned voice; user audio is stored at 16 kHz, assistant at the model rate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.audio import encode_flac, resample
from pipeline.backends.tts import TTSBackend, make_backend
from pipeline.speakers import Speaker
from pipeline.stages.base import Rejected, Stage


class TTSStage(Stage):
    name = "tts"

    def __init__(self, backend: str, piper_voice: Path | None, pool: list[Speaker], user_sample_rate: int = 16000,
                 backend_options: dict | None = None):
        super().__init__()
        self.backend_name, self.piper_voice, self.backend_options = backend, piper_voice, backend_options or {}
        self.speakers = {s.speaker_id: s for s in pool}
        self.user_sample_rate = user_sample_rate
        self.backend: TTSBackend | None = None

    def setup(self) -> None:
        self.backend = make_backend(self.backend_name, self.piper_voice, **self.backend_options)

    def process_row(self, row: dict[str, Any]) -> None:
        assert self.backend is not None
        row["tts_model"] = self.backend.model_id
        for i, turn in enumerate(row["turns"]):
            speaker = self.speakers.get(turn["speaker_id"])
            if speaker is None:
                raise Rejected("tts_unknown_speaker", f"turn {i}: {turn['speaker_id']!r} not in pool")
            samples, rate = self.backend.synthesize(turn["spoken_text"], speaker)
            if samples.size == 0:
                raise Rejected("tts_empty_audio", f"turn {i}")
            if not np.isfinite(samples).all():
                raise Rejected("tts_non_finite_audio", f"turn {i}")
            if turn["role"] == "user":
                samples, rate = resample(samples, rate, self.user_sample_rate), self.user_sample_rate
            turn["audio_flac"] = encode_flac(samples, rate)
            turn["sample_rate"] = rate
            turn["duration_s"] = samples.size / rate
