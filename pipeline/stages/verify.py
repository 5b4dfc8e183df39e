"""Verify: transcribe every turn back with ASR and reject conversations whose audio does not say the text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.audio import decode_audio, resample
from pipeline.backends.asr import WhisperASR
from pipeline.config import VerifyConfig
from pipeline.metrics import error_rate
from pipeline.stages.base import Rejected, Stage

ASR_RATE = 16000


class VerifyStage(Stage):
    name = "verify"

    def __init__(self, cfg: VerifyConfig, asr_model: Path | None):
        super().__init__()
        self.cfg, self.asr_model_path = cfg, asr_model
        self.asr: WhisperASR | None = None

    def setup(self) -> None:
        self.asr = WhisperASR(self.asr_model_path, self.cfg.asr_language, self.cfg.compute_type, self.cfg.beam_size)

    def process_row(self, row: dict[str, Any]) -> None:
        assert self.asr is not None
        row["asr_model"] = self.asr.model_id
        failures = []
        for i, turn in enumerate(row["turns"]):
            duration = turn["duration_s"] or 0.0
            if duration < self.cfg.min_duration_s:
                raise Rejected("audio_too_short", f"turn {i} ({turn['role']}): {duration:.2f}s < {self.cfg.min_duration_s}s")
            if duration > self.cfg.max_duration_s:
                raise Rejected("audio_too_long", f"turn {i} ({turn['role']}): {duration:.1f}s > {self.cfg.max_duration_s}s")
            samples, rate = decode_audio(turn["audio_flac"])
            turn["asr_text"] = self.asr.transcribe(resample(samples, rate, ASR_RATE))
            turn["error_rate"] = error_rate(turn["spoken_text"], turn["asr_text"], row["language"])
            if turn["error_rate"] > self.cfg.max_wer:
                failures.append(f"turn {i} ({turn['role']}) WER {turn['error_rate']:.2f}: "
                                f"said {turn['spoken_text'][:60]!r}, heard {turn['asr_text'][:60]!r}")
        if failures:
            raise Rejected("asr_error_rate_above_threshold", f"max {self.cfg.max_wer}; " + "; ".join(failures))
