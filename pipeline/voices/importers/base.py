"""What a corpus reader yields: speakers with their candidate clips, before any audio is opened."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg")


@dataclass
class SourceClip:
    path: Path
    text: str | None = None


@dataclass
class SourceSpeaker:
    original_id: str
    gender: str = "unknown"
    language: str | None = None  # per speaker when the corpus says (Common Voice locale); else the import's
    clips: list[SourceClip] = field(default_factory=list)


def safe_speaker_id(corpus: str, original_id: str) -> str:
    """`<corpus>-<original id>` reduced to SAFE_NAME (letters, digits, _ and -; at most 64 characters).

    Replaced characters or an over-long ID get a short hash of the original, so two different originals
    never collapse onto one ID.
    """
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "_", original_id).strip("_-") or "x"
    sid = f"{corpus}-{cleaned}"
    if cleaned != original_id or len(sid) > 64:
        digest = hashlib.sha256(original_id.encode()).hexdigest()[:10]
        sid = f"{corpus}-{cleaned[: 64 - len(corpus) - 12]}-{digest}"
    return sid


def normalise_gender(value: str | None) -> str:
    v = (value or "").strip().lower()
    if v in ("f", "female", "female_feminine", "woman"):
        return "female"
    if v in ("m", "male", "male_masculine", "man"):
        return "male"
    return "unknown"


def read_text(path: Path) -> str | None:
    """A transcript sidecar file, or None when it is missing or unreadable (a transcript is optional)."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return " ".join(text.split()) or None
