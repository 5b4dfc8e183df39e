"""AISHELL-3: `train|test/wav/SSB0005/SSB00050001.wav`, transcripts in `train|test/content.txt`
(`SSB00050001.wav<TAB>广 guang3 州 zhou1 ...`: characters interleaved with pinyin; the characters are kept),
speakers in `spk-info.txt` (`SSB0005  A  female  north`: ID, age group, gender, accent).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from pipeline.voices.importers.base import SourceClip, SourceSpeaker, normalise_gender

PREFIX, SOURCE, LICENSE, LANGUAGE = "aishell3", "AISHELL-3", "Apache-2.0", "zh"


def _genders(src: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    info = src / "spk-info.txt"
    if info.is_file():
        for line in info.read_text(encoding="utf-8", errors="replace").splitlines():
            cols = line.split()
            if cols and not line.startswith("#"):
                out[cols[0]] = next((normalise_gender(c) for c in cols[1:] if c.lower() in ("female", "male")), "unknown")
    return out


def _transcripts(src: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for content in sorted(src.glob("*/content.txt")):
        for line in content.read_text(encoding="utf-8", errors="replace").splitlines():
            name, _, rest = line.partition("\t")
            tokens = rest.split()
            if name and tokens:
                out[Path(name.strip()).stem] = "".join(tokens[0::2])
    return out


def scan(src: Path) -> Iterator[SourceSpeaker]:
    clips: dict[str, list[Path]] = defaultdict(list)
    for wav in sorted(src.glob("*/wav/*/*.wav")):
        clips[wav.parent.name].append(wav)
    if not clips:
        raise FileNotFoundError(f"{src}: no train|test/wav/<speaker>/*.wav files (is this an AISHELL-3 root?)")
    genders, texts = _genders(src), _transcripts(src)
    for spk in sorted(clips):
        yield SourceSpeaker(spk, genders.get(spk, "unknown"), None, [SourceClip(p, texts.get(p.stem)) for p in clips[spk]])
