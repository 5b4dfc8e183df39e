"""Which device a model worker uses: one rule for the TTS models (torch) and the ASR model (CTranslate2).

`auto` follows what Ray gave the actor: Ray hides GPUs from actors that asked for none (`num_gpus: 0`), so
an actor sees a GPU exactly when its stage asked for a share. `cuda` without a visible GPU is an error that
names the stage's keys. torch and ctranslate2 are imported here only when asked (Piper never loads torch).
"""

from __future__ import annotations


def _resolve(setting: str, gpus: int, problem: str) -> str:
    if setting == "auto":
        return "cuda" if gpus > 0 else "cpu"
    if setting == "cuda" and gpus == 0:
        raise RuntimeError(problem)
    return setting


def torch_device(setting: str) -> str:
    """`tts.device` -> the torch device of this TTS actor."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return _resolve(setting, gpus, "tts.device is 'cuda' but this TTS actor sees no GPU (check tts.num_gpus and the "
                                   "cluster)")


def ctranslate2_device(setting: str) -> str:
    """`verify.device` -> the CTranslate2 device of this verify actor."""
    import ctranslate2

    return _resolve(setting, ctranslate2.get_cuda_device_count(),
                    "verify.device is 'cuda' but CTranslate2 sees no GPU in this verify actor (check verify.num_gpus, "
                    "and that CUDA 12's cuBLAS and cuDNN 9 libraries are installed)")
