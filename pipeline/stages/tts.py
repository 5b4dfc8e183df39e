"""TTS: speak every turn with its assigned voice; user audio is stored at 16 kHz, assistant at the model rate.

The stage collects every turn of the Ray batch (all its conversations, any speakers) and hands them to the
backend sorted by text length in chunks of `tts.max_batch_turns` (`pipeline.tts.base.speak_turns`), so a
batching backend (XTTS-v2, VITS) decodes many turns per forward with little padding; Piper speaks them one
by one. A synthesis can fail (an exception, NaN audio, no audio, or a duration absurd for the text: a
runaway or truncated generation). Only such a turn is synthesised again, with its next seed, in the next
round with the other failed turns, at most `max_attempts` times in all; a turn that never succeeds rejects
its conversation as `tts_failed`, with what went wrong on each attempt. The job never dies of one turn.
A turn's seed depends on the run seed, the conversation, the turn and the attempt only, so its audio is
the same whatever else is in its batch.

Only turns without audio are spoken: on the first pass every turn, and after verify sent some back
(`verify.resynthesis_rounds`) only those, with attempt numbers (and so seeds) that continue the turn's count,
so a re-synthesis never repeats an earlier seed. `synthesis_attempts` counts every synthesis of a turn.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.audio import encode_flac, resample
from pipeline.config import is_url
from pipeline.faults import checkpoint
from pipeline.io.inputs import local_pool_file, node_state_dir
from pipeline.reasons import Rejected
from pipeline.schema import awaits_synthesis
from pipeline.stages.base import Resources, RowStage, RunContext
from pipeline.threads import limit_threads, threads_for
from pipeline.tts.base import TTSBackend, TurnJob, check_backend, make_backend, speak_turns
from pipeline.tts.faults import FaultyTTS, TTSFaultPlan
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
                    threads=threads_for(t.num_cpus, t.cpu_threads), max_batch_turns=t.max_batch_turns)
        if ctx.cfg.duplex.enabled:  # the duplex timeline's backchannels, in each listener's own voice
            stage.backchannel_texts = dict(ctx.cfg.duplex.backchannel_texts)
            stage.backchannel_roles = list(ctx.cfg.duplex.backchannel_roles)
        stage.resources = Resources(num_cpus=t.num_cpus, num_gpus=t.num_gpus, threads=stage.threads,
                                    actors=t.max_actors, custom=dict(t.ray_resources))
        stage.batch_size = t.batch_size
        return stage

    def __init__(self, backend: str, piper_voice: Path | None, pool: list[Speaker], user_sample_rate: int = 16000,
                 backend_options: dict | None = None, max_attempts: int = 1, seed: int = 0,
                 min_s_per_char: float = 0.005, max_s_per_char: float = 1.0, threads: int | None = None,
                 max_batch_turns: int = 8):
        super().__init__()
        self.threads = threads  # CPU threads of the model (pipeline.threads); None: the library's default
        self.backend_name, self.piper_voice, self.backend_options = backend, piper_voice, backend_options or {}
        self.speakers = {s.speaker_id: s for s in pool}
        self.user_sample_rate = user_sample_rate
        self.max_attempts, self.seed = max_attempts, seed
        self.min_s_per_char, self.max_s_per_char = min_s_per_char, max_s_per_char
        self.max_batch_turns = max_batch_turns
        self.backend: TTSBackend | None = None
        self.backchannel_texts: dict[str, list[str]] = {}  # language -> texts; empty: no duplex rendering
        self.backchannel_roles: list[str] = []
        self._backchannel_cache: dict[tuple[str, str, str], tuple[bytes, int] | None] = {}

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
        plan = TTSFaultPlan.from_env()  # tests and benchmarks only: chosen syntheses come out wrong
        if plan is not None:
            log.warning("tts: fault hook on (%s): chosen turns' syntheses are made wrong on purpose", plan.to_env())
            self.backend = FaultyTTS(self.backend, plan)

    def max_seconds(self, text: str) -> float:
        """The longest audio `check_audio` accepts for `text` (a backend may stop generating just past it)."""
        return max(5.0, max(len(text.strip()), 1) * self.max_s_per_char)

    def check_audio(self, samples: np.ndarray, rate: int, text: str) -> str | None:
        """None if the audio is plausible for the text, else a short reason code."""
        if samples.size == 0:
            return "empty_audio"
        if not np.isfinite(samples).all():
            return "non_finite_audio"
        duration, chars = samples.size / rate, max(len(text.strip()), 1)
        if duration < chars * self.min_s_per_char:
            return f"too_short {duration:.2f}s for {chars} chars"
        if duration > self.max_seconds(text):
            return f"too_long {duration:.1f}s for {chars} chars"
        return None

    def speak(self, text: str, speaker: Speaker, language: str, conversation_seed: int | None,
              turn: int) -> tuple[np.ndarray, int, int, int]:
        """One text alone (the backchannels): samples, rate, attempts used and the seed of the one that
        succeeded; raises Rejected("tts_failed") after max_attempts failures."""
        assert self.backend is not None
        job = TurnJob(group=0, key=turn, text=text, speaker=speaker, language=language,
                      seed_for=lambda attempt: turn_seed(self.seed, conversation_seed, turn, attempt))
        outcome = speak_turns(self.backend, [job], self.check_audio, self.max_attempts, 1,
                              max_seconds=self.max_seconds, log=log)[(0, turn)]
        if outcome.samples is None:
            raise Rejected("tts_failed", f"turn {turn} ({speaker.speaker_id}): " + "; ".join(outcome.failures or []),
                           turn=turn, metric="attempts", value=float(outcome.attempts), limit=float(self.max_attempts))
        return outcome.samples, outcome.rate, outcome.attempts, int(outcome.seed or 0)

    def jobs(self, row: dict[str, Any]) -> list[TurnJob]:
        """The row's turns still to speak (all of them on the first pass; after verify sent some back, only
        those); raises Rejected for a speaker the pool or the backend cannot voice."""
        out = []
        pending = [i for i, turn in enumerate(row["turns"]) if awaits_synthesis(turn)]
        if any(row["turns"][i].get("resyntheses") for i in pending):
            checkpoint("tts.resynthesis")  # kill-and-resume tests stop here, in the middle of a re-synthesis round
        for i in pending:
            turn = row["turns"][i]
            speaker = self.speakers.get(turn["speaker_id"])
            if speaker is None:
                raise Rejected("tts_unknown_speaker", f"turn {i}: {turn['speaker_id']!r} not in pool", turn=i,
                               role=turn["role"])
            if speaker.backend != self.backend_name:
                raise Rejected("tts_backend_mismatch", f"turn {i}: speaker {speaker.speaker_id} is a {speaker.backend} "
                                                       f"voice but tts.backend is {self.backend_name}", turn=i,
                               role=turn["role"])
            conversation_seed = row.get("seed")
            out.append(TurnJob(group=id(row), key=i, text=turn["spoken_text"], speaker=speaker,
                               language=row["language"], first_attempt=(turn.get("synthesis_attempts") or 0) + 1,
                               conversation_id=row["conversation_id"],
                               seed_for=lambda attempt, s=conversation_seed, i=i: turn_seed(self.seed, s, i, attempt)))
        return out

    def process_rows(self, rows: list[dict[str, Any]]) -> None:
        assert self.backend is not None
        jobs: dict[int, list[TurnJob]] = {}
        for row in rows:
            found = self.guarded(row, self.jobs, row)
            if found is not None:
                jobs[id(row)] = found
        started = time.perf_counter()
        outcomes = speak_turns(self.backend, [j for js in jobs.values() for j in js], self.check_audio,
                               self.max_attempts, self.max_batch_turns, max_seconds=self.max_seconds, log=log)
        # the batch's synthesis time, shared out by text length (the cost section reads tts_busy_s per row)
        spent, chars = time.perf_counter() - started, {k: sum(len(j.text) for j in js) for k, js in jobs.items()}
        for row in rows:
            if chars.get(id(row)):
                row["tts_busy_s"] = (row.get("tts_busy_s") or 0.0) + spent * chars[id(row)] / sum(chars.values())
        for row in rows:
            if id(row) in jobs:
                self.guarded(row, self.write_audio, row, jobs[id(row)], outcomes)

    def write_audio(self, row: dict[str, Any], jobs: list[TurnJob], outcomes: dict) -> None:
        """Put each spoken turn's audio into the row, or reject the row for its first turn that never got good
        audio."""
        for job in jobs:
            outcome = outcomes[(job.group, job.key)]
            if outcome.samples is None:
                raise Rejected("tts_failed", f"turn {job.key} ({job.speaker.speaker_id}): " + "; ".join(outcome.failures),
                               turn=job.key, metric="attempts", value=float(outcome.attempts),
                               limit=float(self.max_attempts))
        row["tts_model"] = self.backend.model_id
        for job in jobs:
            turn = row["turns"][job.key]
            outcome = outcomes[(job.group, job.key)]
            samples, rate = outcome.samples, outcome.rate
            if turn["role"] == "user":
                samples, rate = resample(samples, rate, self.user_sample_rate), self.user_sample_rate
            turn["audio_flac"] = encode_flac(samples, rate)
            turn["sample_rate"] = rate
            turn["duration_s"] = samples.size / rate
            turn["tts_attempts"] = outcome.attempts
            turn.update(synthesis_attempts=job.first_attempt - 1 + outcome.attempts, synthesis_seed=outcome.seed,
                        verified=False, resyntheses=turn.get("resyntheses") or 0)
        if self.backchannel_texts.get(row["language"]):
            row["backchannels"] = self.backchannels(row)

    def process_row(self, row: dict[str, Any]) -> None:
        self.process_rows([row])

    def backchannels(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        """Each listener role saying each backchannel text of the language, in that role's voice of this
        conversation. Cached per voice and text (a handful per voice); one that fails to synthesise is left out
        (the timeline then uses the others), never the conversation."""
        out = []
        voices = {t["role"]: t["speaker_id"] for t in row["turns"]}
        for role in self.backchannel_roles:
            speaker = self.speakers.get(voices.get(role, ""))
            if speaker is None:
                continue
            for j, text in enumerate(self.backchannel_texts[row["language"]]):
                key = (speaker.speaker_id, row["language"], text)
                if key not in self._backchannel_cache:
                    try:  # a fixed seed per voice and text: the same clip in every conversation and rerun
                        samples, rate, _, _ = self.speak(text, speaker, row["language"], 0, 10_000 + j)
                        self._backchannel_cache[key] = (encode_flac(samples, rate), rate)
                    except Rejected:
                        self._backchannel_cache[key] = None
                if self._backchannel_cache[key] is not None:
                    flac, rate = self._backchannel_cache[key]
                    out.append({"role": role, "text": text, "audio_flac": flac, "sample_rate": rate})
        return out


def backend_options(ctx: RunContext) -> dict[str, Any]:
    """What make_backend needs for tts.backend (Piper: its noise; Coqui: weights, device, pool, latent cache)."""
    t = ctx.cfg.tts
    if t.backend == "piper":
        return {"noise_scale": t.piper_noise_scale, "noise_w_scale": t.piper_noise_w_scale}
    options: dict[str, Any] = {"model": str(ctx.tts_model or t.model), "device": t.device,
                               "languages": dict(t.languages), "max_batch_turns": t.max_batch_turns}
    if t.backend == "xtts":
        options.update(pool=ctx.pool, pool_file=ctx.cfg.resolve_location(ctx.cfg.voices.pool),
                       chunk_gap_s=t.chunk_gap_s, latent_output=ctx.out_dir, storage_env=ctx.cfg.storage.env_names())
    return options
