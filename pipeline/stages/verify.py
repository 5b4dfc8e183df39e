"""Verify: transcribe every turn back with ASR and reject conversations whose audio does not say the text;
score audio quality (DNSMOS) and voice consistency (Resemblyzer) when the config asks for them.

Order per conversation: duration (free) -> DNSMOS -> speaker embeddings -> ASR (the most expensive), so bad
audio is dropped before paying for transcription; every measured score lands in the turn. With
`trim_trailing_audio` ASR runs first (with word timestamps) and cuts what follows the last recognised word.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.asr.base import ASRBackend, make_asr
from pipeline.audio import decode_audio, encode_flac, resample
from pipeline.config import VerifyConfig, is_url
from pipeline.io.inputs import local_pool_file
from pipeline.metrics import error_rate
from pipeline.reasons import Failure, Rejected
from pipeline.stages.base import Resources, RowStage, RunContext
from pipeline.threads import limit_threads, threads_for
from pipeline.voices.pool import Speaker

ASR_RATE = 16000


class VerifyStage(RowStage):
    name = "verify"

    @classmethod
    def check(cls, ctx: RunContext) -> list[str]:
        from pipeline.asr.base import check
        from pipeline.quality import require_packages

        ctx.asr_model, problems = check(ctx.cfg.verify, ctx.languages, ctx.cfg.resolve_path)
        if ctx.cfg.verify.enabled:
            try:
                require_packages(ctx.cfg.verify)
            except ValueError as exc:  # ConfigError
                problems.append(str(exc))
        return problems

    @classmethod
    def build(cls, ctx: RunContext) -> VerifyStage:
        v = ctx.cfg.verify
        stage = cls(v, ctx.asr_model, pool=ctx.pool, pool_file=ctx.cfg.resolve_location(ctx.cfg.voices.pool),
                    threads=threads_for(v.num_cpus, v.cpu_threads), storage_env=ctx.cfg.storage.env_names())
        stage.resources = Resources(num_cpus=v.num_cpus, num_gpus=v.num_gpus, threads=stage.threads,
                                    actors=v.max_actors, custom=dict(v.ray_resources))
        stage.batch_size = v.batch_size
        return stage

    def __init__(self, cfg: VerifyConfig, asr_model: Path | None, pool: list[Speaker] | None = None,
                 pool_file: Path | str | None = None, threads: int | None = None,
                 storage_env: dict[str, str] | None = None):
        super().__init__()
        self.storage_env = storage_env
        self.cfg, self.asr_model_path = cfg, asr_model
        self.threads = threads  # CPU threads of every model here (pipeline.threads); None: the libraries' defaults
        self.speakers = {s.speaker_id: s for s in pool or []}
        self.pool_file = pool_file
        self.asr: ASRBackend | None = None
        self.dnsmos = None
        self.embedder = None

    def setup(self) -> None:
        limit_threads(self.threads)
        if self.cfg.speaker_consistency and is_url(self.pool_file):  # reference clips: this node's copy
            self.pool_file = local_pool_file(self.pool_file, self.storage_env)
        self.asr = make_asr(self.cfg, self.asr_model_path, self.threads)
        if self.cfg.dnsmos:
            from pipeline.quality.dnsmos import DnsmosScorer

            self.dnsmos = DnsmosScorer(threads=self.threads)
        if self.cfg.speaker_consistency:
            from pipeline.quality.speaker_embed import SpeakerEmbedder

            self.embedder = SpeakerEmbedder()
            limit_threads(self.threads)  # torch is imported now

    def process_row(self, row: dict[str, Any]) -> None:
        assert self.asr is not None
        row["asr_model"] = self.asr.model_id
        audio = []
        for i, turn in enumerate(row["turns"]):
            duration = turn["duration_s"] or 0.0
            if duration < self.cfg.min_duration_s:
                raise Rejected("audio_too_short", f"turn {i} ({turn['role']}): {duration:.2f}s < {self.cfg.min_duration_s}s",
                               turn=i, role=turn["role"], metric="duration_s", value=duration,
                               limit=self.cfg.min_duration_s)
            if duration > self.cfg.max_duration_s:
                raise Rejected("audio_too_long", f"turn {i} ({turn['role']}): {duration:.1f}s > {self.cfg.max_duration_s}s",
                               turn=i, role=turn["role"], metric="duration_s", value=duration,
                               limit=self.cfg.max_duration_s)
            audio.append(decode_audio(turn["audio_flac"]))
        if self.cfg.trim_trailing_audio:  # trim first, so every score describes the audio that is kept
            self._transcribe(row, audio)
        if self.dnsmos is not None:
            self._check_quality(row["turns"], audio)
        if self.embedder is not None:
            self._check_speakers(row["turns"], audio)
        if not self.cfg.trim_trailing_audio:
            self._transcribe(row, audio)

    def _transcribe(self, row: dict[str, Any], audio: list[tuple[np.ndarray, int]]) -> None:
        failures, notes = [], []
        language = self.cfg.asr_language or row["language"]
        limit = self.cfg.max_error_rate.get(row["language"], self.cfg.max_wer)
        metric = "CER" if row["language"].startswith("zh") else "WER"
        if not self.cfg.trim_trailing_audio:
            texts = self.asr.transcribe_many([resample(s, r, ASR_RATE) for s, r in audio], language)
        for i, (turn, (samples, rate)) in enumerate(zip(row["turns"], audio)):
            if self.cfg.trim_trailing_audio:  # word timestamps: one turn at a time
                from pipeline.quality.trim import trim_after

                turn["asr_text"], last_end = self.asr.transcribe_words(resample(samples, rate, ASR_RATE), language)
                cut = trim_after(samples, rate, last_end, self.cfg.trim_margin_s)
                if cut is not None:  # babble after the last word: keep up to the last word plus the margin
                    audio[i] = (cut, rate)
                    turn.update(audio_flac=encode_flac(cut, rate), duration_s=cut.size / rate)
            else:
                turn["asr_text"] = texts[i]
            turn["error_rate"] = error_rate(turn["spoken_text"], turn["asr_text"], row["language"])
            if turn["error_rate"] > limit:
                failures.append(Failure(i, turn["role"], metric, round(turn["error_rate"], 4), limit))
                notes.append(f"turn {i} ({turn['role']}) {metric} {turn['error_rate']:.2f}: "
                             f"said {turn['spoken_text'][:60]!r}, heard {turn['asr_text'][:60]!r}")
        if failures:
            raise Rejected("asr_error_rate_above_threshold", f"max {limit}; " + "; ".join(notes), failures=failures)

    def _check_quality(self, turns: list[dict[str, Any]], audio: list[tuple[np.ndarray, int]]) -> None:
        low, failures = [], []
        for i, (turn, (samples, rate)) in enumerate(zip(turns, audio)):
            s = self.dnsmos.score(samples, rate)
            turn.update(dnsmos_ovrl=round(s.ovrl, 3), dnsmos_sig=round(s.sig, 3), dnsmos_bak=round(s.bak, 3),
                        dnsmos_p808=round(s.p808, 3))
            if self.cfg.min_dnsmos_ovrl is not None and s.ovrl < self.cfg.min_dnsmos_ovrl:
                low.append(f"turn {i} ({turn['role']}) OVRL {s.ovrl:.2f} (SIG {s.sig:.2f}, BAK {s.bak:.2f})")
                failures.append(Failure(i, turn["role"], "dnsmos_ovrl", round(s.ovrl, 3), self.cfg.min_dnsmos_ovrl))
        if low:
            raise Rejected("audio_quality_below_threshold", f"min DNSMOS OVRL {self.cfg.min_dnsmos_ovrl}; " + "; ".join(low),
                           failures=failures)

    def _check_speakers(self, turns: list[dict[str, Any]], audio: list[tuple[np.ndarray, int]]) -> None:
        """Each turn against its assigned voice (the speaker's reference clips, or for a model-internal voice
        the speaker's first checked turn in this conversation); and every pair of user turns."""
        from pipeline.quality.speaker_embed import cosine

        cfg = self.cfg
        embeds: dict[int, np.ndarray] = {}
        for i, (turn, (samples, rate)) in enumerate(zip(turns, audio)):
            if (turn["duration_s"] or 0.0) >= cfg.speaker_min_turn_s:
                try:
                    embeds[i] = self.embedder.embed(samples, rate)
                except ValueError:
                    pass  # too little speech after VAD: not checked here (ASR still judges its words)
        by_speaker: dict[str, list[int]] = defaultdict(list)
        for i in sorted(embeds):
            by_speaker[turns[i]["speaker_id"]].append(i)
        problems, failures = [], []
        for sid, idx in by_speaker.items():
            spk = self.speakers.get(sid)
            ref = self.embedder.speaker_embedding(spk, self.pool_file) if spk is not None and self.pool_file else None
            for n, i in enumerate(idx):
                if ref is not None:
                    sim = cosine(embeds[i], ref)
                elif len(idx) > 1:  # no references: the speaker's first turn anchors it (and is compared to the second)
                    sim = cosine(embeds[i], embeds[idx[1] if n == 0 else idx[0]])
                else:
                    continue
                turns[i]["speaker_similarity"] = round(sim, 4)
                if sim < cfg.min_speaker_similarity:
                    problems.append(f"turn {i} ({turns[i]['role']}, {sid}) similarity {sim:.3f} to its voice "
                                    f"< {cfg.min_speaker_similarity}")
                    failures.append(Failure(i, turns[i]["role"], "speaker_similarity", round(sim, 4),
                                            cfg.min_speaker_similarity))
        users = [i for i in sorted(embeds) if turns[i]["role"] == "user"]
        for a_pos, a in enumerate(users):
            for b in users[a_pos + 1:]:
                sim = cosine(embeds[a], embeds[b])
                if sim < cfg.min_user_similarity:
                    problems.append(f"user turns {a} and {b} similarity {sim:.3f} < {cfg.min_user_similarity}")
                    failures.append(Failure(b, "user", "user_similarity", round(sim, 4), cfg.min_user_similarity))
        if problems:
            raise Rejected("speaker_inconsistent", "; ".join(problems), failures=failures)
