"""faster-whisper (CTranslate2) on 16 kHz mono float32 audio: per turn (`WhisperASR`) and batched.

`BatchedWhisperASR` decodes many short clips (the turns of a conversation) in one batched pass:
faster-whisper's `BatchedInferencePipeline` decodes several 30-second windows together (one encoder call
and one batched greedy/beam decode for all of them). Its `clip_timestamps` names the windows: the clips
are laid end to end in one array and each clip becomes one window, so every turn is transcribed on its
own (no text bleeds between turns) while the model works on `batch_size` turns at once. Clips longer
than one window (30 s) fall back to the sequential per-clip call. Both have the same interface
(`pipeline.asr.base.ASRBackend`), so the verify stage does not care which it has.
"""

from __future__ import annotations

import bisect
from importlib.metadata import version
from pathlib import Path

import numpy as np

from pipeline.assets import whisper_tiny_en


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

    def transcribe_many(self, clips: list[np.ndarray], language: str | None = None) -> list[str]:
        """One transcript per clip, in order (one call per clip here; `BatchedWhisperASR` batches them)."""
        return [self.transcribe(clip, language) for clip in clips]

    def transcribe_words(self, audio_16k: np.ndarray, language: str | None = None) -> tuple[str, float | None]:
        """The transcript (same settings as `transcribe`) and the end time of the last word, if any."""
        segments, _info = self.model.transcribe(audio_16k, language=language or self.language,
                                                beam_size=self.beam_size, condition_on_previous_text=False,
                                                word_timestamps=True, vad_filter=False)
        segments = list(segments)
        ends = [w.end for s in segments for w in (s.words or [])]
        return " ".join(s.text.strip() for s in segments).strip(), (max(ends) if ends else None)


RATE = 16000
WINDOW_S = 30.0

class BatchedWhisperASR(WhisperASR):
    """`WhisperASR` (same model, same per-clip `transcribe`) plus `transcribe_many` for a batch of clips."""

    def __init__(self, model_dir: Path | None, language: str, compute_type: str = "int8", beam_size: int = 1,
                 device: str = "cpu", cpu_threads: int = 0, batch_size: int = 8):
        from faster_whisper import BatchedInferencePipeline

        if batch_size < 1:
            raise ValueError(f"BatchedWhisperASR: batch_size={batch_size} must be >= 1")
        super().__init__(model_dir, language, compute_type, beam_size, device=device, cpu_threads=cpu_threads)
        self.batch_size = batch_size
        self.pipeline = BatchedInferencePipeline(self.model)
        self.model_id += " batched"

    def transcribe_many(self, clips: list[np.ndarray], language: str | None = None) -> list[str]:
        """16 kHz mono float32 clips -> one transcript each, in order; `language` overrides the constructor's."""
        texts = [""] * len(clips)
        short = [i for i, c in enumerate(clips) if 0 < c.size <= WINDOW_S * RATE]
        for i, clip in enumerate(clips):
            if clip.size > WINDOW_S * RATE:
                texts[i] = self.transcribe(clip, language)
        if not short:
            return texts
        starts, pos = [], 0
        for i in short:
            starts.append(pos)
            pos += clips[i].size
        audio = np.concatenate([clips[i] for i in short]).astype(np.float32, copy=False)
        windows = [{"start": s / RATE, "end": (s + clips[i].size) / RATE} for s, i in zip(starts, short)]
        segments, _ = self.pipeline.transcribe(audio, language=language or self.language, beam_size=self.beam_size,
                                               without_timestamps=True, clip_timestamps=windows,
                                               batch_size=self.batch_size)
        # each segment carries its window's start (`seek`, in 10 ms frames): map it back to the clip
        seeks = [round(s / RATE * self.model.frames_per_second) for s in starts]
        parts: list[list[str]] = [[] for _ in short]
        for seg in segments:
            k = bisect.bisect_right(seeks, seg.seek + 1) - 1  # +1: the library truncates, we round
            parts[max(k, 0)].append(seg.text.strip())
        for k, i in enumerate(short):
            texts[i] = " ".join(p for p in parts[k] if p).strip()
        return texts
