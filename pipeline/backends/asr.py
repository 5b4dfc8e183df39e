"""ASR backend: faster-whisper (CTranslate2) on 16 kHz mono float32 audio."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import numpy as np

from pipeline.backends.assets import whisper_tiny_en


class WhisperASR:
    def __init__(self, model_dir: Path | None, language: str, compute_type: str = "int8", beam_size: int = 1,
                 device: str = "cpu", cpu_threads: int = 0):
        from faster_whisper import WhisperModel

        self.model_dir = model_dir or whisper_tiny_en()
        name = self.model_dir.name if model_dir else "tiny.en"
        self.language, self.beam_size = language, beam_size
        self.model = WhisperModel(str(self.model_dir), device=device, compute_type=compute_type,
                                  cpu_threads=cpu_threads)
        self.model_id = f"faster-whisper {version('faster-whisper')} {name} {compute_type}"

    def transcribe(self, audio_16k: np.ndarray, language: str | None = None) -> str:
        """`language` (Whisper's code) overrides the one given at construction; both None: Whisper detects it."""
        segments, _info = self.model.transcribe(audio_16k, language=language or self.language, beam_size=self.beam_size,
                                                condition_on_previous_text=False, without_timestamps=True,
                                                vad_filter=False)
        return " ".join(s.text.strip() for s in segments).strip()
