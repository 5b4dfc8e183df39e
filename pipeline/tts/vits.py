"""Multi-speaker Coqui VITS: a speaker is a row of the model's speaker table (speaker_index or speaker_name).

Synthesis is batched (pipeline/tts/vits_batched.py, `max_batch_turns` per forward); a turn with a given seed
sounds the same alone or in any batch. One turn (`synthesize`) is a batch of one."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import numpy as np

from pipeline.devices import torch_device
from pipeline.tts.base import BatchResult, SynthesisRequest, synthesize_one
from pipeline.tts.coqui import fingerprint, resolve_model, vits_checkpoint
from pipeline.voices.pool import Speaker


class VitsBackend:
    """A multi-speaker Coqui VITS; a speaker is a row of its speaker table (speaker_index or speaker_name)."""

    def __init__(self, model: str, device: str = "auto", languages: dict[str, str] | None = None,
                 max_batch_turns: int = 8, **_ignored):
        import torch
        from TTS.config import load_config
        from TTS.tts.models import setup_model

        folder = resolve_model("vits", model)
        config = load_config(str(folder / "config.json"))
        for holder in (config, config.model_args):  # a speakers file named in the config lives beside it
            name = getattr(holder, "speakers_file", None)
            if name and not Path(name).is_file() and (folder / Path(name).name).is_file():
                holder.speakers_file = str(folder / Path(name).name)
        self.device = torch_device(device)
        self.model = setup_model(config)
        checkpoint = vits_checkpoint(folder)
        self.model.load_checkpoint(config, str(checkpoint), eval=True)
        self.model.to(self.device)
        self.sample_rate = int(config.audio.sample_rate)
        self.num_speakers = int(getattr(self.model, "num_speakers", 0) or 0)
        manager = getattr(self.model, "speaker_manager", None)
        self.speaker_names: dict[str, int] = dict(manager.name_to_id) if manager is not None else {}
        lang_manager = getattr(self.model, "language_manager", None)
        self.language_ids: dict[str, int] = dict(lang_manager.name_to_id) if lang_manager is not None else {}
        self.languages = languages or {}
        self.max_batch_turns = max_batch_turns
        self._torch = torch
        self.model_id = f"coqui-tts {version('coqui-tts')} vits {Path(model).name} ({fingerprint(checkpoint)})"

    def speaker_row(self, speaker: Speaker) -> int | None:
        if speaker.speaker_name is not None:
            if speaker.speaker_name not in self.speaker_names:
                raise ValueError(f"speaker {speaker.speaker_id}: speaker_name {speaker.speaker_name!r} is not in the "
                                 f"model's {len(self.speaker_names)} speakers")
            return self.speaker_names[speaker.speaker_name]
        if speaker.speaker_index is not None:
            if not 0 <= speaker.speaker_index < max(self.num_speakers, 1):
                raise ValueError(f"speaker {speaker.speaker_id}: speaker_index {speaker.speaker_index} is outside the "
                                 f"model's {self.num_speakers} speakers")
            return speaker.speaker_index if self.num_speakers else None
        if self.num_speakers:
            raise ValueError(f"speaker {speaker.speaker_id}: a multi-speaker VITS needs speaker_index or speaker_name")
        return None

    def language_id(self, language: str) -> int | None:
        """The model's language id for a row language; None for a single-language model or an unknown code."""
        code = self.languages.get(language, language)
        return self.language_ids[code] if len(self.language_ids) > 1 and code in self.language_ids else None

    def synthesize(self, text: str, speaker: Speaker, language: str = "en", seed: int = 0) -> tuple[np.ndarray, int]:
        return synthesize_one(self, SynthesisRequest(text, speaker, language, seed))

    def synthesize_batch(self, requests: list[SynthesisRequest]) -> BatchResult:
        from pipeline.tts.vits_batched import synthesize_batch

        return synthesize_batch(self, requests, max_batch=self.max_batch_turns)
