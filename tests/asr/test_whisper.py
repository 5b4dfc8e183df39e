"""Batched ASR helper: real Piper audio, real faster-whisper tiny.en; each clip gets its own transcript, in order."""

import numpy as np

from pipeline.asr.whisper import BatchedWhisperASR
from pipeline.audio import resample
from pipeline.config import REPO_ROOT
from pipeline.metrics import error_rate
from pipeline.tts.piper import PiperBackend
from pipeline.voices.pool import load_pool

SENTENCES = [
    "Could you tell me how long it takes to walk to the train station?",
    "I would like to book a table for two people tomorrow evening.",
    "Bring warm layers, a rain jacket and good boots.",
]


def test_batched_transcripts_stay_with_their_clips():
    speaker = load_pool(REPO_ROOT / "speakers/piper_en.jsonl")[0]
    tts = PiperBackend(None, noise_scale=0.0, noise_w_scale=0.0)
    clips = []
    for text in SENTENCES:
        samples, rate = tts.synthesize(text, speaker)
        clips.append(resample(samples, rate, 16000))
    # a turn longer than one 30 s window: the helper falls back to the sequential call for it
    silence = np.zeros(16000 * 14, dtype=np.float32)
    long_clip = np.concatenate([clips[0], silence, silence, clips[2]])
    assert long_clip.size > 30 * 16000
    asr = BatchedWhisperASR(None, "en", batch_size=2)  # 2 < 3 short clips: two batches
    heard = asr.transcribe_many([clips[2], clips[0], np.zeros(0, dtype=np.float32), clips[1], long_clip])
    assert len(heard) == 5 and heard[2] == ""
    for text, got in zip([SENTENCES[2], SENTENCES[0], SENTENCES[1]], [heard[0], heard[1], heard[3]]):
        assert error_rate(text, got, "en") < 0.25, (text, got)
    assert "station" in heard[4].lower() and "boots" in heard[4].lower()
    assert "batched" in asr.model_id and asr.transcribe_many([]) == []
