"""LibriTTS-R: `<split>/<speaker>/<chapter>/<speaker>_<chapter>_<utt>.wav` + `.normalized.txt`.

Gender comes from `speakers.tsv` (READER, GENDER, ...) or LibriSpeech's `SPEAKERS.txt` (`ID | SEX | ...`)
in the source folder or its parent. `--src` may be the corpus root or one split folder.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from pipeline.voices.importers.base import SourceClip, SourceSpeaker, normalise_gender, read_text

PREFIX, SOURCE, LICENSE, LANGUAGE = "librittsr", "LibriTTS-R", "CC-BY-4.0", "en"
UTT = re.compile(r"^(\d+)_(\d+)_[\w-]+$")


def _genders(src: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for folder in (src, src.parent):
        tsv, txt = folder / "speakers.tsv", folder / "SPEAKERS.txt"
        if tsv.is_file():
            for line in tsv.read_text(encoding="utf-8", errors="replace").splitlines()[1:]:
                cols = line.split("\t")
                if len(cols) >= 2:
                    out.setdefault(cols[0].strip(), normalise_gender(cols[1]))
        if txt.is_file():
            for line in txt.read_text(encoding="utf-8", errors="replace").splitlines():
                cols = [c.strip() for c in line.split("|")]
                if not line.startswith(";") and len(cols) >= 2:
                    out.setdefault(cols[0], normalise_gender(cols[1]))
    return out


def scan(src: Path) -> Iterator[SourceSpeaker]:
    clips: dict[str, list[SourceClip]] = defaultdict(list)
    for wav in sorted(src.rglob("*.wav")):
        m = UTT.match(wav.stem)
        if m:
            clips[m.group(1)].append(SourceClip(wav, read_text(wav.with_suffix(".normalized.txt"))))
    genders = _genders(src)
    for spk in sorted(clips, key=lambda s: (len(s), s)):
        yield SourceSpeaker(spk, genders.get(spk, "unknown"), None, clips[spk])
