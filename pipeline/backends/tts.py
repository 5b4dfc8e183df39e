"""TTS backends behind one small protocol, chosen by `tts.backend`."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path
from typing import Protocol

import numpy as np

from pipeline.backends.assets import piper_joe_voice
from pipeline.speakers import Speaker


class TTSBackend(Protocol):
    model_id: str  # goes into every sample's JSON: backend, version, voice

    def synthesize(self, text: str, speaker: Speaker, language: str = "en", seed: int = 0) -> tuple[np.ndarray, int]:
        """Return float32 mono samples in [-1, 1] and their sample rate. `language` is the row's language
        (the backend maps it to its own code); `seed` makes a sampling model reproducible (a retry passes a new one)."""
        ...


class PiperBackend:
    """Piper (VITS exported to ONNX) on CPU; one voice file per speaker, loaded once and cached."""

    def __init__(self, default_voice: Path | None, noise_scale: float | None = None, noise_w_scale: float | None = None,
                 threads: int | None = None):
        self.default_voice = default_voice or piper_joe_voice()
        self.noise_scale, self.noise_w_scale = noise_scale, noise_w_scale
        self.threads = threads  # ONNX Runtime intra-op threads; None: one per core
        self._voices: dict[str, object] = {}
        self.model_id = f"piper-tts {version('piper-tts')} {self.default_voice.stem}"
        self._load(str(self.default_voice))  # now, when the actor starts, rather than on its first turn

    def _voice(self, speaker: Speaker):
        return self._load(str(self.default_voice if speaker.voice == "default" else speaker.voice))

    def _load(self, path: str):
        from piper import PiperVoice

        if path not in self._voices:
            if self.threads is None:
                self._voices[path] = PiperVoice.load(path)
            else:  # PiperVoice.load takes no session options: build its session with the thread count
                import json

                from piper.config import PiperConfig

                from pipeline.threads import onnx_session

                config = json.loads(Path(f"{path}.json").read_text(encoding="utf-8"))
                self._voices[path] = PiperVoice(config=PiperConfig.from_dict(config),
                                                session=onnx_session(path, self.threads))
        return self._voices[path]

    def synthesize(self, text: str, speaker: Speaker, language: str = "en", seed: int = 0) -> tuple[np.ndarray, int]:
        # Piper's ONNX noise cannot be seeded: noise scales of 0 make it reproducible instead
        from piper import SynthesisConfig

        voice = self._voice(speaker)
        chunks = list(voice.synthesize(text, SynthesisConfig(speaker_id=speaker.speaker_index, noise_scale=self.noise_scale,
                                                             noise_w_scale=self.noise_w_scale)))
        if not chunks:
            return np.zeros(0, dtype=np.float32), int(voice.config.sample_rate)
        # one chunk per sentence; a short pause between sentences keeps the prosody natural
        rate = chunks[0].sample_rate
        gap = np.zeros(int(0.15 * rate), dtype=np.float32)
        parts = [p for c in chunks for p in (c.audio_float_array.astype(np.float32), gap)][:-1]
        return np.concatenate(parts), rate


def make_backend(name: str, piper_voice: Path | None, **options) -> TTSBackend:
    """Build the configured backend; Coqui backends import torch only here, so a Piper run never loads it."""
    if name == "piper":
        return PiperBackend(piper_voice, **options)
    if name == "vits":
        from pipeline.backends.coqui import VitsBackend

        return VitsBackend(**options)
    if name == "xtts":
        from pipeline.backends.coqui import XttsBackend

        return XttsBackend(**options)
    raise ValueError(f"unknown tts.backend {name!r}")
