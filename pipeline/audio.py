"""Audio I/O at the edges: FLAC bytes <-> float32 arrays, resampling (soxr)."""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf
import soxr


def to_mono_float32(samples: np.ndarray) -> np.ndarray:
    x = np.asarray(samples, dtype=np.float32)
    return x.mean(axis=1) if x.ndim == 2 else x


def resample(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    x = to_mono_float32(samples)
    return x if rate_in == rate_out else soxr.resample(x, rate_in, rate_out, quality="HQ").astype(np.float32)


def encode_flac(samples: np.ndarray, sample_rate: int) -> bytes:
    """16-bit mono FLAC; samples are floats in [-1, 1] (clipped, not wrapped, if they stray)."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(to_mono_float32(samples), -1.0, 1.0), sample_rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def decode_audio(data: bytes) -> tuple[np.ndarray, int]:
    samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
    return to_mono_float32(samples), int(rate)
