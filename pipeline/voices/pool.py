"""Speaker pools: a JSONL manifest, one speaker per line, validated on load (schema v2, documented in README).

A speaker is voiced by one TTS backend in one of three ways:
- a model-internal voice: `voice` (a model file/name; "default" = the backend's packaged voice) and, for
  multi-speaker models, `speaker_index` or `speaker_name`;
- voice cloning from `references` (XTTS-v2): validated reference clips, paths relative to the pool file;
- a virtual voice: `recipe` mixes the conditioning of several source speakers (Ke-SpeechChat's
  "virtual voice library"); never a copy of one real person.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.config import SAFE_NAME, ConfigError

BackendName = Literal["piper", "vits", "xtts"]


class ReferenceClip(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    path: str = Field(description="audio file, relative to the pool manifest's folder (or absolute)")
    duration_s: float = Field(gt=0)
    sample_rate: int = Field(gt=0)
    dnsmos_ovrl: float | None = Field(None, description="DNSMOS overall (1-5) measured at import")
    text: str | None = Field(None, description="transcript when the corpus has one")


class VoiceRecipe(BaseModel):
    """How a virtual voice was made: a weighted mix of source speakers' conditioning plus seeded noise."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    sources: list[str] = Field(min_length=2, description="speaker_ids of the source voices")
    weights: list[float] = Field(min_length=2)
    seed: int
    noise_scale: float = Field(0.0, ge=0)
    min_distance_to_sources: float | None = Field(None, description="speaker-embedding cosine distance at creation")

    @model_validator(mode="after")
    def _weights_match_sources(self) -> VoiceRecipe:
        if len(self.weights) != len(self.sources):
            raise ValueError(f"{len(self.weights)} weights for {len(self.sources)} sources")
        if any(w < 0 for w in self.weights) or abs(sum(self.weights) - 1.0) > 1e-3:
            raise ValueError("recipe weights must be >= 0 and sum to 1")
        return self


class Speaker(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    speaker_id: str = Field(pattern=SAFE_NAME.pattern)
    language: str
    gender: Literal["female", "male", "unknown"] = "unknown"
    source: str = Field(description="corpus or model the voice comes from")
    license: str
    backend: BackendName
    voice: str = Field("default", description="model name/path; 'default' means the backend's configured model")
    speaker_index: int | None = Field(None, ge=0, description="row of a multi-speaker model's speaker table")
    speaker_name: str | None = Field(None, description="a multi-speaker model's internal speaker name")
    references: list[ReferenceClip] = Field(default_factory=list, description="clips for voice cloning")
    recipe: VoiceRecipe | None = None
    dnsmos_ovrl: float | None = Field(None, description="mean DNSMOS overall of the references")
    assignable: bool = Field(True, description="false: only an ingredient of virtual voices, never assigned to a turn")

    @model_validator(mode="after")
    def _xtts_needs_references(self) -> Speaker:
        if self.backend == "xtts" and not self.references and self.recipe is None and self.speaker_name is None:
            raise ValueError("an xtts speaker needs references, a recipe or a built-in speaker_name")
        return self


def load_pool(path: Path) -> list[Speaker]:
    if not path.is_file():
        raise ConfigError(f"speaker pool not found: {path} (set voices.pool, or make one with `speechchat speakers import`)")
    speakers: list[Speaker] = []
    seen: set[str] = set()
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            spk = Speaker.model_validate(json.loads(line))
        except (json.JSONDecodeError, ValidationError) as exc:
            raise ConfigError(f"{path} line {lineno}: bad speaker record: {exc}") from None
        if spk.speaker_id in seen:
            raise ConfigError(f"{path} line {lineno}: duplicate speaker_id {spk.speaker_id!r}")
        seen.add(spk.speaker_id)
        speakers.append(spk)
    if not speakers:
        raise ConfigError(f"{path}: speaker pool is empty")
    return speakers


MAX_CLIP_PATH = 1024  # characters; a longer path is not a file name any filesystem keeps


def reference_path(pool_file: Path, clip: ReferenceClip) -> Path:
    """Resolve a clip path against the pool file's folder; refuse paths that leave it, absolute ones included
    (a manifest is data from elsewhere: it may not point the pipeline at any file on the machine)."""
    if "\0" in clip.path:
        raise ConfigError(f"{pool_file}: reference clip path {clip.path!r} holds a NUL byte")
    if len(clip.path) > MAX_CLIP_PATH:
        raise ConfigError(f"{pool_file}: reference clip path of {len(clip.path)} characters (more than "
                          f"{MAX_CLIP_PATH})")
    base = pool_file.resolve().parent
    resolved = (base / clip.path).resolve()  # an absolute clip.path replaces base
    if base not in resolved.parents:
        raise ConfigError(f"{pool_file}: reference clip {clip.path!r} escapes the pool folder")
    return resolved


def _path_problem(pool_file: Path, clip: ReferenceClip) -> str | None:
    if "\0" in clip.path:
        return "path holds a NUL byte"
    if len(clip.path) > MAX_CLIP_PATH:
        return f"path of {len(clip.path)} characters (more than {MAX_CLIP_PATH})"
    try:
        reference_path(pool_file, clip)
    except ConfigError:
        return ("absolute path outside the pool folder" if Path(clip.path).is_absolute()
                else "path escapes the pool folder")
    return None


def clip_problem(pool_file: Path, clip: ReferenceClip) -> str | None:
    """Why a reference clip cannot be used, or None. Cheap: a stat and the header only, never the samples."""
    import soundfile as sf

    problem = _path_problem(pool_file, clip)
    if problem:
        return problem
    path = reference_path(pool_file, clip)
    try:
        if not path.is_file():
            return "file not found"
        if path.stat().st_size == 0:
            return "empty file"
    except OSError as exc:  # a name too long for the filesystem, a permission
        return f"not usable ({exc.strerror})"
    try:
        info = sf.info(str(path))
    except (RuntimeError, OSError) as exc:  # soundfile's LibsndfileError is a RuntimeError
        return f"not readable as audio ({str(exc).strip().splitlines()[-1][:120]})"
    if info.frames <= 0 or info.samplerate <= 0:
        return f"no audio frames ({info.frames} frames at {info.samplerate} Hz)"
    return None


def check_references(pool: list[Speaker], pool_file: Path) -> tuple[list[Speaker], list[dict[str, str]]]:
    """Split a pool into usable speakers and dropped ones: a speaker with any missing or unreadable reference
    clip is dropped (one bad clip would make its cloned voice differ from what the manifest promises).
    Returns (kept, dropped) where each dropped entry names speaker_id, file and problem."""
    kept: list[Speaker] = []
    dropped: list[dict[str, str]] = []
    for spk in pool:
        problems = [(clip.path, why) for clip in spk.references if (why := clip_problem(pool_file, clip))]
        if problems:
            dropped += [{"speaker_id": spk.speaker_id, "file": f, "problem": why} for f, why in problems]
        else:
            kept.append(spk)
    return kept, dropped
