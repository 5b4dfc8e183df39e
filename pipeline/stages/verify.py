"""Verify: check every turn's audio, transcribe it back with ASR, and send back turns that fail; score audio
quality (DNSMOS) and voice consistency (Resemblyzer) when the config asks for them.

Order, check by check over the turns still to verify: duration (free) -> audio checks (VAD silence trimmed to a
margin, pauses, clipping, loudness normalised, speech rate; pipeline/quality/audio_checks.py) -> DNSMOS ->
speaker embeddings -> ASR (the most expensive), so a turn that fails early is not paid for further; every
measured score lands in the turn and describes the audio that is kept. With `trim_trailing_audio` ASR runs
before DNSMOS (with word timestamps) and cuts what follows the last recognised word.

A failing turn, and only that turn, goes back to TTS: its audio is dropped and the failure (check, metric,
value, limit, attempt, seed) recorded in its `failed_attempts`; the conversation flows on to the next TTS and
verify pass (the executor repeats the pair, `verify.resynthesis_rounds` times at most). A turn that fails again
after its last round rejects the conversation, listing every attempt. With 0 rounds the first failing check
rejects the conversation, as before re-synthesis existed.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.asr.base import ASRBackend, make_asr
from pipeline.audio import decode_audio, encode_flac, resample
from pipeline.config import VerifyConfig, is_url
from pipeline.io.inputs import local_pool_file
from pipeline.metrics import error_rate
from pipeline.quality.audio_checks import SCORE_FIELDS, AudioChecker
from pipeline.reasons import Failure, Rejected
from pipeline.schema import awaits_synthesis
from pipeline.stages.base import Resources, RowStage, RunContext
from pipeline.threads import limit_threads, threads_for
from pipeline.voices.pool import Speaker

ASR_RATE = 16000
# What a turn sent back for re-synthesis forgets: its audio (no audio = awaits TTS) and every score of it.
RESET_ON_RESYNTHESIS = ("audio_flac", "sample_rate", "duration_s", "asr_text", "error_rate", "dnsmos_ovrl", "dnsmos_sig",
                        "dnsmos_bak", "dnsmos_p808", "speaker_similarity", *SCORE_FIELDS)
log = logging.getLogger(__name__)


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
                    threads=threads_for(v.num_cpus, v.cpu_threads), word_timings=ctx.cfg.duplex.enabled,
                    storage_env=ctx.cfg.storage.env_names())
        stage.resources = Resources(num_cpus=v.num_cpus, num_gpus=v.num_gpus, threads=stage.threads,
                                    actors=v.max_actors, custom=dict(v.ray_resources))
        stage.batch_size = v.batch_size
        return stage

    def __init__(self, cfg: VerifyConfig, asr_model: Path | None, pool: list[Speaker] | None = None,
                 pool_file: Path | str | None = None, threads: int | None = None, word_timings: bool = False,
                 storage_env: dict[str, str] | None = None):
        super().__init__()
        self.storage_env = storage_env
        self.cfg, self.asr_model_path = cfg, asr_model
        self.word_timings = word_timings  # the duplex rendering cuts interrupted assistant turns at word boundaries
        self.threads = threads  # CPU threads of every model here (pipeline.threads); None: the libraries' defaults
        self.speakers = {s.speaker_id: s for s in pool or []}
        self.pool_file = pool_file
        self.asr: ASRBackend | None = None
        self.dnsmos = None
        self.embedder = None
        self.checker: AudioChecker | None = None

    def setup(self) -> None:
        limit_threads(self.threads)
        if self.cfg.speaker_consistency and is_url(self.pool_file):  # reference clips: this node's copy
            self.pool_file = local_pool_file(self.pool_file, self.storage_env)
        self.asr = make_asr(self.cfg, self.asr_model_path, self.threads)
        self.checker = AudioChecker(self.cfg)
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
        turns = row["turns"]
        todo = [i for i, t in enumerate(turns) if not t.get("verified") and not awaits_synthesis(t)]
        failed: dict[int, Failure] = {}
        audio: dict[int, tuple[np.ndarray, int]] = {}

        def settle(found: dict[int, Failure]) -> None:
            """Take one check's failures; reject at once when a failing turn has no round left."""
            failed.update(found)
            self._reject_if_exhausted(turns, found)

        settle(self._check_durations(turns, todo))
        for i in todo:
            if i not in failed:
                audio[i] = decode_audio(turns[i]["audio_flac"])
        if self.checker is not None:
            settle(self._check_audio(row, audio))
        if self.cfg.trim_trailing_audio:  # trim first, so every score describes the audio that is kept
            settle(self._transcribe(row, audio, [i for i in audio if i not in failed]))
        if self.dnsmos is not None:
            settle(self._check_quality(turns, audio, [i for i in audio if i not in failed]))
        if self.embedder is not None:
            settle(self._check_speakers(turns, audio, [i for i in audio if i not in failed]))
        if not self.cfg.trim_trailing_audio:
            settle(self._transcribe(row, audio, [i for i in audio if i not in failed]))
        for i in todo:
            if i not in failed:
                turns[i]["verified"] = True
        for i, failure in failed.items():  # rounds left: back to TTS with a new seed (the executor's next pass)
            turn = turns[i]
            turn["failed_attempts"] = [*(turn.get("failed_attempts") or []), failure.as_row()]
            turn.update({k: None for k in RESET_ON_RESYNTHESIS}, resyntheses=(turn.get("resyntheses") or 0) + 1)
            log.info("verify: %s turn %d failed %s (%s %.4g, limit %.4g): re-synthesising", row["conversation_id"], i,
                     failure.reason, failure.metric, failure.value, failure.limit)

    def _failure(self, turn: dict[str, Any], i: int, reason: str, metric: str, value: float, limit: float) -> Failure:
        return Failure(i, turn["role"], metric, value, limit, reason=reason, attempt=turn.get("synthesis_attempts"),
                       seed=turn.get("synthesis_seed"))

    def _reject_if_exhausted(self, turns: list[dict[str, Any]], found: dict[int, Failure]) -> None:
        """Reject the conversation when a failing turn used all its re-synthesis rounds. `failures` lists the
        exhausted turns' last failures first (the first is the primary one: the reject reason and columns), then
        every earlier attempt of those turns."""
        done = [i for i in sorted(found) if (turns[i].get("resyntheses") or 0) >= self.cfg.resynthesis_rounds]
        if not done:
            return
        first = found[done[0]]
        attempts = [Failure(**a) for i in done for a in (turns[i].get("failed_attempts") or [])]
        failures = [found[i] for i in done] + attempts
        rounds = self.cfg.resynthesis_rounds
        ordered = sorted(set(failures), key=lambda f: (f.turn, f.attempt or 0))
        def attempt(f: Failure) -> str:  # no attempt or seed when the audio did not come from this run's TTS
            return "".join([f" attempt {f.attempt}" * (f.attempt is not None), f" seed {f.seed}" * (f.seed is not None)])

        tried = "; ".join(f"turn {f.turn} ({f.role}){attempt(f)}: {f.reason} {f.metric} {f.value:.4g} "
                          f"(limit {f.limit:.4g})" for f in ordered)
        heard = [f"turn {i} said {turns[i]['spoken_text'][:60]!r}, heard {turns[i]['asr_text'][:60]!r}" for i in done
                 if found[i].reason == "asr_error_rate_above_threshold"]
        tried += "".join(f"; {h}" for h in heard)
        raise Rejected(first.reason, (f"after {rounds} re-synthesis round(s): " if rounds else "") + tried,
                       failures=failures)

    def _check_durations(self, turns: list[dict[str, Any]], todo: list[int]) -> dict[int, Failure]:
        found = {}
        for i in todo:
            turn, duration = turns[i], turns[i]["duration_s"] or 0.0
            if duration < self.cfg.min_duration_s:
                found[i] = self._failure(turn, i, "audio_too_short", "duration_s", duration, self.cfg.min_duration_s)
            elif duration > self.cfg.max_duration_s:
                found[i] = self._failure(turn, i, "audio_too_long", "duration_s", duration, self.cfg.max_duration_s)
        return found

    def _check_audio(self, row: dict[str, Any], audio: dict[int, tuple[np.ndarray, int]]) -> dict[int, Failure]:
        """Silence, pauses, clipping, loudness and speech rate; a trimmed or normalised turn is re-encoded."""
        found = {}
        for i, (samples, rate) in list(audio.items()):
            turn = row["turns"][i]
            out = self.checker.check_turn(samples, rate, turn["spoken_text"] or "", row["language"], turn=i)
            turn.update(out.scores)
            if out.failure is not None:
                f = out.failure
                found[i] = self._failure(turn, i, f.reason, f.metric, round(f.value, 6), f.limit)
            elif out.changed:
                audio[i] = (out.samples, rate)
                turn.update(audio_flac=encode_flac(out.samples, rate), duration_s=out.samples.size / rate)
        return found

    def _transcribe(self, row: dict[str, Any], audio: dict[int, tuple[np.ndarray, int]], idx: list[int]) -> dict[int, Failure]:
        found = {}
        language = self.cfg.asr_language or row["language"]
        limit = self.cfg.max_error_rate.get(row["language"], self.cfg.max_wer)
        metric = "CER" if row["language"].startswith("zh") else "WER"
        timed = {i for i in idx if self.word_timings and row["turns"][i]["role"] == "assistant"}
        if not self.cfg.trim_trailing_audio:
            batched = [i for i in idx if i not in timed]
            texts = dict(zip(batched, self.asr.transcribe_many([resample(*audio[i], ASR_RATE) for i in batched],
                                                                language))) if batched else {}
        for i in idx:
            turn, (samples, rate) = row["turns"][i], audio[i]
            if i in timed and not self.cfg.trim_trailing_audio:  # word timestamps: one turn at a time
                turn["asr_text"], words = self.asr.transcribe_timed(resample(samples, rate, ASR_RATE), language)
                turn["asr_words"] = [{"word": w, "start": a, "end": b} for w, a, b in words]
            elif self.cfg.trim_trailing_audio:  # word timestamps: one turn at a time
                from pipeline.quality.trim import trim_after

                turn["asr_text"], words = self.asr.transcribe_timed(resample(samples, rate, ASR_RATE), language)
                last_end = max(w[2] for w in words) if words else None
                if i in timed:  # trimming cuts only the tail: the word times stay right
                    turn["asr_words"] = [{"word": w, "start": a, "end": b} for w, a, b in words]
                cut = trim_after(samples, rate, last_end, self.cfg.trim_margin_s)
                if cut is not None:  # babble after the last word: keep up to the last word plus the margin
                    audio[i] = (cut, rate)
                    turn.update(audio_flac=encode_flac(cut, rate), duration_s=cut.size / rate)
            else:
                turn["asr_text"] = texts[i]
            turn["error_rate"] = error_rate(turn["spoken_text"], turn["asr_text"], row["language"])
            if turn["error_rate"] > limit:
                found[i] = self._failure(turn, i, "asr_error_rate_above_threshold", metric, round(turn["error_rate"], 4),
                                         limit)
                log.debug("verify: turn %d %s %.2f: said %r, heard %r", i, metric, turn["error_rate"],
                          turn["spoken_text"][:60], turn["asr_text"][:60])
        return found

    def _check_quality(self, turns: list[dict[str, Any]], audio: dict[int, tuple[np.ndarray, int]],
                       idx: list[int]) -> dict[int, Failure]:
        found = {}
        for i in idx:
            turn, (samples, rate) = turns[i], audio[i]
            s = self.dnsmos.score(samples, rate)
            turn.update(dnsmos_ovrl=round(s.ovrl, 3), dnsmos_sig=round(s.sig, 3), dnsmos_bak=round(s.bak, 3),
                        dnsmos_p808=round(s.p808, 3))
            if self.cfg.min_dnsmos_ovrl is not None and s.ovrl < self.cfg.min_dnsmos_ovrl:
                found[i] = self._failure(turn, i, "audio_quality_below_threshold", "dnsmos_ovrl", round(s.ovrl, 3),
                                         self.cfg.min_dnsmos_ovrl)
        return found

    def _check_speakers(self, turns: list[dict[str, Any]], audio: dict[int, tuple[np.ndarray, int]],
                        idx: list[int]) -> dict[int, Failure]:
        """Each turn against its assigned voice (the speaker's reference clips, or for a model-internal voice
        the speaker's first checked turn in this conversation); and every pair of user turns. Turns verified in
        an earlier round take part as anchors; only turns in `idx` can fail (of a failing user pair, the later)."""
        from pipeline.quality.speaker_embed import cosine

        cfg = self.cfg
        clips = {i: audio[i] for i in idx}
        clips.update({i: decode_audio(t["audio_flac"]) for i, t in enumerate(turns)
                      if t.get("verified") and t.get("audio_flac") is not None})
        embeds: dict[int, np.ndarray] = {}
        for i in sorted(clips):
            if (turns[i]["duration_s"] or 0.0) >= cfg.speaker_min_turn_s:
                try:
                    embeds[i] = self.embedder.embed(*clips[i])
                except ValueError:
                    pass  # too little speech after VAD: not checked here (ASR still judges its words)
        by_speaker: dict[str, list[int]] = defaultdict(list)
        for i in sorted(embeds):
            by_speaker[turns[i]["speaker_id"]].append(i)
        found: dict[int, Failure] = {}
        for sid, ids in by_speaker.items():
            spk = self.speakers.get(sid)
            ref = self.embedder.speaker_embedding(spk, self.pool_file) if spk is not None and self.pool_file else None
            for n, i in enumerate(ids):
                if ref is not None:
                    sim = cosine(embeds[i], ref)
                elif len(ids) > 1:  # no references: the speaker's first turn anchors it (and is compared to the second)
                    sim = cosine(embeds[i], embeds[ids[1] if n == 0 else ids[0]])
                else:
                    continue
                if i in idx:
                    turns[i]["speaker_similarity"] = round(sim, 4)
                    if sim < cfg.min_speaker_similarity:
                        found[i] = self._failure(turns[i], i, "speaker_inconsistent", "speaker_similarity", round(sim, 4),
                                                 cfg.min_speaker_similarity)
        users = [i for i in sorted(embeds) if turns[i]["role"] == "user"]
        for a_pos, a in enumerate(users):
            for b in users[a_pos + 1:]:
                sim = cosine(embeds[a], embeds[b])
                culprit = b if b in idx else a if a in idx else None
                if sim < cfg.min_user_similarity and culprit is not None and culprit not in found:
                    found[culprit] = self._failure(turns[culprit], culprit, "speaker_inconsistent", "user_similarity",
                                                   round(sim, 4), cfg.min_user_similarity)
        return found
