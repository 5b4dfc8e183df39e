"""Coqui TTS weights: where a VITS or XTTS-v2 checkpoint is, checked before any work starts (coqui-tts 0.28).

Weights come from a local checkpoint folder or a Coqui model name already in the local Coqui cache
(`TTS_HOME`, else `~/.local/share/tts`); nothing is ever downloaded here: `resolve_model` runs in the
preflight and says what to download when the files are missing. The backends themselves
are `pipeline.tts.vits` and `pipeline.tts.xtts`; torch and TTS are imported there only, so the default
Piper path never loads them.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.config import ConfigError

XTTS_MODEL_NAME = "tts_models/multilingual/multi-dataset/xtts_v2"
XTTS_FILES = ("config.json", "model.pth", "vocab.json")
XTTS_DOWNLOAD_HINT = ("download coqui/XTTS-v2 from the Hugging Face Hub (config.json, model.pth, vocab.json, "
                      "speakers_xtts.pth), e.g. `hf download coqui/XTTS-v2 --local-dir models/XTTS-v2`, and set "
                      "tts.model=models/XTTS-v2 (licence: Coqui Public Model Licence, non-commercial)")
VITS_DOWNLOAD_HINT = ("point tts.model at a multi-speaker Coqui VITS checkpoint folder (config.json + model .pth, "
                      "plus speakers.pth/speakers.json for named speakers), or fetch one into the Coqui cache once, "
                      "e.g. `tts --model_name tts_models/en/vctk/vits --list_speaker_idxs`, and set "
                      "tts.model=tts_models/en/vctk/vits")


# --- weights: where they are, checked before any work starts ---------------------------------------


def coqui_cache_dir() -> Path:
    """Coqui's model cache (what `tts --model_name ...` fills): TTS_HOME, XDG_DATA_HOME, else ~/.local/share."""
    from trainer.io import get_user_data_dir  # the rule coqui-tts itself uses

    return Path(get_user_data_dir("tts"))


def vits_checkpoint(folder: Path) -> Path | None:
    for name in ("model.pth", "model_file.pth", "best_model.pth"):
        if (folder / name).is_file():
            return folder / name
    found = sorted(p for p in folder.glob("*.pth") if not p.name.startswith("speakers"))
    return found[0] if found else None


def resolve_model(backend: str, model: str | None) -> Path:
    """The checkpoint folder of `model` (a folder, or a Coqui model name in the local cache); raises a
    ConfigError saying what to download and which key to set when the weights are not there."""
    model = model or (XTTS_MODEL_NAME if backend == "xtts" else None)
    if not model:
        raise ConfigError(f"tts.backend {backend!r} needs tts.model; {VITS_DOWNLOAD_HINT}")
    folder = Path(model).expanduser()
    if not folder.is_dir() and not folder.is_absolute() and len(model.split("/")) == 4:
        folder = coqui_cache_dir() / model.replace("/", "--")  # Coqui's cache layout for a model name
    hint = XTTS_DOWNLOAD_HINT if backend == "xtts" else VITS_DOWNLOAD_HINT
    label = "XTTS-v2" if backend == "xtts" else "Coqui VITS"
    if not folder.is_dir():
        raise ConfigError(f"{label} weights not found at {folder}: {hint}")
    if backend == "xtts":
        missing = [f for f in XTTS_FILES if not (folder / f).is_file()]
        if missing:
            raise ConfigError(f"{label} weights incomplete at {folder} (missing {', '.join(missing)}): {hint}")
    elif not (folder / "config.json").is_file() or vits_checkpoint(folder) is None:
        raise ConfigError(f"{label} weights incomplete at {folder} (need config.json and a .pth): {hint}")
    return folder


def model_languages(folder: Path) -> list[str] | None:
    """Languages a checkpoint's config.json declares (XTTS lists them), read without loading the model."""
    import json

    try:
        langs = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("languages")
    except (OSError, ValueError):
        return None
    return list(langs) if isinstance(langs, list) else None


def fingerprint(path: Path) -> str:
    st = path.stat()  # hashing a 1.8 GB checkpoint per actor is too slow; size + mtime tell versions apart
    return f"{path.name}:{st.st_size}:{st.st_mtime_ns}"


def weights_folder(cfg, resolve_path) -> Path:
    """The checkpoint folder of tts.model; a relative path is relative to the repository root."""
    model = cfg.model
    if model and not Path(model).is_absolute() and resolve_path(Path(model)).is_dir():
        model = str(resolve_path(Path(model)))
    return resolve_model(cfg.backend, model)


def check(cfg, languages: list[str], resolve_path) -> tuple[Path | None, list[str]]:
    """The Coqui checkpoint folder this run uses, and why it cannot run (checked before Ray starts)."""
    from importlib.util import find_spec

    missing = [name for name in ("torch", "TTS", "trainer") if find_spec(name) is None]
    if missing:  # looked up, not imported: a weights folder given by path would not notice until an actor starts
        return None, [f"tts.backend {cfg.backend} needs Coqui TTS and torch ({', '.join(missing)} not installed): "
                      f"install the gpu extra, pip install -e '.[gpu]'"]
    try:
        folder = weights_folder(cfg, resolve_path)
    except ConfigError as exc:
        return None, [str(exc)]
    except ImportError as exc:  # coqui-tts (and its `trainer`) come with the gpu extra, not the plain install
        return None, [f"tts.backend {cfg.backend} needs Coqui TTS and torch ({exc.name or exc} is not installed): "
                      f"pip install -e .[gpu]"]
    problems = []
    if cfg.backend == "xtts":
        known = model_languages(folder) or []
        for lang in languages:
            code = cfg.languages.get(lang, lang)
            if known and code not in known:
                problems.append(f"tts.languages: {lang!r} maps to {code!r}, which {folder} does not speak "
                                f"({', '.join(known)})")
    return folder, problems
