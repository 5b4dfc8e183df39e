"""ASR backend: faster-whisper (CTranslate2) on 16 kHz mono float32 audio."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import numpy as np

from pipeline.backends.assets import whisper_tiny_en


def asr_device(device: str) -> str:
    """`verify.device` -> the device CTranslate2 should use in this actor."""
    import ctranslate2

    gpus = ctranslate2.get_cuda_device_count()
    if device == "auto":  # Ray hides GPUs from actors that asked for none, so this follows verify.num_gpus
        return "cuda" if gpus > 0 else "cpu"
    if device == "cuda" and gpus == 0:
        raise RuntimeError("verify.device is 'cuda' but CTranslate2 sees no GPU in this verify actor (check "
                           "verify.num_gpus, and that CUDA 12's cuBLAS and cuDNN 9 libraries are installed)")
    return device


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
