"""A plain folder of your own recordings (wav, flac, mp3, ogg; transcript in a same-stem `.txt`, optional).

- `<src>/<speaker>/**/*.wav`: every subfolder is one speaker (its name is the original ID);
- audio directly in `<src>`: the speaker is the file stem up to the first `_` (`alice_001.wav` -> alice;
  a stem without `_` is a speaker of its own).
Both may be mixed. Gender is unknown; `--language` is required.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from pipeline.voices.importers.base import AUDIO_EXTENSIONS, SourceClip, SourceSpeaker, read_text

PREFIX, SOURCE, LICENSE, LANGUAGE = "folder", "folder", None, None


def scan(src: Path) -> Iterator[SourceSpeaker]:
    clips: dict[str, list[SourceClip]] = defaultdict(list)
    for path in sorted(src.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in AUDIO_EXTENSIONS:
            continue
        rel = path.relative_to(src)
        spk = rel.parts[0] if len(rel.parts) > 1 else path.stem.split("_", 1)[0]
        clips[spk].append(SourceClip(path, read_text(path.with_suffix(".txt"))))
    for spk in sorted(clips):
        yield SourceSpeaker(spk, "unknown", None, clips[spk])
