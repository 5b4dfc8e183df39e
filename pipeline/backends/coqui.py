"""Coqui TTS backends: multi-speaker VITS and XTTS-v2 voice cloning (coqui-tts 0.28).

Weights come from a local checkpoint folder or a Coqui model name already in the local Coqui cache
(`TTS_HOME`, else `~/.local/share/tts`); nothing is ever downloaded here: `resolve_model` runs in the
preflight and says what to download when the files are missing. torch and TTS are imported inside
the backends only, so the default Piper path never loads them.

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

from pipeline.config import ConfigError
from pipeline.normalize.split import split_for_tts
from pipeline.speakers import Speaker, reference_path

log = logging.getLogger(__name__)

XTTS_MODEL_NAME = "tts_models/multilingual/multi-dataset/xtts_v2"
XTTS_FILES = ("config.json", "model.pth", "vocab.json")
XTTS_DOWNLOAD_HINT = ("download coqui/XTTS-v2 from the Hugging Face Hub (config.json, model.pth, vocab.json, "
                      "speakers_xtts.pth), e.g. `hf download coqui/XTTS-v2 --local-dir models/XTTS-v2`, and set "
                      "tts.model=models/XTTS-v2 (licence: Coqui Public Model Licence, non-commercial)")
VITS_DOWNLOAD_HINT = ("point tts.model at a multi-speaker Coqui VITS checkpoint folder (config.json + model .pth, "
                      "plus speakers.pth/speakers.json for named speakers), or fetch one into the Coqui cache once, "
                      "e.g. `tts --model_name tts_models/en/vctk/vits --list_speaker_idxs`, and set "
                      "tts.model=tts_models/en/vctk/vits")


# --- weights: where they are, checked before any work starts ---------------------------------------


def coqui_cache_dir() -> Path:
    """Coqui's model cache (what `tts --model_name ...` fills): TTS_HOME, XDG_DATA_HOME, else ~/.local/share."""
    from trainer.io import get_user_data_dir  # the rule coqui-tts itself uses

    return Path(get_user_data_dir("tts"))


def _vits_checkpoint(folder: Path) -> Path | None:
    for name in ("model.pth", "model_file.pth", "best_model.pth"):
        if (folder / name).is_file():
            return folder / name
    found = sorted(p for p in folder.glob("*.pth") if not p.name.startswith("speakers"))
    return found[0] if found else None


def resolve_model(backend: str, model: str | None) -> Path:
    """The checkpoint folder of `model` (a folder, or a Coqui model name in the local cache); raises a
    ConfigError saying what to download and which key to set when the weights are not there."""
    model = model or (XTTS_MODEL_NAME if backend == "xtts" else None)
    if not model:
        raise ConfigError(f"tts.backend {backend!r} needs tts.model; {VITS_DOWNLOAD_HINT}")
    folder = Path(model).expanduser()
    if not folder.is_dir() and not folder.is_absolute() and len(model.split("/")) == 4:
        folder = coqui_cache_dir() / model.replace("/", "--")  # Coqui's cache layout for a model name
    hint = XTTS_DOWNLOAD_HINT if backend == "xtts" else VITS_DOWNLOAD_HINT
    label = "XTTS-v2" if backend == "xtts" else "Coqui VITS"
    if not folder.is_dir():
        raise ConfigError(f"{label} weights not found at {folder}: {hint}")
    if backend == "xtts":
        missing = [f for f in XTTS_FILES if not (folder / f).is_file()]
        if missing:
            raise ConfigError(f"{label} weights incomplete at {folder} (missing {', '.join(missing)}): {hint}")
    elif not (folder / "config.json").is_file() or _vits_checkpoint(folder) is None:
        raise ConfigError(f"{label} weights incomplete at {folder} (need config.json and a .pth): {hint}")
    return folder


def model_languages(folder: Path) -> list[str] | None:
    """Languages a checkpoint's config.json declares (XTTS lists them), read without loading the model."""
    import json

    try:
        langs = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("languages")
    except (OSError, ValueError):
        return None
    return list(langs) if isinstance(langs, list) else None


