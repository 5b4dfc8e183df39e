"""ASR backends behind one interface: what the verify stage needs from a speech recogniser.

Today's backend is faster-whisper (`pipeline.asr.whisper`), per turn or batched (`verify.asr_batch_size`);
`make_asr` picks the class, `check` finds the model files before Ray starts and says what is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from pipeline.assets import PACKAGED_ASR, MissingAsset, packaged_asr, whisper_tiny_en
from pipeline.devices import ctranslate2_device


class ASRBackend(Protocol):
    model_id: str  # goes into every sample's JSON: model, version, compute type

    def transcribe(self, audio_16k: np.ndarray, language: str | None = None) -> str:
        """One 16 kHz mono float32 clip -> its transcript; `language` None: the backend's own (or detected)."""
        ...

    def transcribe_many(self, clips: list[np.ndarray], language: str | None = None) -> list[str]:
        """Several clips -> one transcript each, in order (batched where the backend can)."""
        ...

    def transcribe_words(self, audio_16k: np.ndarray, language: str | None = None) -> tuple[str, float | None]:
        """The transcript and the end time (s) of the last recognised word, None when no word was heard."""
        ...


def make_asr(cfg, model_dir: Path | None, threads: int | None) -> ASRBackend:
    """The configured recogniser (`cfg` is the verify section) on the device this actor was given."""
    from pipeline.asr.whisper import BatchedWhisperASR, WhisperASR

    device = ctranslate2_device(cfg.device)
    common = dict(device=device, cpu_threads=threads or 0)
    if cfg.asr_batch_size > 1:
        return BatchedWhisperASR(model_dir, cfg.asr_language, cfg.compute_type, cfg.beam_size,
                                 batch_size=cfg.asr_batch_size, **common)
    return WhisperASR(model_dir, cfg.asr_language, cfg.compute_type, cfg.beam_size, **common)


def check(cfg, languages: list[str], resolve_path) -> tuple[Path | None, list[str]]:
    """(the model folder, None for the packaged tiny.en; problems) for `cfg` (the verify section)."""
    if not cfg.enabled:  # verify.enabled=false needs no ASR model
        return None, []
    name = None if cfg.asr_model is None else str(cfg.asr_model)
    try:
        if name in (None, "tiny.en"):  # stays None so that the backend names it "tiny.en", but must exist
            whisper_tiny_en()
            others = [lang for lang in languages if lang != "en"]
            if others and cfg.asr_language in (None, *others):
                return None, [f"verify.asr_model: Whisper tiny.en is English-only but the run has {others}; set "
                              f"verify.asr_model=base (packaged multilingual) or a multilingual model folder"]
            return None, []
        if name in PACKAGED_ASR:  # "base": shipped in PyPI packages
            return packaged_asr(name), []
    except MissingAsset as exc:
        return None, [str(exc)]
    folder = resolve_path(cfg.asr_model)
    if not (folder / "model.bin").is_file():
        return folder, [f"verify.asr_model: {folder}/model.bin does not exist"]
    return folder, []
