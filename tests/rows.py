"""Conversation rows for tests of several folders (tests/stages, tests/io, tests/): a module of its own, so that a
test file imports it the same whether pytest collected the folder that uses it first or not."""

import numpy as np

from pipeline.audio import encode_flac
from pipeline.schema import empty_turn


def tone(freq, seconds, rate):
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def shard_conversation(idx, exchanges, rejected=False):
    """A finished conversation (audio, ASR text) as the shard stage receives it."""
    turns = []
    for t in range(2 * exchanges):
        role, rate = ("user", 16000) if t % 2 == 0 else ("assistant", 22050)
        audio = tone(200 + 50 * t + idx, 0.5 + 0.1 * t, rate)
        turns.append({"role": role, "display_text": f"text {idx}.{t}", "spoken_text": f"text {idx} {t}",
                      "speaker_id": f"spk{idx}" if role == "user" else "asst", "audio_flac": encode_flac(audio, rate),
                      "sample_rate": rate, "duration_s": len(audio) / rate, "asr_text": f"text {idx} {t}",
                      "error_rate": 0.0})
    row = {"conversation_id": f"en-{idx:016x}", "plan_index": idx, "dataset": "t", "language": "en",
           "split": "train", "topic": "topic", "scenario": "s", "persona": "p", "num_exchanges": exchanges,
           "text_digest": "d", "llm_model": "llm", "tts_model": "tts", "asr_model": "asr",
           "user_speaker_id": f"spk{idx}", "assistant_speaker_id": "asst", "turns": turns}
    if rejected:
        row.update(reject_stage="verify", reject_reason="asr_error_rate_above_threshold", reject_details="turn 1")
    return row


SPEAKER = "piper-en_US-joe-medium"


def spoken_conversation(cid, pairs):
    """A conversation with spoken text and a speaker, as the TTS stage receives it."""
    turns = []
    for i, (display, spoken) in enumerate(pairs):
        t = empty_turn("user" if i % 2 == 0 else "assistant", display)
        t.update(spoken_text=spoken, speaker_id=SPEAKER)
        turns.append(t)
    return {"conversation_id": cid, "language": "en", "num_exchanges": len(pairs) // 2, "turns": turns}
