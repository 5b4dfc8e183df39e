"""The training loader's log-mel features against the reference implementation the field uses: faster-whisper's
`FeatureExtractor` (numpy, its own Slaney filters and STFT), not against pipeline.training.features itself."""

import numpy as np
import pytest
from faster_whisper.feature_extractor import FeatureExtractor

from pipeline.training.features import log_mel


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """A chirp with harmonics, a loud burst and a quiet tail: energy across the mel range and an 8-decade floor."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    f0 = 120 + 80 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    x = sum(np.sin(k * phase) / k for k in range(1, 12)) * (0.3 + 0.2 * np.sin(2 * np.pi * 3 * t))
    x[: len(x) // 5] *= 3.0
    x[-len(x) // 6:] *= 1e-4
    return (0.1 * x + 0.002 * rng.standard_normal(len(x))).astype(np.float32)


@pytest.mark.parametrize("n_mels", [80, 128])
@pytest.mark.parametrize("seconds", [0.2, 1.37, 6.0])
def test_log_mel_equals_faster_whispers_feature_extractor(n_mels, seconds):
    audio = speech_like(seconds)
    reference = FeatureExtractor(feature_size=n_mels)(audio, padding=0)  # padding 0: the loader pads per batch
    ours = log_mel(audio, n_mels).numpy()
    assert ours.shape == reference.shape == (n_mels, len(audio) // 160)
    np.testing.assert_allclose(ours, reference, rtol=0, atol=5e-4)  # float32 FFTs in two libraries


def test_log_mel_refuses_a_size_whisper_does_not_have():
    with pytest.raises(ValueError, match="n_mels must be 80 or 128"):
        log_mel(np.zeros(1600, dtype=np.float32), 64)
