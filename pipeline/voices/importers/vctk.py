"""VCTK: `wav48_silence_trimmed/pNNN/pNNN_NNN_mic1.flac` (0.92) or `wav48/pNNN/pNNN_NNN.wav` (0.80),
transcripts in `txt/pNNN/pNNN_NNN.txt`, gender in `speaker-info.txt` (`ID AGE GENDER ACCENTS ...`).

Of the two microphones of 0.92 only mic1 is used (mic2 is the same utterance, so it adds no voice variety).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from pipeline.voices.importers.base import SourceClip, SourceSpeaker, normalise_gender, read_text

PREFIX, SOURCE, LICENSE, LANGUAGE = "vctk", "VCTK", "CC-BY-4.0", "en"


def _genders(src: Path) -> dict[str, str]:
    info = src / "speaker-info.txt"
    out: dict[str, str] = {}
    if info.is_file():
        for line in info.read_text(encoding="utf-8", errors="replace").splitlines():
            cols = line.split()
            if len(cols) >= 3 and cols[0].upper() != "ID":
                spk = cols[0] if cols[0].startswith(("p", "s")) else f"p{cols[0]}"  # 0.80 lists 225, not p225
                out[spk] = normalise_gender(cols[2])
    return out


def scan(src: Path) -> Iterator[SourceSpeaker]:
    audio_root = next((src / d for d in ("wav48_silence_trimmed", "wav48") if (src / d).is_dir()), None)
    if audio_root is None:
        raise FileNotFoundError(f"{src}: no wav48_silence_trimmed/ or wav48/ folder (is this a VCTK root?)")
    genders = _genders(src)
    for spk_dir in sorted(p for p in audio_root.iterdir() if p.is_dir()):
        files = sorted(spk_dir.glob("*_mic1.flac")) or sorted(spk_dir.glob("*.wav")) or sorted(spk_dir.glob("*.flac"))
        clips = []
        for f in files:
            utt = re.sub(r"_mic\d$", "", f.stem)
            clips.append(SourceClip(f, read_text(src / "txt" / spk_dir.name / f"{utt}.txt")))
        if clips:
            yield SourceSpeaker(spk_dir.name, genders.get(spk_dir.name, "unknown"), None, clips)
