"""Write an imported pool: clips into `<stem>/` beside the manifest, `<stem>.jsonl`, `<stem>.import.json`.

Clips go to a temporary folder that replaces the old one only when the import finishes, then the manifest
and the report are written atomically: a killed import leaves the previous pool intact.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from pipeline.io.layout import atomic_write
from pipeline.voices.pool import Speaker

CLIP_FORMATS = {"flac": ("FLAC", "PCM_16"), "wav": ("WAV", "PCM_16")}


def report_path(manifest: Path) -> Path:
    return manifest.with_name(manifest.stem + ".import.json")


class PoolWriter:
    def __init__(self, manifest: Path, clip_format: str = "flac"):
        if manifest.suffix != ".jsonl":
            raise ValueError(f"--out {manifest}: a speaker manifest must end in .jsonl")
        self.manifest, self.clip_format = manifest, clip_format
        self.clip_dir = manifest.with_name(manifest.stem)           # final folder, referenced by the manifest
        self.tmp_dir = manifest.with_name(manifest.stem + ".importing")
        shutil.rmtree(self.tmp_dir, ignore_errors=True)             # left by an import that was killed
        self.tmp_dir.mkdir(parents=True)
        self._names: set[str] = set()

    def write_clip(self, speaker_id: str, source_stem: str, samples: np.ndarray, sample_rate: int) -> str:
        """Write one clip; return its path relative to the manifest's folder."""
        stem = re.sub(r"[^A-Za-z0-9_-]+", "_", source_stem).strip("_") or "clip"
        name, n = f"{speaker_id}/{stem}.{self.clip_format}", 1
        while name in self._names:
            n += 1
            name = f"{speaker_id}/{stem}-{n}.{self.clip_format}"
        self._names.add(name)
        (self.tmp_dir / speaker_id).mkdir(exist_ok=True)
        fmt, subtype = CLIP_FORMATS[self.clip_format]
        sf.write(self.tmp_dir / name, samples, sample_rate, format=fmt, subtype=subtype)
        return f"{self.clip_dir.name}/{name}"

    def finish(self, speakers: list[Speaker], report: dict[str, Any]) -> None:
        if self.clip_dir.exists():
            shutil.rmtree(self.clip_dir)
        self.tmp_dir.rename(self.clip_dir)
        lines = "".join(json.dumps(s.model_dump(mode="json", exclude_none=True), ensure_ascii=False) + "\n" for s in speakers)
        atomic_write(self.manifest, lambda fh: fh.write(lines.encode("utf-8")))
        atomic_write(report_path(self.manifest),
                     lambda fh: fh.write(json.dumps(report, indent=2, ensure_ascii=False).encode("utf-8")))

    def abort(self) -> None:
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
