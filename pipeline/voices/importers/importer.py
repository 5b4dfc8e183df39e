"""Run one import: read a corpus layout, validate and score every candidate clip, write pool and report.

A bad clip (corrupt, silent, clipped, too short or long, low DNSMOS) is a counted rejection with its
reason, never an exception; a speaker left without clips is dropped and listed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from pathlib import Path
from types import ModuleType
from typing import Any

from pipeline.config import ConfigError
from pipeline.voices.importers import aishell3, commonvoice, folder, libritts_r, vctk
from pipeline.voices.importers.base import safe_speaker_id
from pipeline.voices.importers.clips import ClipRejected, ClipRules, load_clip
from pipeline.voices.importers.writer import PoolWriter, report_path
from pipeline.voices.pool import ReferenceClip, Speaker

FORMATS: dict[str, ModuleType] = {"libritts-r": libritts_r, "vctk": vctk, "aishell3": aishell3,
                                  "commonvoice": commonvoice, "folder": folder}
MAX_LISTED_REJECTIONS = 10000  # the report lists rejected clips one by one up to this many; counts are exact


def import_pool(fmt: str, src: Path, out: Path, *, language: str | None = None, license: str | None = None,
                max_clips_per_speaker: int | None = None, limit_speakers: int | None = None,
                rules: ClipRules | None = None, min_dnsmos_ovrl: float | None = None, dnsmos: bool = True,
                id_prefix: str | None = None, backend: str = "xtts", clip_format: str = "flac",
                progress: bool = True) -> dict[str, Any]:
    if fmt not in FORMATS:
        raise ConfigError(f"unknown import format {fmt!r}; choose one of {', '.join(FORMATS)}")
    reader = FORMATS[fmt]
    rules = rules or ClipRules()
    if not src.is_dir():
        raise ConfigError(f"--src {src}: not a folder")
    language = language or reader.LANGUAGE
    license = license or reader.LICENSE
    if license is None:
        raise ConfigError(f"--format {fmt}: give --license (the licence of your recordings, e.g. CC-BY-4.0)")
    if fmt == "folder" and language is None:
        raise ConfigError("--format folder: give --language (e.g. en or zh)")
    if min_dnsmos_ovrl is not None and not dnsmos:
        raise ConfigError("--min-dnsmos needs DNSMOS scoring (drop --no-dnsmos)")
    clip_dir, source = out.with_name(out.stem).resolve(), src.resolve()
    if clip_dir == source or source in clip_dir.parents or clip_dir in source.parents:
        raise ConfigError(f"--out {out}: its clips folder {clip_dir} would overlap --src {src} (the import replaces "
                          "that folder); choose another manifest name or folder")
    prefix = id_prefix or reader.PREFIX
    scorer = None
    if dnsmos:
        from pipeline.quality.dnsmos import DnsmosScorer

        scorer = DnsmosScorer()
    try:
        speakers_src = list(reader.scan(src))
    except (FileNotFoundError, OSError) as exc:
        raise ConfigError(f"--format {fmt} --src {src}: {exc}") from None
    writer = PoolWriter(out, clip_format)
    reasons: Counter = Counter()
    rejections: list[dict[str, str]] = []
    dropped: dict[str, str] = {}
    kept: list[Speaker] = []
    seen = 0
    try:
        from tqdm import tqdm

        for spk in tqdm(speakers_src, desc=f"import {fmt}", unit="speaker", disable=not progress):
            if limit_speakers is not None and len(kept) >= limit_speakers:
                break
            sid = safe_speaker_id(prefix, spk.original_id)
            refs: list[ReferenceClip] = []
            for clip in spk.clips:
                if max_clips_per_speaker is not None and len(refs) >= max_clips_per_speaker:
                    break
                seen += 1
                try:
                    samples, duration = load_clip(clip.path, rules)
                    ovrl = None
                    if scorer is not None:
                        ovrl = round(scorer.score(samples, rules.sample_rate).ovrl, 3)
                        if min_dnsmos_ovrl is not None and ovrl < min_dnsmos_ovrl:
                            raise ClipRejected("dnsmos_below_threshold", f"DNSMOS OVRL {ovrl:.2f} < {min_dnsmos_ovrl}")
                except ClipRejected as exc:
                    reasons[exc.reason] += 1
                    if len(rejections) < MAX_LISTED_REJECTIONS:
                        rejections.append({"speaker_id": sid, "file": _rel(clip.path, src), "reason": exc.reason,
                                           "details": exc.details})
                    continue
                rel = writer.write_clip(sid, clip.path.stem, samples, rules.sample_rate)
                refs.append(ReferenceClip(path=rel, duration_s=round(duration, 3), sample_rate=rules.sample_rate,
                                          dnsmos_ovrl=ovrl, text=clip.text))
            if not refs:
                dropped[sid] = "no_valid_clips" if spk.clips else "no_clips"
                continue
            scores = [r.dnsmos_ovrl for r in refs if r.dnsmos_ovrl is not None]
            kept.append(Speaker(speaker_id=sid, language=spk.language or language or "und", gender=spk.gender,
                                source=f"{reader.SOURCE}:{spk.original_id}"[:200], license=license, backend=backend,
                                references=refs, dnsmos_ovrl=round(sum(scores) / len(scores), 3) if scores else None))
        clips_kept = sum(len(s.references) for s in kept)
        report = {
            "format": fmt, "src": str(src), "manifest": str(out), "clips_folder": str(writer.clip_dir),
            "speakers_seen": len(speakers_src), "speakers_kept": len(kept), "speakers_dropped": dropped,
            "clips_seen": seen, "clips_kept": clips_kept, "clips_rejected": sum(reasons.values()),
            "rejected_by_reason": dict(reasons.most_common()),
            "hours_kept": round(sum(r.duration_s for s in kept for r in s.references) / 3600, 4),
            "rules": {**asdict(rules), "min_dnsmos_ovrl": min_dnsmos_ovrl, "max_clips_per_speaker": max_clips_per_speaker,
                      "limit_speakers": limit_speakers, "clip_format": clip_format},
            "rejections": rejections,
        }
        if not kept:
            raise ConfigError(f"--src {src}: no speaker kept ({seen} clips seen, rejected: {dict(reasons)}); "
                              "nothing written")
        writer.finish(kept, report)
    except BaseException:
        writer.abort()
        raise
    return report


def _rel(path: Path, src: Path) -> str:
    try:
        return str(path.relative_to(src))
    except ValueError:
        return str(path)


def summary_lines(report: dict[str, Any]) -> list[str]:
    lines = [f"imported {report['format']} from {report['src']} -> {report['manifest']}",
             (f"  speakers: {report['speakers_seen']} seen, {report['speakers_kept']} kept, "
              f"{len(report['speakers_dropped'])} dropped (no valid clip)"),
             (f"  clips: {report['clips_seen']} seen, {report['clips_kept']} kept ({report['hours_kept']} h), "
              f"{report['clips_rejected']} rejected")]
    lines += [f"    rejected {n:>6}  {reason}" for reason, n in report["rejected_by_reason"].items()]
    lines.append(f"  report: {report_path(Path(report['manifest']))}")
    return lines
