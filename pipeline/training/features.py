"""Whisper-style log-mel features (16 kHz, 25 ms window, 10 ms hop, 80 or 128 bins), as an LSLM encoder eats them.

The same recipe as openai/whisper's `log_mel_spectrogram` (power STFT, Slaney mel filters, log10, an 8-decade
dynamic range, scaled by (x + 4) / 4), without padding to 30 s: the loader pads per batch instead.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160
ENCODER_STRIDE = 2  # Whisper's encoder halves the frame rate: 100 mel frames/s -> 50 speech tokens/s


@lru_cache(maxsize=4)
def _mel_filters(n_mels: int):
    import librosa
    import torch

    return torch.from_numpy(librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=n_mels)).float()


def log_mel(audio_16k: np.ndarray, n_mels: int = 80):
    """float32 mono 16 kHz samples -> torch tensor (n_mels, frames), frames = len // 160."""
    import torch

    if n_mels not in (80, 128):
        raise ValueError(f"n_mels must be 80 or 128 (Whisper's sizes), got {n_mels}")
    x = torch.from_numpy(np.ascontiguousarray(audio_16k, dtype=np.float32))
    if x.numel() < N_FFT:  # shorter than one window: pad so there is at least one frame
        x = torch.nn.functional.pad(x, (0, N_FFT - x.numel()))
    stft = torch.stft(x, N_FFT, HOP, window=torch.hann_window(N_FFT), return_complex=True)
    power = stft[..., :-1].abs() ** 2
    mel = _mel_filters(n_mels) @ power
    log_spec = torch.clamp(mel, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


def speech_token_frames(features) -> np.ndarray:
    """(n_mels, T) log-mel -> (ceil(T/2), n_mels) frames at the encoder's 50 Hz rate (pairs averaged)."""
    f = np.asarray(features, dtype=np.float32).T
    if len(f) % ENCODER_STRIDE:
        f = np.concatenate([f, f[-1:]], axis=0)
    return f.reshape(-1, ENCODER_STRIDE, f.shape[1]).mean(axis=1)
