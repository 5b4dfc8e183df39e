"""`speechchat speakers import ...`: the argument parser and the command (main.py only wires it in)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.config import ConfigError


def add_parser(sub: argparse._SubParsersAction) -> None:
    from pipeline.voices.importers.importer import FORMATS

    p_spk = sub.add_parser("speakers", help="speaker pools: import a corpus; synthesize virtual voices")
    spk_sub = p_spk.add_subparsers(dest="speakers_command", required=True)
    p = spk_sub.add_parser("import", help="validate a corpus's clips and write speakers/<name>.jsonl + clips + report")
    p.add_argument("--format", required=True, choices=sorted(FORMATS), help="source layout")
    p.add_argument("--src", required=True, type=Path, help="corpus root (Common Voice: the <lang>/ folder)")
    p.add_argument("--out", required=True, type=Path, help="manifest to write, e.g. speakers/vctk.jsonl")
    p.add_argument("--language", help="language code (default per corpus: aishell3 zh, libritts-r/vctk en, "
                   "commonvoice the locale column; required for folder)")
    p.add_argument("--license", help="licence tag (default per corpus; required for folder)")
    p.add_argument("--max-clips-per-speaker", type=int, default=None, metavar="K")
    p.add_argument("--limit-speakers", type=int, default=None, metavar="N")
    p.add_argument("--sample-rate", type=int, default=24000, help="rate of the written reference clips (Hz)")
    p.add_argument("--min-seconds", type=float, default=3.0)
    p.add_argument("--max-seconds", type=float, default=30.0)
    p.add_argument("--min-dnsmos", type=float, default=None, help="reject clips below this DNSMOS OVRL (1-5)")
    p.add_argument("--no-dnsmos", action="store_true", help="skip DNSMOS scoring (faster; dnsmos_ovrl stays null)")
    p.add_argument("--id-prefix", help="speaker_id prefix (default per corpus: librittsr, vctk, aishell3, cv, folder)")
    p.add_argument("--backend", default="xtts", choices=["xtts", "vits", "piper"], help="backend that voices these speakers")
    p.add_argument("--clip-format", default="flac", choices=["flac", "wav"])
    v = spk_sub.add_parser("synthesize", help="make virtual voices: mixes of real references' XTTS-v2 latents, kept "
                           "only when distinct from every source and each other (Resemblyzer distance)")
    v.add_argument("--pool", required=True, type=Path, help="source pool (xtts speakers with reference clips)")
    v.add_argument("--out", required=True, type=Path, help="manifest to write: the sources (not assignable) + voices")
    v.add_argument("--count", required=True, type=int, help="virtual voices wanted")
    v.add_argument("--model", required=True, help="XTTS-v2 checkpoint folder (or cached Coqui model name)")
    v.add_argument("--language", default="en", help="language of the sources to mix and of the probe sentence")
    v.add_argument("--min-distance", type=float, default=0.25, help="cosine distance to every source and kept voice")
    v.add_argument("--noise-scale", type=float, default=0.05, help="Gaussian noise on the mixed latents (x their std)")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--max-candidates", type=int, help="give up after this many candidates (default 20 x count)")
    v.add_argument("--probe-text", help="sentence each candidate speaks for the distance check")
    v.add_argument("--id-prefix", default="virtual")
    v.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    v.add_argument("--keep-sources", action="store_true", help="also assign the real source voices to turns")


def run(args: argparse.Namespace) -> int:
    if args.speakers_command == "synthesize":
        from pipeline.voices.virtual import synthesize_pool_cli

        if args.count < 1:
            print("speechchat speakers synthesize: --count must be >= 1", file=sys.stderr)
            return 2
        return synthesize_pool_cli(args)
    from pipeline.voices.importers.clips import ClipRules
    from pipeline.voices.importers.importer import import_pool, summary_lines

    for name in ("max_clips_per_speaker", "limit_speakers", "sample_rate"):
        value = getattr(args, name)
        if value is not None and value < 1:
            print(f"speechchat speakers import: --{name.replace('_', '-')} must be >= 1 (got {value})", file=sys.stderr)
            return 2
    try:
        rules = ClipRules(min_s=args.min_seconds, max_s=args.max_seconds, sample_rate=args.sample_rate)
        report = import_pool(args.format, args.src, args.out, language=args.language, license=args.license,
                             max_clips_per_speaker=args.max_clips_per_speaker, limit_speakers=args.limit_speakers,
                             rules=rules, min_dnsmos_ovrl=args.min_dnsmos, dnsmos=not args.no_dnsmos,
                             id_prefix=args.id_prefix, backend=args.backend, clip_format=args.clip_format)
    except (ConfigError, ValueError) as exc:
        print(f"speechchat speakers import: {exc}", file=sys.stderr)
        return 2
    print("\n".join(summary_lines(report)))
    return 0
