"""Coqui XTTS-v2 voice cloning with per-speaker conditioning cached in memory and on disk.

Synthesis is batched (pipeline/tts/xtts_batched.py): the pieces of many turns, any speakers, go through the
GPT together (`max_batch_turns` per forward) and the vocoder together; a turn with a given seed sounds the
same alone or in any batch. One turn (`synthesize`) is a batch of one.

XTTS-v2 conditioning (GPT latents + speaker embedding) is computed once per speaker and cached in
memory and on disk (`state/xtts_latents/<speaker_id>.pt`, keyed by a digest of the model and of the
reference clips' bytes, so a changed clip or model recomputes). A virtual voice (a speaker's `recipe`)
is a weighted mix of its sources' conditioning plus seeded Gaussian noise: the same recipe always gives
the same voice.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter
from importlib.metadata import version
from pathlib import Path

import numpy as np

from pipeline.devices import torch_device
from pipeline.normalize.split import split_for_tts
from pipeline.tts.base import BatchResult, SynthesisRequest, synthesize_one
from pipeline.tts.coqui import XTTS_MODEL_NAME, fingerprint, resolve_model
from pipeline.tts.patches import patch_xtts_for_transformers_cache_kwarg, patch_xtts_reference_reader
from pipeline.voices.pool import Speaker, reference_path

log = logging.getLogger(__name__)


class XttsBackend:
    """XTTS-v2 voice cloning with per-speaker conditioning cached in memory and on disk."""

    def __init__(self, model: str | None, device: str = "auto", languages: dict[str, str] | None = None,
                 pool: list[Speaker] | None = None, pool_file: Path | None = None, latent_dir: Path | None = None,
                 chunk_gap_s: float = 0.15, max_batch_turns: int = 8, sampling: bool = True, **_ignored):
        import torch
        from TTS.tts.configs.xtts_config import XttsConfig
        from TTS.tts.models.xtts import Xtts

        patch_xtts_for_transformers_cache_kwarg()
        patch_xtts_reference_reader()
        folder = resolve_model("xtts", model)
        config = XttsConfig()
        config.load_json(str(folder / "config.json"))
        self.device = torch_device(device)
        self.model = Xtts(config)
        self.model.load_checkpoint(config, checkpoint_dir=str(folder), eval=True)
        self.model.to(self.device)
        self.config = config
        self.sample_rate = int(config.model_args.output_sample_rate)
        self.languages = languages or {}
        self.speakers = {s.speaker_id: s for s in pool or []}
        self.pool_file = pool_file
        self.latent_dir = Path(latent_dir) if latent_dir else None
        self.chunk_gap_s = chunk_gap_s
        self._torch = torch
        self._latents: dict[str, tuple] = {}
        self.cache_stats: Counter = Counter()  # memory_hits, disk_hits, computed, mixed, builtin
        self.max_batch_turns, self.sampling = max_batch_turns, sampling
        from pipeline.tts.xtts_batched import BatchedXttsGPT

        self.batched_gpt = BatchedXttsGPT(self.model.gpt)
        self.timings: dict = {}  # gpt_s, vocoder_s, codes: where the time goes (bench/gpu_bench.py)
        self.model_digest = fingerprint(folder / "model.pth")
        self.model_id = f"coqui-tts {version('coqui-tts')} xtts {Path(model or XTTS_MODEL_NAME).name} ({self.model_digest})"

    # conditioning -----------------------------------------------------------------------------------
    def _clip_paths(self, speaker: Speaker) -> list[Path]:
        if self.pool_file is None:
            raise ValueError(f"speaker {speaker.speaker_id}: reference clips need the pool file's folder")
        paths = [reference_path(self.pool_file, clip) for clip in speaker.references]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise ValueError(f"speaker {speaker.speaker_id}: reference clip(s) missing: {', '.join(missing)}")
        return paths

    def clip_digest(self, speaker: Speaker) -> str:
        h = hashlib.sha256(f"{self.model_id}\n{speaker.speaker_id}\n".encode())
        for path in self._clip_paths(speaker):
            h.update(hashlib.sha256(path.read_bytes()).digest())
        return h.hexdigest()[:24]

    def latents(self, speaker: Speaker, _depth: int = 0):
        """(gpt_cond_latent, speaker_embedding) of a speaker, from memory, disk, the model, or a recipe."""
        cached = self._latents.get(speaker.speaker_id)
        if cached is not None:
            self.cache_stats["memory_hits"] += 1
            return cached
        if speaker.recipe is not None:
            value = self._mix(speaker, _depth)
        elif speaker.references:
            value = self._from_clips(speaker)
        elif speaker.speaker_name is not None:
            builtin = getattr(self.model.speaker_manager, "speakers", None) or {}
            if speaker.speaker_name not in builtin:
                raise ValueError(f"speaker {speaker.speaker_id}: {speaker.speaker_name!r} is not a built-in XTTS "
                                 "speaker (speakers_xtts.pth)")
            entry = builtin[speaker.speaker_name]
            value = (entry["gpt_cond_latent"], entry["speaker_embedding"])
            self.cache_stats["builtin"] += 1
        else:
            raise ValueError(f"speaker {speaker.speaker_id}: no references, recipe or speaker_name to clone")
        self._latents[speaker.speaker_id] = value
        return value

    def _from_clips(self, speaker: Speaker):
        torch = self._torch
        digest = self.clip_digest(speaker)
        disk = self.latent_dir / f"{speaker.speaker_id}.pt" if self.latent_dir else None
        if disk is not None and disk.is_file():
            try:
                saved = torch.load(disk, map_location="cpu", weights_only=True)
                if saved.get("digest") == digest:
                    self.cache_stats["disk_hits"] += 1
                    return saved["gpt_cond_latent"], saved["speaker_embedding"]
            except Exception as exc:  # noqa: BLE001 - a torn or foreign file is recomputed, never trusted
                log.warning("xtts latent cache %s unreadable (%s); recomputing", disk, exc)
        cfg = self.config
        gpt, emb = self.model.get_conditioning_latents(
            audio_path=[str(p) for p in self._clip_paths(speaker)], gpt_cond_len=cfg.gpt_cond_len,
            gpt_cond_chunk_len=cfg.gpt_cond_chunk_len, max_ref_length=cfg.max_ref_len, sound_norm_refs=cfg.sound_norm_refs)
        gpt, emb = gpt.detach().cpu(), emb.detach().cpu()
        self.cache_stats["computed"] += 1
        if disk is not None:
            disk.parent.mkdir(parents=True, exist_ok=True)
            tmp = disk.with_name(f".{disk.name}.{os.getpid()}.tmp")  # actors may race: last complete write wins
            torch.save({"digest": digest, "gpt_cond_latent": gpt, "speaker_embedding": emb}, tmp)
            os.replace(tmp, disk)
        return gpt, emb

    def _mix(self, speaker: Speaker, depth: int):
        """Weighted mix of the sources' conditioning + Gaussian noise of recipe.noise_scale (relative to each
        tensor's spread), seeded by recipe.seed; the speaker embedding is re-normalised to unit length."""
        torch = self._torch
        recipe = speaker.recipe
        if depth > 4:
            raise ValueError(f"speaker {speaker.speaker_id}: recipe sources nest too deep (a cycle?)")
        parts = []
        for source_id in recipe.sources:
            if source_id not in self.speakers:
                raise ValueError(f"speaker {speaker.speaker_id}: recipe source {source_id!r} is not in the pool")
            parts.append(self.latents(self.speakers[source_id], depth + 1))
        shapes = {tuple(g.shape) for g, _ in parts}
        if len(shapes) != 1:
            raise ValueError(f"speaker {speaker.speaker_id}: sources' GPT latents differ in shape {sorted(shapes)}")
        w = [float(x) for x in recipe.weights]
        gpt = sum(wi * g.float() for wi, (g, _) in zip(w, parts))
        emb = sum(wi * e.float() for wi, (_, e) in zip(w, parts))
        rng = np.random.default_rng(recipe.seed)
        if recipe.noise_scale > 0:
            gpt = gpt + recipe.noise_scale * gpt.std() * torch.from_numpy(rng.standard_normal(gpt.shape).astype(np.float32))
            emb = emb + recipe.noise_scale * emb.std() * torch.from_numpy(rng.standard_normal(emb.shape).astype(np.float32))
        emb = emb / emb.norm(dim=1, keepdim=True).clamp_min(1e-8)
        self.cache_stats["mixed"] += 1
        return gpt, emb

    # synthesis -------------------------------------------------------------------------------------
    def language_code(self, language: str) -> str:
        return self.languages.get(language, language)

    def pieces(self, text: str, language: str) -> list[str]:
        """Sentence-bounded pieces within XTTS-v2's per-language character limit (zh 82, en 250, ...)."""
        return split_for_tts(text, self.language_code(language))

    def synthesize(self, text: str, speaker: Speaker, language: str = "en", seed: int = 0) -> tuple[np.ndarray, int]:
        return synthesize_one(self, SynthesisRequest(text, speaker, language, seed))

    def synthesize_batch(self, requests: list[SynthesisRequest]) -> BatchResult:
        from pipeline.tts.xtts_batched import synthesize_batch

        return synthesize_batch(self, requests, max_batch=self.max_batch_turns, do_sample=self.sampling,
                                timings=self.timings)
