"""Augment: make user audio sound like the real world (rooms, noise, phone lines, codecs, levels).

Runs after verify, so ASR and the turn's DNSMOS scores describe the clean audio; the augmented audio replaces
the user turn's `audio_flac` (what the sample's user.flac holds), the clean audio moves to `clean_audio_flac`
(written as user_clean.flac with augment.keep_clean, and what the duplex rendering uses), and the recipe with
the augmented audio's DNSMOS goes into `augmentation`. The assistant stays clean. Each user turn's recipe is
drawn from (augment.seed, sample key), so a rerun or a retried batch writes the same bytes.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pipeline.audio import decode_audio, encode_flac, resample
from pipeline.config import AugmentConfig
from pipeline.ids import sample_key
from pipeline.render.augment import RATE, AugmentError, BabbleClip, UserAugmenter, ffmpeg_path, noise_files
from pipeline.render.seeding import derive_seed
from pipeline.stages.base import Resources, RowStage, RunContext
from pipeline.threads import limit_threads, threads_for
from pipeline.voices.pool import Speaker

log = logging.getLogger(__name__)

# what the babble talkers say (Piper pools); any speech will do, it is heard as a crowd
BABBLE_TEXTS = {
    "en": ["I told him we would meet at the station around six, but the train was late again.",
           "Could you pass me the menu? I think I will have the soup and a small salad.",
           "The meeting went on for hours and nobody could agree on the budget for next year.",
           "We should book the tickets soon, prices always go up before the holidays."],
    "zh": ["我们明天早上八点在车站见面吧，别迟到了。", "这家饭店的菜很好吃，下次我们再来。",
           "会议开了很久，大家对明年的预算还是没有达成一致。", "周末天气不错，我们去公园散散步吧。"],
}


class AugmentStage(RowStage):
    name = "augment"

    @classmethod
    def check(cls, ctx: RunContext) -> list[str]:
        a = ctx.cfg.augment
        problems = []
        try:
            if a.telephone_prob > 0 or a.codec_prob > 0:
                ffmpeg_path()
            if a.noise_dir is not None and a.noise_kinds.get("clips", 0) > 0:
                noise_files(ctx.cfg.resolve_path(a.noise_dir))
        except AugmentError as exc:
            problems.append(str(exc))
        return problems

    @classmethod
    def build(cls, ctx: RunContext) -> AugmentStage:
        a = ctx.cfg.augment
        noise_dir = ctx.cfg.resolve_path(a.noise_dir) if a.noise_dir is not None else None
        stage = cls(a, ctx.pool, ctx.languages, noise_dir=noise_dir, tts_backend=ctx.cfg.tts.backend,
                    piper_voice=ctx.piper_voice, dnsmos=ctx.cfg.verify.enabled and ctx.cfg.verify.dnsmos,
                    pool_file=ctx.cfg.resolve_path(ctx.cfg.voices.pool), threads=threads_for(a.num_cpus, None))
        stage.resources = Resources(num_cpus=a.num_cpus, threads=stage.threads, actors=a.max_actors)
        stage.batch_size = a.batch_size
        return stage

    def __init__(self, cfg: AugmentConfig, pool: list[Speaker], languages: list[str], noise_dir: Path | None = None,
                 tts_backend: str = "piper", piper_voice: Path | None = None, dnsmos: bool = True,
                 pool_file: Path | None = None, threads: int | None = None):
        super().__init__()
        self.cfg, self.pool, self.languages, self.noise_dir = cfg, pool, languages, noise_dir
        self.tts_backend, self.piper_voice, self.pool_file = tts_backend, piper_voice, pool_file
        self.want_dnsmos, self.threads = dnsmos, threads
        self.augmenter: UserAugmenter | None = None
        self.dnsmos = None

    def setup(self) -> None:
        limit_threads(self.threads)
        babble = self.babble_bank() if self.cfg.noise_kinds.get("babble", 0) > 0 and self.cfg.noise_prob > 0 else []
        self.augmenter = UserAugmenter(self.cfg, babble=babble, noise_dir=self.noise_dir)
        if self.want_dnsmos:
            from pipeline.quality.dnsmos import DnsmosScorer

            self.dnsmos = DnsmosScorer(threads=self.threads)

    def babble_bank(self) -> list[BabbleClip]:
        """Speech of up to `babble_voices` pool voices: their reference clips, or (a Piper pool) a few sentences
        spoken once here. Empty when neither is to be had: babble is then never drawn."""
        voices = [s for s in self.pool if s.language in self.languages][: self.cfg.babble_voices]
        bank = []
        for speaker in voices:
            for ref in speaker.references[:2]:
                path = Path(ref.path)
                if not path.is_absolute() and self.pool_file is not None:
                    path = self.pool_file.parent / path
                try:
                    samples, rate = decode_audio(path.read_bytes())
                    bank.append(BabbleClip(speaker.speaker_id, resample(samples, rate, RATE)))
                except (OSError, RuntimeError) as exc:
                    log.warning("augment: reference clip %s unreadable for babble: %s", path, exc)
        if bank or self.tts_backend != "piper":
            return bank
        from pipeline.tts.piper import PiperBackend

        tts = PiperBackend(self.piper_voice, threads=self.threads)
        for speaker in voices:
            for text in BABBLE_TEXTS.get(speaker.language, BABBLE_TEXTS["en"]):
                samples, rate = tts.synthesize(text, speaker, language=speaker.language)
                bank.append(BabbleClip(speaker.speaker_id, resample(samples, rate, RATE)))
        return bank

    def process_row(self, row: dict[str, Any]) -> None:
        assert self.augmenter is not None
        for i, turn in enumerate(row["turns"]):
            if turn["role"] != "user" or not turn["audio_flac"]:
                continue
            clean, rate = decode_audio(turn["audio_flac"])
            seed = derive_seed(self.cfg.seed, sample_key(row["conversation_id"], i // 2))
            augmented, recipe = self.augmenter.augment(clean, rate, seed, speaker_id=turn["speaker_id"] or "")
            if recipe["kinds"]:
                if self.dnsmos is not None:  # verify scored the clean audio; this is the augmented one's score
                    recipe["dnsmos"] = self.dnsmos.score(augmented, RATE).rounded()
                turn["clean_audio_flac"] = turn["audio_flac"]
                turn["audio_flac"] = encode_flac(augmented, RATE)
                turn["sample_rate"], turn["duration_s"] = RATE, augmented.size / RATE
            turn["augmentation"] = json.dumps(recipe, sort_keys=True)