def _fingerprint(path: Path) -> str:
    st = path.stat()  # hashing a 1.8 GB checkpoint per actor is too slow; size + mtime tell versions apart
    return f"{path.name}:{st.st_size}:{st.st_mtime_ns}"


def pick_device(device: str) -> str:
    import torch

    if device == "auto":  # Ray hides GPUs from actors that asked for none, so this follows tts.num_gpus
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("tts.device is 'cuda' but this TTS actor sees no GPU (check tts.num_gpus and the cluster)")
    return device


def _seed_everything(seed: int) -> None:
    import torch

    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def _patch_xtts_for_transformers_cache_kwarg() -> None:
    """coqui-tts 0.28's GPT2InferenceModel.forward predates transformers 5's rename of generate's
    `past_key_values` to `cache`; without this its decoding loop fails on the second token. Applied
    only when the installed transformers passes `cache`, and only once."""
    import functools
    import inspect

    from TTS.tts.layers.xtts.gpt_inference import GPT2InferenceModel

    forward = GPT2InferenceModel.forward
    if getattr(forward, "_speechchat_cache_shim", False) or "cache" in inspect.signature(forward).parameters:
        return

    @functools.wraps(forward)
    def shimmed(self, *args, cache=None, **kwargs):
        if cache is not None and kwargs.get("past_key_values") is None:
            kwargs["past_key_values"] = cache
        return forward(self, *args, **kwargs)

    shimmed._speechchat_cache_shim = True
    GPT2InferenceModel.forward = shimmed


def _read_reference(audiopath, sampling_rate):
    """Stand-in for coqui-tts's xtts.load_audio, which goes through torchaudio.load and therefore, from
    torchaudio 2.9, through torchcodec and FFmpeg's shared libraries, which GPU images often lack. The
    references are WAV/FLAC (the importers write FLAC), which soundfile reads; the result is the same
    [1, T] mono float tensor in [-1, 1] at `sampling_rate`."""
    import soundfile as sf
    import torch

    from pipeline.audio import resample

    samples, rate = sf.read(str(audiopath), dtype="float32", always_2d=True)
    mono = resample(samples.mean(axis=1), rate, sampling_rate)
    return torch.from_numpy(np.clip(mono, -1.0, 1.0)).unsqueeze(0)


def _patch_xtts_reference_reader() -> None:
    from TTS.tts.models import xtts

    xtts.load_audio = _read_reference


# --- multi-speaker VITS ------------------------------------------------------------------------------


