"""TTS backends behind one small protocol, chosen by `tts.backend` (piper, vits, xtts).

A backend turns (text, speaker, language, seed) into float32 mono samples and their rate. Each backend
module also has a `check(tts_cfg, languages, resolve_path)` that finds its model files before Ray starts
and says what is missing. Coqui backends import torch only when built, so a Piper run never loads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from pipeline.voices.pool import Speaker

BACKENDS = ("piper", "vits", "xtts")


class TTSBackend(Protocol):
    model_id: str  # goes into every sample's JSON: backend, version, voice

    def synthesize(self, text: str, speaker: Speaker, language: str = "en", seed: int = 0) -> tuple[np.ndarray, int]:
        """Return float32 mono samples in [-1, 1] and their sample rate. `language` is the row's language
        (the backend maps it to its own code); `seed` makes a sampling model reproducible (a retry passes a new one)."""
        ...


def make_backend(name: str, piper_voice: Path | None, **options) -> TTSBackend:
    """Build the configured backend; Coqui backends import torch only here, so a Piper run never loads it."""
    if name == "piper":
        from pipeline.tts.piper import PiperBackend

        return PiperBackend(piper_voice, **options)
    if name == "vits":
        from pipeline.tts.vits import VitsBackend

        return VitsBackend(**options)
    if name == "xtts":
        from pipeline.tts.xtts import XttsBackend

        return XttsBackend(**options)
    raise ValueError(f"unknown tts.backend {name!r}")


def check_backend(cfg, languages: list[str], resolve_path) -> tuple[Path | None, list[str]]:
    """(the model file or folder, problems) for `cfg.backend` (`cfg` is the tts section)."""
    if cfg.backend == "piper":
        from pipeline.tts.piper import check

        return check(cfg, languages, resolve_path)
    from pipeline.tts.coqui import check

    return check(cfg, languages, resolve_path)
