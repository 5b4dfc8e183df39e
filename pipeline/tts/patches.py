"""Patches to coqui-tts 0.28 for the libraries it runs beside (applied once, only where needed)."""

from __future__ import annotations

import numpy as np


def patch_xtts_for_transformers_cache_kwarg() -> None:
    """coqui-tts 0.28's GPT2InferenceModel.forward predates transformers 5's rename of generate's
    `past_key_values` to `cache`; without this its decoding loop fails on the second token. Applied
    only when the installed transformers passes `cache`, and only once."""
    import functools
    import inspect

    from TTS.tts.layers.xtts.gpt_inference import GPT2InferenceModel

    forward = GPT2InferenceModel.forward
    if getattr(forward, "_speechchat_cache_shim", False) or "cache" in inspect.signature(forward).parameters:
        return

    @functools.wraps(forward)
    def shimmed(self, *args, cache=None, **kwargs):
        if cache is not None and kwargs.get("past_key_values") is None:
            kwargs["past_key_values"] = cache
        return forward(self, *args, **kwargs)

    shimmed._speechchat_cache_shim = True
    GPT2InferenceModel.forward = shimmed


def read_reference(audiopath, sampling_rate):
    """Stand-in for coqui-tts's xtts.load_audio, which goes through torchaudio.load and therefore, from
    torchaudio 2.9, through torchcodec and FFmpeg's shared libraries, which GPU images often lack. The
    references are WAV/FLAC (the importers write FLAC), which soundfile reads; the result is the same
    [1, T] mono float tensor in [-1, 1] at `sampling_rate`."""
    import soundfile as sf
    import torch

    from pipeline.audio import resample

    samples, rate = sf.read(str(audiopath), dtype="float32", always_2d=True)
    mono = resample(samples.mean(axis=1), rate, sampling_rate)
    return torch.from_numpy(np.clip(mono, -1.0, 1.0)).unsqueeze(0)


def patch_xtts_reference_reader() -> None:
    from TTS.tts.models import xtts

    xtts.load_audio = read_reference
