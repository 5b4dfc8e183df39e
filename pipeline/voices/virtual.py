"""Virtual voices: new speakers mixed from licensed references, kept only when they are nobody's copy.

Ke-SpeechChat's 42,002 speakers came from a "virtual voice library" built for privacy. Here a candidate is a
recipe: 2-3 source speakers of one language (and one gender, when known), Dirichlet weights, a seed and a
noise scale. The TTS backend turns the recipe into conditioning (XTTS-v2: a weighted mix of the sources'
conditioning latents plus seeded noise). The candidate renders a probe sentence; a speaker encoder embeds
it; it is kept only when its cosine distance to every source voice (their reference clips and their own
rendering of the probe) and to every voice kept so far is at least `min_distance`.

Rendering and embedding are passed in as functions, so the selection runs the same with any backend that
supports recipes and any speaker encoder (Resemblyzer by default).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.publish.licenses import UNKNOWN, lookup_license
from pipeline.voices.pool import Speaker, VoiceRecipe

Render = Callable[[Speaker], tuple[np.ndarray, int]]  # speaker -> (samples, rate) of the probe sentence
Embed = Callable[[np.ndarray, int], np.ndarray]       # (samples, rate) -> speaker embedding


@dataclass
class SynthesisReport:
    proposed: int = 0
    kept: int = 0
    rejected: Counter = field(default_factory=Counter)   # reason -> candidates
    min_distances: list[float] = field(default_factory=list)  # of kept voices, to their nearest neighbour
    errors: list[str] = field(default_factory=list)  # the first few render/embedding failures, for the report

    def as_dict(self) -> dict:
        d = np.asarray(self.min_distances) if self.min_distances else np.zeros(0)
        return {"proposed": self.proposed, "kept": self.kept, "rejected": dict(self.rejected),
                "errors": self.errors[:20],
                "kept_min_distance": {"min": round(float(d.min()), 4), "median": round(float(np.median(d)), 4)}
                if d.size else {}}


def strictest_license(licenses: list[str]) -> str:
    """A mix is bound by every source's terms: the strictest known licence wins; an unknown one wins over all."""
    ranked = [(lookup_license(text) or UNKNOWN).rank for text in licenses]
    return licenses[int(np.argmax(ranked))]


def propose_recipes(sources: list[Speaker], seed: int, sources_per_voice: tuple[int, int] = (2, 3),
                    noise_scale: float = 0.0, concentration: float = 1.0) -> Iterator[VoiceRecipe]:
    """Endless, deterministic stream of recipes over same-language (and same-gender when known) sources."""
    groups: dict[tuple[str, str], list[Speaker]] = {}
    for s in sources:
        groups.setdefault((s.language, s.gender), []).append(s)
    # unknown-gender voices may mix with anyone of their language; known genders stay apart
    usable = {key: members for key, members in groups.items() if len(members) >= sources_per_voice[0]}
    if not usable:
        raise ValueError(f"need at least {sources_per_voice[0]} source speakers of one language and gender to mix")
    keys = sorted(usable)
    rng = np.random.default_rng(seed)
    n = 0
    while True:
        members = usable[keys[n % len(keys)]]
        k = int(rng.integers(sources_per_voice[0], min(sources_per_voice[1], len(members)) + 1))
        picked = sorted(rng.choice(len(members), size=k, replace=False).tolist())
        weights = rng.dirichlet([concentration] * k)
        weights = np.round(weights / weights.sum(), 6)
        weights[-1] = round(1.0 - float(weights[:-1].sum()), 6)
        yield VoiceRecipe(sources=[members[i].speaker_id for i in picked], weights=weights.tolist(),
                          seed=int(rng.integers(0, 2**31 - 1)), noise_scale=noise_scale)
        n += 1


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64).reshape(-1)
    norm = np.linalg.norm(v)
    return v / norm if norm > 0 else v


def virtual_speaker(recipe: VoiceRecipe, by_id: dict[str, Speaker], speaker_id: str) -> Speaker:
    srcs = [by_id[s] for s in recipe.sources]
    genders = {s.gender for s in srcs}
    return Speaker(
        speaker_id=speaker_id, language=srcs[0].language, gender=genders.pop() if len(genders) == 1 else "unknown",
        source="virtual voice: mix of " + ", ".join(f"{s.speaker_id} ({s.source})" for s in srcs),
        license=strictest_license([s.license for s in srcs]), backend=srcs[0].backend, voice=srcs[0].voice,
        recipe=recipe)


