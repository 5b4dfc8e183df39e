from collections import Counter

from pipeline.records import empty_turn, rows_to_table
from pipeline.speakers import Speaker
from pipeline.stages.voices import VoiceStage


def pool(n):
    return [Speaker(speaker_id=f"spk{i:03d}", language="en", source="test", license="cc0", backend="piper",
                    voice="default") for i in range(n)]


def rows(n, exchanges=3):
    return [{"conversation_id": f"en-{i:016x}", "plan_index": i, "language": "en", "num_exchanges": exchanges,
             "turns": [empty_turn("user" if t % 2 == 0 else "assistant", "hi") for t in range(2 * exchanges)]}
            for i in range(n)]


def test_one_user_voice_per_conversation_and_fixed_assistant():
    out = VoiceStage(pool(10), "spk000", seed=1)(rows_to_table(rows(30))).to_pylist()
    for row in out:
        users = {t["speaker_id"] for t in row["turns"] if t["role"] == "user"}
        assistants = {t["speaker_id"] for t in row["turns"] if t["role"] == "assistant"}
        assert users == {row["user_speaker_id"]} and assistants == {"spk000"}
        assert row["user_speaker_id"] != "spk000"


def test_use_is_balanced_and_deterministic_across_batches():
    stage = VoiceStage(pool(10), "spk000", seed=1)
    data = rows(90)
    whole = [r["user_speaker_id"] for r in stage(rows_to_table(data)).to_pylist()]
    pieces = [r["user_speaker_id"] for part in (data[:7], data[7:50], data[50:])
              for r in VoiceStage(pool(10), "spk000", seed=1)(rows_to_table(part)).to_pylist()]
    assert whole == pieces  # no state between batches: any worker assigns the same voice
    counts = Counter(whole)
    assert len(counts) == 9 and max(counts.values()) == min(counts.values()) == 10


def test_single_voice_pool_voices_both_sides():
    out = VoiceStage(pool(1), "spk000", seed=0)(rows_to_table(rows(2))).to_pylist()
    assert {r["user_speaker_id"] for r in out} == {"spk000"}


def test_language_without_speakers_is_rejected():
    data = rows(1)
    data[0]["language"] = "zh"
    out = VoiceStage(pool(3), "spk000", seed=0)(rows_to_table(data)).to_pylist()
    assert out[0]["reject_reason"] == "voices_no_speaker_for_language"
