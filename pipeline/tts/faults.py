"""A fault hook around a real TTS backend, for tests and benchmarks only: chosen turns' first syntheses come out
wrong, the way XTTS-class models fail at random (another text spoken, or babble/noise instead of speech).

Off unless SPEECHCHAT_TTS_FAULT holds a JSON plan (set before Ray starts, so every TTS actor inherits it), e.g.
    {"mode": "wrong_text", "fraction": 0.1}                       10 % of turns, their first synthesis only
    {"mode": "noise", "turns": [["en-0123abcd", 1]], "attempts": 99}  that turn, on every attempt
Turns are chosen by a hash of (plan seed, conversation_id, turn), so every process and every rerun picks the same.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

ENV = "SPEECHCHAT_TTS_FAULT"

# Spoken instead of the turn's text in mode wrong_text: plain sentences that share no content words with typical
# turns, so ASR hears clearly other words.
OTHER_TEXTS = (
    "Purple elephants rarely dance on frozen lakes in the middle of winter.",
    "Seven orange kites flew over the quiet harbour before the storm arrived.",
    "My grandmother keeps three noisy parrots and a very old piano.",
    "The submarine surfaced near the lighthouse just after midnight.",
)


@dataclass(frozen=True)
class TTSFaultPlan:
    mode: Literal["wrong_text", "noise"]
    fraction: float = 0.0  # of all turns, chosen by hash
    turns: frozenset[tuple[str, int]] = field(default_factory=frozenset)  # (conversation_id, turn index), always
    attempts: int = 1  # syntheses of a chosen turn that come out wrong: 1 = the first only; a large number: every one
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("wrong_text", "noise"):
            raise ValueError(f"{ENV}: mode must be wrong_text or noise, got {self.mode!r}")
        if not 0 <= self.fraction <= 1 or self.attempts < 1:
            raise ValueError(f"{ENV}: fraction must be in [0, 1] and attempts >= 1")

    @classmethod
    def from_env(cls) -> TTSFaultPlan | None:
        text = os.environ.get(ENV)
        if not text:
            return None
        spec: dict[str, Any] = json.loads(text)
        spec["turns"] = frozenset((str(c), int(t)) for c, t in spec.get("turns", []))
        return cls(**spec)

    def to_env(self) -> str:
        return json.dumps({"mode": self.mode, "fraction": self.fraction, "turns": sorted(self.turns),
                           "attempts": self.attempts, "seed": self.seed})

    def chosen(self, conversation_id: str, turn: int) -> bool:
        if (conversation_id, turn) in self.turns:
            return True
        digest = hashlib.sha256(f"{self.seed}:{conversation_id}:{turn}".encode()).digest()
        return int.from_bytes(digest[:8], "little") / 2 ** 64 < self.fraction

    def hits(self, conversation_id: str, turn: int, attempt: int) -> bool:
        """Whether synthesis number `attempt` (1-based, over TTS retries and re-syntheses) of this turn is wrong."""
        return attempt <= self.attempts and self.chosen(conversation_id, turn)


class FaultyTTS:
    """Wraps a real backend; a synthesis the plan hits speaks another text, or is replaced by noise of the same
    length and loudness as the real synthesis. Everything else goes to the backend unchanged."""

    def __init__(self, backend: Any, plan: TTSFaultPlan):
        self.backend, self.plan = backend, plan
        self.model_id = backend.model_id
        self.injected = 0  # syntheses made wrong in this process (tests read it)

    def synthesize(self, text: str, speaker: Any, language: str = "en", seed: int = 0,
                   turn_key: tuple[str, int, int] | None = None) -> tuple[np.ndarray, int]:
        if turn_key is None or not self.plan.hits(*turn_key):
            return self.backend.synthesize(text, speaker, language=language, seed=seed)
        self.injected += 1
        if self.plan.mode == "wrong_text":
            other = OTHER_TEXTS[int(hashlib.sha256(text.encode()).hexdigest(), 16) % len(OTHER_TEXTS)]
            return self.backend.synthesize(other, speaker, language=language, seed=seed)
        samples, rate = self.backend.synthesize(text, speaker, language=language, seed=seed)
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        rms = float(np.sqrt(np.mean(samples ** 2))) if samples.size else 0.1
        noise = np.random.default_rng(seed).normal(0.0, max(rms, 1e-3), samples.size)
        return np.clip(noise, -1.0, 1.0).astype(np.float32), rate

    def synthesize_batch(self, requests: Any) -> list[Any]:
        """Turn by turn (the hook is for tests and benchmarks), so each request's `turn_key` picks its fault."""
        out: list[Any] = []
        for r in requests:
            try:
                out.append(self.synthesize(r.text, r.speaker, language=r.language, seed=r.seed, turn_key=r.turn_key))
            except Exception as exc:  # noqa: BLE001 - kept in its slot, as every batch method does
                out.append(exc)
        return out

    def __getattr__(self, name: str) -> Any:  # anything else the stage asks of the backend
        return getattr(self.backend, name)
