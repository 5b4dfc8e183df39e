"""TTS: speak every turn with its assigned voice; user audio is stored at 16 kHz, assistant at the model rate.

A synthesis can fail (an exception, NaN audio, no audio, or a duration absurd for the text: a runaway
or truncated generation). Such a turn is synthesised again with a new seed, at most `max_attempts`
times in all; a turn that never succeeds rejects the conversation as `tts_failed`, with what went wrong
on each attempt. The job never dies of one turn.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.audio import encode_flac, resample
from pipeline.config import is_url
from pipeline.io.inputs import local_pool_file, node_state_dir
from pipeline.reasons import Rejected
from pipeline.stages.base import Resources, RowStage, RunContext
from pipeline.threads import limit_threads, threads_for
from pipeline.tts.base import TTSBackend, check_backend, make_backend
from pipeline.voices.pool import Speaker

log = logging.getLogger(__name__)


def turn_seed(base: int, conversation_seed: int | None, turn: int, attempt: int) -> int:
    """A seed per (run seed, conversation, turn, attempt): reruns reproduce, retries differ."""
    key = f"{base}:{conversation_seed or 0}:{turn}:{attempt}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "little") & 0x7FFFFFFF


class TTSStage(RowStage):
    name = "tts"

    @classmethod
    def check(cls, ctx: RunContext) -> list[str]:
        found, problems = check_backend(ctx.cfg.tts, ctx.languages, ctx.cfg.resolve_path)
        if ctx.cfg.tts.backend == "piper":
            ctx.piper_voice = found
        else:
            ctx.tts_model = found
        return problems

    @classmethod
    def build(cls, ctx: RunContext) -> TTSStage:
        t = ctx.cfg.tts
        stage = cls(t.backend, ctx.piper_voice, ctx.pool, user_sample_rate=t.user_sample_rate,
                    backend_options=backend_options(ctx), max_attempts=t.max_attempts, seed=t.seed,
                    min_s_per_char=t.min_s_per_char, max_s_per_char=t.max_s_per_char,
                    threads=threads_for(t.num_cpus, t.cpu_threads))
        stage.resources = Resources(num_cpus=t.num_cpus, num_gpus=t.num_gpus, threads=stage.threads,
                                    actors=t.max_actors, custom=dict(t.ray_resources))
        stage.batch_size = t.batch_size
        return stage

    def __init__(self, backend: str, piper_voice: Path | None, pool: list[Speaker], user_sample_rate: int = 16000,
                 backend_options: dict | None = None, max_attempts: int = 1, seed: int = 0,
                 min_s_per_char: float = 0.005, max_s_per_char: float = 1.0, threads: int | None = None):
        super().__init__()
        self.threads = threads  # CPU threads of the model (pipeline.threads); None: the library's default
        self.backend_name, self.piper_voice, self.backend_options = backend, piper_voice, backend_options or {}
        self.speakers = {s.speaker_id: s for s in pool}
        self.user_sample_rate = user_sample_rate
        self.max_attempts, self.seed = max_attempts, seed
        self.min_s_per_char, self.max_s_per_char = min_s_per_char, max_s_per_char
        self.backend: TTSBackend | None = None

    def setup(self) -> None:
        limit_threads(self.threads)
        options = dict(self.backend_options)
        storage_env = options.pop("storage_env", None)
        if is_url(options.get("pool_file")):  # a pool on object storage: this node's copy
            options["pool_file"] = local_pool_file(options["pool_file"], storage_env)
        if "latent_output" in options:  # where this node keeps the XTTS latents of this output
            options["latent_dir"] = node_state_dir(options.pop("latent_output"), "xtts_latents")
        if self.backend_name == "piper" and self.threads is not None:
            options["threads"] = self.threads
        self.backend = make_backend(self.backend_name, self.piper_voice, **options)
        limit_threads(self.threads)  # a Coqui backend has imported torch now

    def check_audio(self, samples: np.ndarray, rate: int, text: str) -> str | None:
        """None if the audio is plausible for the text, else a short reason code."""
        if samples.size == 0:
            return "empty_audio"
        if not np.isfinite(samples).all():
            return "non_finite_audio"
        duration, chars = samples.size / rate, max(len(text.strip()), 1)
        if duration < chars * self.min_s_per_char:
            return f"too_short {duration:.2f}s for {chars} chars"
        if duration > max(5.0, chars * self.max_s_per_char):
            return f"too_long {duration:.1f}s for {chars} chars"
        return None

    def speak(self, text: str, speaker: Speaker, language: str, conversation_seed: int | None,
              turn: int) -> tuple[np.ndarray, int, int]:
        """Samples, rate and attempts used; raises Rejected("tts_failed") after max_attempts failures."""
        assert self.backend is not None
        failures = []
        for attempt in range(1, self.max_attempts + 1):
            seed = turn_seed(self.seed, conversation_seed, turn, attempt)
            try:
                samples, rate = self.backend.synthesize(text, speaker, language=language, seed=seed)
                samples = np.asarray(samples, dtype=np.float32).reshape(-1)
                problem = self.check_audio(samples, rate, text)
            except Exception as exc:  # noqa: BLE001 - recorded and retried; the conversation is rejected if none succeeds
                problem = f"{type(exc).__name__}: {str(exc)[:200]}"
            if problem is None:
                return samples, rate, attempt
            failures.append(f"attempt {attempt} (seed {seed}): {problem}")
            log.info("tts: turn %d of speaker %s failed: %s", turn, speaker.speaker_id, failures[-1])
        raise Rejected("tts_failed", f"turn {turn} ({speaker.speaker_id}): " + "; ".join(failures), turn=turn,
                       metric="attempts", value=float(self.max_attempts), limit=float(self.max_attempts))

    def process_row(self, row: dict[str, Any]) -> None:
        assert self.backend is not None
        row["tts_model"] = self.backend.model_id
        for i, turn in enumerate(row["turns"]):
            speaker = self.speakers.get(turn["speaker_id"])
            if speaker is None:
                raise Rejected("tts_unknown_speaker", f"turn {i}: {turn['speaker_id']!r} not in pool", turn=i,
                               role=turn["role"])
            if speaker.backend != self.backend_name:
                raise Rejected("tts_backend_mismatch", f"turn {i}: speaker {speaker.speaker_id} is a {speaker.backend} "
                                                       f"voice but tts.backend is {self.backend_name}", turn=i,
                               role=turn["role"])
            samples, rate, attempts = self.speak(turn["spoken_text"], speaker, row["language"], row.get("seed"), i)
            if turn["role"] == "user":
                samples, rate = resample(samples, rate, self.user_sample_rate), self.user_sample_rate
            turn["audio_flac"] = encode_flac(samples, rate)
            turn["sample_rate"] = rate
            turn["duration_s"] = samples.size / rate
            turn["tts_attempts"] = attempts


def backend_options(ctx: RunContext) -> dict[str, Any]:
    """What make_backend needs for tts.backend (Piper: its noise; Coqui: weights, device, pool, latent cache)."""
    t = ctx.cfg.tts
    if t.backend == "piper":
        return {"noise_scale": t.piper_noise_scale, "noise_w_scale": t.piper_noise_w_scale}
    options: dict[str, Any] = {"model": str(ctx.tts_model or t.model), "device": t.device,
                               "languages": dict(t.languages)}
    if t.backend == "xtts":
        options.update(pool=ctx.pool, pool_file=ctx.cfg.resolve_location(ctx.cfg.voices.pool),
                       chunk_gap_s=t.chunk_gap_s, latent_output=ctx.out_dir, storage_env=ctx.cfg.storage.env_names())
    return options
