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

import numpy as np

from pipeline.publish.licenses import UNKNOWN, lookup_license
from pipeline.speakers import Speaker, VoiceRecipe

Render = Callable[[Speaker], tuple[np.ndarray, int]]  # speaker -> (samples, rate) of the probe sentence
Embed = Callable[[np.ndarray, int], np.ndarray]       # (samples, rate) -> speaker embedding


@dataclass
class SynthesisReport:
    proposed: int = 0
    kept: int = 0
    rejected: Counter = field(default_factory=Counter)   # reason -> candidates
    min_distances: list[float] = field(default_factory=list)  # of kept voices, to their nearest neighbour

    def as_dict(self) -> dict:
        d = np.asarray(self.min_distances) if self.min_distances else np.zeros(0)
        return {"proposed": self.proposed, "kept": self.kept, "rejected": dict(self.rejected),
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
    anchors: list[np.ndarray] = []
    for s in sources:
        anchors.append(_unit(embed(*render(s))))
        anchors.extend(_unit(e) for e in (reference_embeddings or {}).get(s.speaker_id, []))
    anchor_matrix = np.stack(anchors)
    kept: list[Speaker] = []
    kept_vectors: list[np.ndarray] = []
    report = SynthesisReport()
    limit = max_candidates or 20 * count
    for recipe in propose_recipes(sources, seed, noise_scale=noise_scale):
        if len(kept) >= count or report.proposed >= limit:
            break
        report.proposed += 1
        candidate = virtual_speaker(recipe, by_id, f"{id_prefix}-{sources[0].language}-{len(kept):05d}")
        samples, rate = render(candidate)
        if samples.size == 0 or not np.isfinite(samples).all():
            report.rejected["render_failed"] += 1
            continue
        vec = _unit(embed(samples, rate))
        to_sources = float(1.0 - (anchor_matrix @ vec).max())
        if to_sources < min_distance:
            report.rejected["too_close_to_a_source_voice"] += 1
            continue
        to_kept = float(1.0 - (np.stack(kept_vectors) @ vec).max()) if kept_vectors else 2.0
        if to_kept < min_distance:
            report.rejected["too_close_to_another_virtual_voice"] += 1
            continue
        recipe = recipe.model_copy(update={"min_distance_to_sources": round(to_sources, 4)})
        kept.append(candidate.model_copy(update={"recipe": recipe}))
        kept_vectors.append(vec)
        report.kept += 1
        report.min_distances.append(min(to_sources, to_kept))
        if progress:
            progress(report.kept, report.proposed)
    return kept, report
