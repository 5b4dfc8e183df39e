"""Common Voice: `<lang>/validated.tsv` (or `train.tsv`) with client_id, path, sentence, gender, locale ...
and the audio in `<lang>/clips/*.mp3` (decoded by libsndfile >= 1.1, which soundfile wheels bundle).

One speaker per client_id (a hash, shortened in the speaker_id); language from the `locale` column, else
the folder name.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterator
from pathlib import Path

from pipeline.voices.importers.base import SourceClip, SourceSpeaker, normalise_gender

PREFIX, SOURCE, LICENSE, LANGUAGE = "cv", "Common Voice", "CC0-1.0", None


def scan(src: Path) -> Iterator[SourceSpeaker]:
    tsv = next((src / n for n in ("validated.tsv", "train.tsv") if (src / n).is_file()), None)
    if tsv is None:
        raise FileNotFoundError(f"{src}: no validated.tsv or train.tsv (point --src at a Common Voice <lang>/ folder)")
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    speakers: dict[str, SourceSpeaker] = {}
    with tsv.open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE):
            client, name = (row.get("client_id") or "").strip(), (row.get("path") or "").strip()
            if not client or not name or "/" in name or "\\" in name or name.startswith("."):
                continue  # a path from data must stay inside clips/
            spk = speakers.get(client)
            if spk is None:
                spk = speakers[client] = SourceSpeaker(client, "unknown", (row.get("locale") or "").strip() or src.name)
            gender = normalise_gender(row.get("gender"))
            if spk.gender == "unknown":
                spk.gender = gender
            spk.clips.append(SourceClip(src / "clips" / name, (row.get("sentence") or "").strip() or None))
    for client in sorted(speakers):
        yield speakers[client]