def synthesize_voices(sources: list[Speaker], count: int, render: Render, embed: Embed, *, min_distance: float,
                      seed: int = 0, noise_scale: float = 0.05, max_candidates: int | None = None,
                      reference_embeddings: dict[str, list[np.ndarray]] | None = None, id_prefix: str = "virtual",
                      progress: Callable[[int, int], None] | None = None) -> tuple[list[Speaker], SynthesisReport]:
    """Make up to `count` distinct virtual voices from `sources`; bounded by `max_candidates` (default 20x)."""
    if count < 1:
        raise ValueError("count must be >= 1")
    if not 0 < min_distance < 2:
        raise ValueError(f"min_distance {min_distance} must be in (0, 2) (cosine distance)")
    by_id = {s.speaker_id: s for s in sources}
    if len({s.backend for s in sources}) != 1:
        raise ValueError("all source speakers must use the same TTS backend (their conditioning is mixed)")
    # every source voice, as the backend renders it and as its real reference clips sound
    report = SynthesisReport()
    anchors: list[np.ndarray] = []
    for s in sources:
        try:
            anchors.append(_unit(embed(*render(s))))
        except Exception as exc:  # noqa: BLE001 - its reference clips can still stand for the voice
            report.errors.append(f"source {s.speaker_id} rendering: {type(exc).__name__}: {exc}"[:300])
        anchors.extend(_unit(e) for e in (reference_embeddings or {}).get(s.speaker_id, []))
    if not anchors:
        raise ValueError("no source voice could be embedded (rendered or from its clips): "
                         + "; ".join(report.errors[:3]))
    anchor_matrix = np.stack(anchors)
    kept: list[Speaker] = []
    kept_vectors: list[np.ndarray] = []
    limit = max_candidates or 20 * count
    for recipe in propose_recipes(sources, seed, noise_scale=noise_scale):
        if len(kept) >= count or report.proposed >= limit:
            break
        report.proposed += 1
        # a fresh ID per candidate: backends cache conditioning by speaker_id
        candidate = virtual_speaker(recipe, by_id, f"{id_prefix}-{sources[0].language}-c{report.proposed:06d}")
        try:
            samples, rate = render(candidate)
            if samples.size == 0 or not np.isfinite(samples).all():
                raise ValueError("empty or non-finite audio")
            vec = _unit(embed(samples, rate))
        except Exception as exc:  # noqa: BLE001 - one bad candidate is a recorded rejection, not a failed pool
            report.rejected["render_or_embed_failed"] += 1
            report.errors.append(f"{candidate.speaker_id}: {type(exc).__name__}: {exc}"[:300])
            continue
        to_sources = float(1.0 - (anchor_matrix @ vec).max())
        if to_sources < min_distance:
            report.rejected["too_close_to_a_source_voice"] += 1
            continue
        to_kept = float(1.0 - (np.stack(kept_vectors) @ vec).max()) if kept_vectors else 2.0
        if to_kept < min_distance:
            report.rejected["too_close_to_another_virtual_voice"] += 1
            continue
        recipe = recipe.model_copy(update={"min_distance_to_sources": round(to_sources, 4)})
        kept.append(candidate.model_copy(update={
            "recipe": recipe, "speaker_id": f"{id_prefix}-{sources[0].language}-{len(kept):05d}"}))
        kept_vectors.append(vec)
        report.kept += 1
        report.min_distances.append(min(to_sources, to_kept))
        if progress:
            progress(report.kept, report.proposed)
    return kept, report


PROBE_TEXT = {"en": "The quick brown fox jumps over the lazy dog, and then it takes a long rest in the sun.",
              "zh": "今天的天气很好，我们一起去公园散步吧，顺便买一些新鲜的水果回家。"}


def relative_clip_paths(speaker: Speaker, old_pool: Path, new_pool: Path) -> Speaker:
    """Re-root a speaker's reference clips for a manifest written in another folder. Clip paths may not leave a
    pool's folder: a clip outside the new manifest's folder is a ConfigError (`outside_clips` says it first)."""
    from pipeline.config import ConfigError
    from pipeline.voices.pool import reference_path

    new_base = new_pool.resolve().parent
    clips = []
    for clip in speaker.references:
        path = reference_path(old_pool, clip)
        if new_base not in path.parents:
            raise ConfigError(f"{new_pool}: reference clip {path} is outside its folder")
        clips.append(clip.model_copy(update={"path": str(path.relative_to(new_base))}))
    return speaker.model_copy(update={"references": clips})


