"""Voices: one user voice per conversation, the assistant's persona voice, balanced over the pool.

The user voice is a seeded permutation of the language's pool indexed by the plan index, so use is
balanced to within one conversation per speaker without any coordination between workers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.speakers import Speaker
from pipeline.stages.base import Rejected, Stage


class VoiceStage(Stage):
    name = "voices"

    def __init__(self, pool: list[Speaker], assistant_speaker: str, seed: int, num_languages: int = 1):
        super().__init__()
        by_id = {s.speaker_id: s for s in pool}
        if assistant_speaker not in by_id:
            raise ValueError(f"assistant speaker {assistant_speaker!r} is not in the speaker pool")
        self.assistant = by_id[assistant_speaker]
        self.num_languages = num_languages
        self.user_pools: dict[str, list[Speaker]] = {}
        for lang in sorted({s.language for s in pool}):
            candidates = [s for s in pool if s.language == lang]
            # keep the assistant's voice for the assistant unless it is the only voice there is
            others = [s for s in candidates if s.speaker_id != assistant_speaker] or candidates
            order = np.random.default_rng([seed, len(others)]).permutation(len(others))
            self.user_pools[lang] = [others[i] for i in order]

    def process_row(self, row: dict[str, Any]) -> None:
        pool = self.user_pools.get(row["language"])
        if not pool:
            raise Rejected("voices_no_speaker_for_language", row["language"])
        # plan indices take the languages in turn; divide that out so each language's pool is walked evenly
        user = pool[(row["plan_index"] // self.num_languages) % len(pool)]
        row["user_speaker_id"], row["assistant_speaker_id"] = user.speaker_id, self.assistant.speaker_id
        for turn in row["turns"]:
            turn["speaker_id"] = user.speaker_id if turn["role"] == "user" else self.assistant.speaker_id
