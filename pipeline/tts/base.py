"""TTS backends behind one small protocol, chosen by `tts.backend` (piper, vits, xtts).

A backend turns (text, speaker, language, seed) into float32 mono samples and their rate, one turn at a
time (`synthesize`) or many (`synthesize_batch`). The TTS stage hands its backend every pending turn of a
Ray batch, across conversations and speakers, sorted by text length and cut into chunks of
`tts.max_batch_turns` (`call_batched`); XTTS-v2 and VITS decode a chunk in one forward (pipeline/tts/
xtts_batched.py, vits_batched.py), Piper loops (`synthesize_each`). A failure comes back in that turn's
slot, never raised, so one bad turn costs only itself and its retry (`speak_turns`). Each backend module
also has a `check(tts_cfg, languages, resolve_path)` that finds its model files before Ray starts and says
what is missing. Coqui backends import torch only when built, so a Piper run never loads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pipeline.voices.pool import Speaker

BACKENDS = ("piper", "vits", "xtts")


Synthesis = tuple[np.ndarray, int]  # float32 mono samples in [-1, 1], sample rate
BatchResult = list[Synthesis | Exception]


@dataclass(frozen=True)
class SynthesisRequest:
    """One turn (or piece) to speak. `max_seconds`: audio longer than this fails the duration check anyway,
    so a backend may stop generating there (XTTS caps the item's audio codes just past it)."""

    text: str
    speaker: Speaker
    language: str = "en"
    seed: int = 0
    max_seconds: float | None = None
    turn_key: tuple[str, int, int] | None = None  # (conversation, turn, attempt): only the test fault hook reads it


def synthesize_each(backend, requests: Sequence[SynthesisRequest]) -> BatchResult:
    """The default batch method: one `synthesize` call per request, each failure kept in its slot."""
    out: BatchResult = []
    for r in requests:
        try:
            out.append(backend.synthesize(r.text, r.speaker, language=r.language, seed=r.seed))
        except Exception as exc:  # noqa: BLE001 - returned to the caller, which retries or rejects that turn
            out.append(exc)
    return out


def length_batches(lengths: Sequence[int], max_batch: int) -> list[list[int]]:
    """Indices of `lengths` sorted by length (stable), cut into consecutive groups of at most `max_batch`, so
    each group pads to a length close to its items'."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i:i + max_batch] for i in range(0, len(order), max_batch)]


def synthesize_one(backend, request: SynthesisRequest) -> tuple[np.ndarray, int]:
    """`synthesize` for a backend whose batch path is its real one: a batch of one, its failure raised."""
    result = backend.synthesize_batch([request])[0]
    if isinstance(result, Exception):
        raise result
    return result


def call_batched(backend, requests: Sequence[SynthesisRequest], max_batch: int) -> BatchResult:
    """The backend's `synthesize_batch` over length-sorted chunks of at most `max_batch` requests, results in the
    requests' order; a backend without a batch method is called turn by turn."""
    batch = getattr(backend, "synthesize_batch", None)
    out: BatchResult = [RuntimeError("not synthesised")] * len(requests)
    for group in length_batches([len(r.text) for r in requests], max_batch):
        chunk = [requests[i] for i in group]
        try:
            results = batch(chunk) if batch is not None else synthesize_each(backend, chunk)
        except Exception as exc:  # noqa: BLE001 - a backend bug must not lose the chunk: each turn records it
            results = [exc] * len(chunk)
        for i, result in zip(group, results):
            out[i] = result
    return out


@dataclass
class TurnJob:
    """One turn to speak: `group` is what fails together (a conversation), `key` identifies the turn in it."""

    group: Any
    key: Any
    text: str
    speaker: Any
    language: str
    seed_for: Any  # attempt (1-based, over all the turn's syntheses) -> seed
    first_attempt: int = 1  # a re-synthesis continues the turn's count, so it never repeats an earlier seed
    conversation_id: str = ""


@dataclass
class TurnOutcome:
    samples: np.ndarray | None = None
    rate: int = 0
    attempts: int = 0  # syntheses in this call
    seed: int | None = None  # the seed of the one that succeeded
    failures: list[str] | None = None  # "attempt N (seed S): what went wrong", one per failed attempt


def speak_turns(backend, jobs: Sequence[TurnJob], check, max_attempts: int, max_batch: int,
                max_seconds=None, log=None) -> dict[tuple[Any, Any], TurnOutcome]:
    """Speak every job in rounds: round n synthesises, in length-sorted chunks of `max_batch`, every turn still
    without good audio, at its n-th seed; `check(samples, rate, text)` returns None or why the audio is bad.
    Only a failed turn is spoken again. `max_seconds(text)` caps a turn's audio where the backend can stop
    early (audio past it fails `check` anyway). Returns (group, key) -> outcome: samples set, or one failure
    per attempt when no attempt succeeded."""
    outcomes = {(j.group, j.key): TurnOutcome(failures=[]) for j in jobs}
    pending = list(jobs)
    for n in range(1, max_attempts + 1):
        if not pending:
            break
        numbers = [j.first_attempt + n - 1 for j in pending]
        seeds = [int(j.seed_for(a)) for j, a in zip(pending, numbers)]
        requests = [SynthesisRequest(j.text, j.speaker, j.language, seed, max_seconds(j.text) if max_seconds else None,
                                     turn_key=(j.conversation_id, j.key, a) if isinstance(j.key, int) else None)
                    for j, seed, a in zip(pending, seeds, numbers)]
        still = []
        for job, seed, attempt, result in zip(pending, seeds, numbers, call_batched(backend, requests, max_batch)):
            outcome = outcomes[(job.group, job.key)]
            outcome.attempts = n
            if isinstance(result, Exception):
                problem = f"{type(result).__name__}: {str(result)[:200]}"
            else:
                samples, rate = np.asarray(result[0], dtype=np.float32).reshape(-1), int(result[1])
                problem = check(samples, rate, job.text)
            if problem is None:
                outcome.samples, outcome.rate, outcome.seed = samples, rate, seed
                continue
            outcome.failures.append(f"attempt {attempt} (seed {seed}): {problem}")
            if log is not None:
                log.info("tts: turn %s of %s failed: %s", job.key, job.group, outcome.failures[-1])
            still.append(job)
        pending = still
    return outcomes


class TTSBackend(Protocol):
    model_id: str  # goes into every sample's JSON: backend, version, voice

    def synthesize(self, text: str, speaker: Speaker, language: str = "en", seed: int = 0) -> tuple[np.ndarray, int]:
        """Return float32 mono samples in [-1, 1] and their sample rate. `language` is the row's language
        (the backend maps it to its own code); `seed` makes a sampling model reproducible (a retry passes a new one)."""
        ...

    def synthesize_batch(self, requests: Sequence[SynthesisRequest]) -> BatchResult:
        """One (samples, rate) or Exception per request, in order; a request's audio does not depend on the others."""
        ...


def make_backend(name: str, piper_voice: Path | None, **options) -> TTSBackend:
    """Build the configured backend; Coqui backends import torch only here, so a Piper run never loads it."""
    if name == "piper":
        from pipeline.tts.piper import PiperBackend

        return PiperBackend(piper_voice, **options)
    if name == "vits":
        from pipeline.tts.vits import VitsBackend

        return VitsBackend(**options)
    if name == "xtts":
        from pipeline.tts.xtts import XttsBackend

        return XttsBackend(**options)
    raise ValueError(f"unknown tts.backend {name!r}")


def check_backend(cfg, languages: list[str], resolve_path) -> tuple[Path | None, list[str]]:
    """(the model file or folder, problems) for `cfg.backend` (`cfg` is the tts section)."""
    if cfg.backend == "piper":
        from pipeline.tts.piper import check

        return check(cfg, languages, resolve_path)
    from pipeline.tts.coqui import check

    return check(cfg, languages, resolve_path)
