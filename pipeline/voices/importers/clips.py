"""Validate one reference clip: readable, mono (downmixed), 3-30 s, not silent, not clipped; resample it.

A bad clip raises `ClipRejected(reason, details)`; reasons are short codes counted in the import report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from pipeline.audio import resample, to_mono_float32


@dataclass(frozen=True)
class ClipRules:
    min_s: float = 3.0
    max_s: float = 30.0
    min_rms_dbfs: float = -50.0      # quieter than this over the whole clip = silence
    clip_level: float = 0.999        # |sample| at or above this counts as full scale
    max_clipped_fraction: float = 0.001
    sample_rate: int = 24000         # XTTS-v2 conditions on 22.05/24 kHz audio


class ClipRejected(Exception):
    def __init__(self, reason: str, details: str):
        super().__init__(f"{reason}: {details}")
        self.reason, self.details = reason, details


def load_clip(path: Path, rules: ClipRules) -> tuple[np.ndarray, float]:
    """Return the clip as mono float32 at `rules.sample_rate` and its duration in seconds."""
    try:
        samples, rate = sf.read(str(path), dtype="float32", always_2d=False)
    except Exception as exc:  # noqa: BLE001 -- libsndfile raises several types for truncated, foreign or random bytes
        raise ClipRejected("unreadable", f"{type(exc).__name__}: {str(exc)[:200]}") from None
    x = to_mono_float32(samples)
    if x.size == 0 or rate <= 0:
        raise ClipRejected("unreadable", f"no audio frames (rate {rate})")
    if not np.isfinite(x).all():
        raise ClipRejected("unreadable", "non-finite sample values")
    duration = x.size / rate
    if duration < rules.min_s:
        raise ClipRejected("too_short", f"{duration:.2f}s < {rules.min_s}s")
    if duration > rules.max_s:
        raise ClipRejected("too_long", f"{duration:.1f}s > {rules.max_s}s")
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    rms_dbfs = 20 * np.log10(max(rms, 1e-10))
    if rms_dbfs < rules.min_rms_dbfs:
        raise ClipRejected("silent", f"RMS {rms_dbfs:.1f} dBFS < {rules.min_rms_dbfs} dBFS")
    clipped = float(np.mean(np.abs(x) >= rules.clip_level))
    if clipped > rules.max_clipped_fraction:
        raise ClipRejected("clipped", f"{clipped:.2%} of samples at full scale (max {rules.max_clipped_fraction:.2%})")
    out = np.clip(resample(x, int(rate), rules.sample_rate), -1.0, 1.0)
    return out, out.size / rules.sample_rate