class VitsBackend:
    """A multi-speaker Coqui VITS; a speaker is a row of its speaker table (speaker_index or speaker_name)."""

    def __init__(self, model: str, device: str = "auto", languages: dict[str, str] | None = None, **_ignored):
        import torch
        from TTS.config import load_config
        from TTS.tts.models import setup_model

        folder = resolve_model("vits", model)
        config = load_config(str(folder / "config.json"))
        for holder in (config, config.model_args):  # a speakers file named in the config lives beside it
            name = getattr(holder, "speakers_file", None)
            if name and not Path(name).is_file() and (folder / Path(name).name).is_file():
                holder.speakers_file = str(folder / Path(name).name)
        self.device = pick_device(device)
        self.model = setup_model(config)
        checkpoint = _vits_checkpoint(folder)
        self.model.load_checkpoint(config, str(checkpoint), eval=True)
        self.model.to(self.device)
        self.sample_rate = int(config.audio.sample_rate)
        self.num_speakers = int(getattr(self.model, "num_speakers", 0) or 0)
        manager = getattr(self.model, "speaker_manager", None)
        self.speaker_names: dict[str, int] = dict(manager.name_to_id) if manager is not None else {}
        lang_manager = getattr(self.model, "language_manager", None)
        self.language_ids: dict[str, int] = dict(lang_manager.name_to_id) if lang_manager is not None else {}
        self.languages = languages or {}
        self._torch = torch
        self.model_id = f"coqui-tts {version('coqui-tts')} vits {Path(model).name} ({_fingerprint(checkpoint)})"

    def speaker_row(self, speaker: Speaker) -> int | None:
        if speaker.speaker_name is not None:
            if speaker.speaker_name not in self.speaker_names:
                raise ValueError(f"speaker {speaker.speaker_id}: speaker_name {speaker.speaker_name!r} is not in the "
                                 f"model's {len(self.speaker_names)} speakers")
            return self.speaker_names[speaker.speaker_name]
        if speaker.speaker_index is not None:
            if not 0 <= speaker.speaker_index < max(self.num_speakers, 1):
                raise ValueError(f"speaker {speaker.speaker_id}: speaker_index {speaker.speaker_index} is outside the "
                                 f"model's {self.num_speakers} speakers")
            return speaker.speaker_index if self.num_speakers else None
        if self.num_speakers:
            raise ValueError(f"speaker {speaker.speaker_id}: a multi-speaker VITS needs speaker_index or speaker_name")
        return None

    def synthesize(self, text: str, speaker: Speaker, language: str = "en", seed: int = 0) -> tuple[np.ndarray, int]:
        torch = self._torch
        row = self.speaker_row(speaker)
        ids = self.model.tokenizer.text_to_ids(text)
        if not ids:
            raise ValueError(f"no character of {text[:40]!r} is in the model's alphabet")
        x = torch.as_tensor(ids, dtype=torch.long, device=self.device).unsqueeze(0)
        aux = {"x_lengths": torch.tensor([x.shape[1]], device=self.device)}
        if row is not None:
            aux["speaker_ids"] = torch.tensor([row], device=self.device)
        code = self.languages.get(language, language)
        if len(self.language_ids) > 1 and code in self.language_ids:
            aux["language_ids"] = torch.tensor([self.language_ids[code]], device=self.device)
        _seed_everything(seed)  # VITS samples its prior and durations
        with torch.inference_mode():
            wav = self.model.inference(x, aux_input=aux)["model_outputs"][0]
        return wav.detach().float().cpu().numpy().reshape(-1), self.sample_rate


# --- XTTS-v2 -------------------------------------------------------------------------------------------


class XttsBackend:
    """XTTS-v2 voice cloning with per-speaker conditioning cached in memory and on disk."""

    def __init__(self, model: str | None, device: str = "auto", languages: dict[str, str] | None = None,
                 pool: list[Speaker] | None = None, pool_file: Path | None = None, latent_dir: Path | None = None,
                 chunk_gap_s: float = 0.15, **_ignored):
        import torch
        from TTS.tts.configs.xtts_config import XttsConfig
        from TTS.tts.models.xtts import Xtts

        _patch_xtts_for_transformers_cache_kwarg()
        _patch_xtts_reference_reader()
        folder = resolve_model("xtts", model)
        config = XttsConfig()
        config.load_json(str(folder / "config.json"))
        self.device = pick_device(device)
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
        self.model_digest = _fingerprint(folder / "model.pth")
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
        torch = self._torch
        code = self.language_code(language)
        if code not in self.config.languages:
            raise ValueError(f"language {language!r} -> {code!r} is not one of the model's languages "
                             f"{self.config.languages} (see tts.languages)")
        gpt, emb = self.latents(speaker)
        cfg = self.config
        settings = {"temperature": cfg.temperature, "length_penalty": cfg.length_penalty,
                    "repetition_penalty": cfg.repetition_penalty, "top_k": cfg.top_k, "top_p": cfg.top_p}
        gap = np.zeros(int(self.chunk_gap_s * self.sample_rate), dtype=np.float32)
        out: list[np.ndarray] = []
        for n, piece in enumerate(self.pieces(text, language)):
            _seed_everything(seed * 1000 + n)  # sampling: reproducible per turn, attempt and piece
            with torch.inference_mode():
                wav = self.model.inference(piece, code, gpt.to(self.device), emb.to(self.device), **settings)["wav"]
            out += [np.asarray(wav, dtype=np.float32).reshape(-1), gap]
        if not out:
            return np.zeros(0, dtype=np.float32), self.sample_rate
        return np.concatenate(out[:-1]), self.sample_rate
