"""Batched ASR: transcribe many short clips (the turns of a batch of conversations) in one batched pass.

faster-whisper's `BatchedInferencePipeline` decodes several 30-second windows together (one encoder call
and one batched greedy/beam decode for all of them). Its `clip_timestamps` names the windows: the clips
are laid end to end in one array and each clip becomes one window, so every turn is transcribed on its
own (no text bleeds between turns) while the model works on `batch_size` turns at once. Clips longer
than one window (30 s) fall back to the sequential per-clip call.
"""

from __future__ import annotations

import bisect
from pathlib import Path

import numpy as np

from pipeline.backends.asr import WhisperASR

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