def synthesize_pool_cli(args) -> int:
    """`speechchat speakers synthesize`: XTTS-v2 renders each candidate, Resemblyzer measures the distances."""
    import json
    import sys

    from tqdm import tqdm

    from pipeline.config import ConfigError
    from pipeline.io.layout import atomic_write
    from pipeline.voices.pool import load_pool

    try:
        pool = load_pool(args.pool)
        sources = [s for s in pool if s.language == args.language and s.references and s.recipe is None]
        if len(sources) < 2:
            raise ConfigError(f"{args.pool}: {len(sources)} speaker(s) of language {args.language!r} with reference "
                              "clips; mixing needs at least 2")
        if {s.backend for s in sources} != {"xtts"}:
            raise ConfigError("virtual voices mix XTTS-v2 conditioning latents: the sources must be backend 'xtts'")
        if args.out.resolve() == args.pool.resolve():
            raise ConfigError("--out must differ from --pool (the source pool is never rewritten)")
        from pipeline.voices.pool import reference_path

        out_base = args.out.resolve().parent
        outside = [c.path for s in sources for c in s.references
                   if out_base not in reference_path(args.pool, c).parents]
        if outside:
            raise ConfigError(f"--out {args.out}: {len(outside)} source clip(s) (e.g. {outside[0]}) are outside its "
                              f"folder, and clip paths may not leave a pool's folder; write it in {args.pool.parent} "
                              "or a folder above the clips")
        from pipeline.quality.speaker_embed import SpeakerEmbedder
        from pipeline.tts.xtts import XttsBackend

        backend = XttsBackend(args.model, device=args.device, languages={"zh": "zh-cn"}, pool=pool, pool_file=args.pool)
        embedder = SpeakerEmbedder()
    except (ConfigError, ValueError, FileNotFoundError, ImportError) as exc:
        print(f"speechchat speakers synthesize: {exc}", file=sys.stderr)
        return 2
    probe = args.probe_text or PROBE_TEXT.get(args.language, PROBE_TEXT["en"])
    refs = {}
    for s in sources:
        try:
            refs[s.speaker_id] = [embedder.speaker_embedding(s, args.pool)]
        except ValueError as exc:  # a clip without speech: the voice still counts through its rendering
            print(f"warning: {s.speaker_id}: no reference embedding ({exc})", file=sys.stderr)
    bar = tqdm(total=args.count, unit="voice", desc="virtual voices", disable=not sys.stderr.isatty())
    try:
        voices, report = synthesize_voices(
            sources, args.count, lambda spk: backend.synthesize(probe, spk, args.language, seed=0), embedder.embed,
            min_distance=args.min_distance, seed=args.seed, noise_scale=args.noise_scale,
            max_candidates=args.max_candidates, reference_embeddings=refs, id_prefix=args.id_prefix,
            progress=lambda kept, proposed: bar.update(kept - bar.n))
    except ValueError as exc:
        print(f"speechchat speakers synthesize: {exc}", file=sys.stderr)
        return 2
    finally:
        bar.close()
    # the sources stay in the manifest (the TTS mixes their latents) but are never assigned unless asked
    kept_sources = [relative_clip_paths(s, args.pool, args.out).model_copy(update={"assignable": args.keep_sources})
                    for s in sources]
    lines = [s.model_dump_json(exclude_none=True) for s in kept_sources + voices]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out, lambda fh: fh.write(("\n".join(lines) + "\n").encode()))
    summary = {"pool": str(args.pool), "out": str(args.out), "language": args.language, "count": args.count,
               "min_distance": args.min_distance, "noise_scale": args.noise_scale, "seed": args.seed,
               "model": backend.model_id, "probe_text": probe, **report.as_dict()}
    atomic_write(args.out.with_suffix(".synthesis.json"),
                 lambda fh: fh.write(json.dumps(summary, indent=2, ensure_ascii=False).encode()))
    print(f"{report.kept} virtual voice(s) of {args.count} wanted from {len(sources)} sources "
          f"({report.proposed} candidates; rejected {dict(report.rejected)}) -> {args.out}")
    return 0 if voices else 1
