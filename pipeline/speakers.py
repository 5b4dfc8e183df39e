"""Speaker pools: a JSONL manifest, one speaker per line, validated on load.

Fields: speaker_id (safe name), language, gender ("female" | "male" | "unknown"), source (corpus or
model), license, backend (the TTS backend that can voice it), voice (model name or path, relative to
the repository root or a package-provided default), speaker_index (for multi-speaker models, else null).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.config import SAFE_NAME, ConfigError


class Speaker(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    speaker_id: str = Field(pattern=SAFE_NAME.pattern)
    language: str
    gender: Literal["female", "male", "unknown"] = "unknown"
    source: str
    license: str
    backend: Literal["piper"]
    voice: str = Field(description="model name/path; 'default' means the backend's packaged voice")
    speaker_index: int | None = Field(None, ge=0)


def load_pool(path: Path) -> list[Speaker]:
    if not path.is_file():
        raise ConfigError(f"speaker pool not found: {path} (set voices.pool)")
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
