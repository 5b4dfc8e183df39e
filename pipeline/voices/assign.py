"""Voice assignment: one user voice per conversation, the assistant's persona voice, balanced over the pool.

The user voice is a seeded permutation of the language's (filtered) pool indexed by the plan index, so use is
balanced to within one conversation per speaker without any coordination between workers. Optionally a
fraction of each language's voices is held out for the test split only, so the test split measures voices
a model never heard in training.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from pipeline.config import VoicesConfig
from pipeline.reasons import Rejected
from pipeline.voices.pool import Speaker


def assistant_voices(cfg: VoicesConfig, languages: list[str]) -> dict[str, list[str]]:
    """voices.assistant_speaker as {language: [speaker_id, ...]}: one id, a set, or a per-language mapping."""
    spec = cfg.assistant_speaker
    if isinstance(spec, dict):
        return {lang: [v] if isinstance(v, str) else list(v) for lang, v in spec.items()}
    ids = [spec] if isinstance(spec, str) else list(spec)
    return {lang: ids for lang in languages}


class VoiceAssigner:
    """Which voices speak a conversation. Built once per worker; `assign` is a pure function of the row."""

    def __init__(self, pool: list[Speaker], cfg: VoicesConfig, seed: int, languages: list[str]):
        pool = [s for s in pool if s.assignable]  # virtual-voice ingredients stay in the pool for the TTS only
        by_id = {s.speaker_id: s for s in pool}
        self.num_languages = len(languages)
        self.test_split = cfg.test_split
        self.assistants: dict[str, list[Speaker]] = {}
        for lang, ids in assistant_voices(cfg, languages).items():
            for sid in ids:
                if sid not in by_id:
                    raise ValueError(f"voices.assistant_speaker: {sid!r} is not in {cfg.pool}")
                if by_id[sid].language != lang:
                    raise ValueError(f"voices.assistant_speaker: {sid!r} speaks {by_id[sid].language!r}, not {lang!r} "
                                     f"(give one per language, e.g. {{en: ..., zh: ...}})")
            self.assistants[lang] = [by_id[sid] for sid in ids]
        missing = [lang for lang in languages if lang not in self.assistants]
        if missing:
            raise ValueError(f"voices.assistant_speaker has no voice for language(s) {missing}")
        assistant_ids = {s.speaker_id for voices in self.assistants.values() for s in voices}

        self.user_pools: dict[str, list[Speaker]] = {}  # train/validation voices
        self.test_pools: dict[str, list[Speaker]] = {}  # held-out voices (the test split only)
        for lang in languages:
            candidates = [s for s in pool if s.language == lang
                          and (cfg.user_genders is None or s.gender in cfg.user_genders)]
            if not candidates:
                raise ValueError(f"voices.pool {cfg.pool} has no speaker for language {lang!r}"
                                 + (f" with gender in {cfg.user_genders}" if cfg.user_genders else ""))
            # keep the assistant's voices for the assistant unless they are the only voices there are
            others = [s for s in candidates if s.speaker_id not in assistant_ids] or candidates
            order = np.random.default_rng([seed, len(others)]).permutation(len(others))
            shuffled = [others[i] for i in order]
            held = round(len(shuffled) * cfg.held_out_test_speakers)
            if cfg.held_out_test_speakers > 0:
                if len(shuffled) < 2:
                    raise ValueError(f"voices.held_out_test_speakers: language {lang!r} has {len(shuffled)} user "
                                     f"voice(s); holding some out of training needs at least 2")
                held = min(max(held, 1), len(shuffled) - 1)
            self.test_pools[lang] = shuffled[:held]
            self.user_pools[lang] = shuffled[held:]

    def _assistant(self, row: dict[str, Any]) -> Speaker:
        voices = self.assistants.get(row["language"])
        if not voices:
            raise Rejected("voices_no_speaker_for_language", f"no assistant voice for {row['language']!r}")
        if len(voices) == 1:
            return voices[0]
        # a small set of personas: the conversation ID picks one, the same on every worker and rerun
        h = int(hashlib.sha256(("assistant:" + row["conversation_id"]).encode()).hexdigest()[:8], 16)
        return voices[h % len(voices)]

    def assign(self, row: dict[str, Any]) -> tuple[Speaker, Speaker]:
        """(user voice, assistant voice) of a conversation row."""
        lang = row["language"]
        held_out = self.test_pools.get(lang) if row.get("split") == self.test_split else None
        pool = held_out or self.user_pools.get(lang)
        if not pool:
            raise Rejected("voices_no_speaker_for_language", lang)
        # plan indices take the languages in turn; divide that out so each language's pool is walked evenly
        user = pool[(row["plan_index"] // self.num_languages) % len(pool)]
        return user, self._assistant(row)
