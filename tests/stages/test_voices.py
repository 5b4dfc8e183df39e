from collections import Counter

import pytest

from pipeline.config import VoicesConfig
from pipeline.ids import split_for
from pipeline.schema import empty_turn, rows_to_table
from pipeline.stages.voices import VoiceStage
from pipeline.voices.pool import Speaker


def pool(n, language="en", prefix="spk", genders=("unknown",)):
    return [Speaker(speaker_id=f"{prefix}{i:03d}", language=language, gender=genders[i % len(genders)], source="test",
                    license="cc0", backend="piper", voice="default") for i in range(n)]


def rows(n, exchanges=3, language="en", splits=None):
    out = []
    for i in range(n):
        conv_id = f"{language}-{i:016x}"
        out.append({"conversation_id": conv_id, "plan_index": i, "language": language, "num_exchanges": exchanges,
                    "split": split_for(conv_id, splits) if splits else "train",
                    "turns": [empty_turn("user" if t % 2 == 0 else "assistant", "hi") for t in range(2 * exchanges)]})
    return out


def voices(assistant="spk000", **kw):
    return VoicesConfig(assistant_speaker=assistant, **kw)


def assign(speakers, cfg, data, languages=("en",), seed=1):
    return VoiceStage(speakers, cfg, seed, list(languages))(rows_to_table(data)).to_pylist()


def test_one_user_voice_per_conversation_and_fixed_assistant():
    out = assign(pool(10), voices(), rows(30))
    for row in out:
        users = {t["speaker_id"] for t in row["turns"] if t["role"] == "user"}
        assistants = {t["speaker_id"] for t in row["turns"] if t["role"] == "assistant"}
        assert users == {row["user_speaker_id"]} and assistants == {"spk000"}
        assert row["user_speaker_id"] != "spk000"


def test_use_is_balanced_and_deterministic_across_batches():
    data = rows(90)
    whole = [r["user_speaker_id"] for r in assign(pool(10), voices(), data)]
    pieces = [r["user_speaker_id"] for part in (data[:7], data[7:50], data[50:]) for r in assign(pool(10), voices(), part)]
    assert whole == pieces  # no state between batches: any worker assigns the same voice
    counts = Counter(whole)
    assert len(counts) == 9 and max(counts.values()) == min(counts.values()) == 10


def test_thousands_of_voices_stay_balanced_with_held_out_test_speakers():
    splits = {"train": 0.9, "test": 0.1}
    cfg = voices(assistant="spk0000", held_out_test_speakers=0.1)
    speakers = [Speaker(speaker_id=f"spk{i:04d}", language="en", source="t", license="cc0", backend="vits",
                        speaker_index=i) for i in range(2001)]
    out = assign(speakers, cfg, rows(20_000, exchanges=1, splits=splits))
    train_voices = Counter(r["user_speaker_id"] for r in out if r["split"] == "train")
    test_voices = Counter(r["user_speaker_id"] for r in out if r["split"] == "test")
    assert not set(train_voices) & set(test_voices)  # no test voice was heard in training
    assert len(test_voices) == 200 and len(train_voices) == 1800
    mean = sum(train_voices.values()) / len(train_voices)
    assert max(train_voices.values()) <= 1.5 * mean, (max(train_voices.values()), mean)


def test_assistant_set_and_per_language_personas():
    speakers = pool(6) + pool(4, language="zh", prefix="zh")
    cfg = voices(assistant={"en": ["spk000", "spk001"], "zh": "zh000"})
    data = rows(40) + rows(20, language="zh")
    out = assign(speakers, cfg, data, languages=("en", "zh"))
    en_asst = Counter(r["assistant_speaker_id"] for r in out if r["language"] == "en")
    assert set(en_asst) == {"spk000", "spk001"} and min(en_asst.values()) >= 10  # both personas used
    assert {r["assistant_speaker_id"] for r in out if r["language"] == "zh"} == {"zh000"}
    assert all(r["user_speaker_id"] not in {"spk000", "spk001", "zh000"} for r in out)
    assert all(r["user_speaker_id"].startswith("zh") == (r["language"] == "zh") for r in out)
    again = assign(speakers, cfg, data, languages=("en", "zh"))
    assert [r["assistant_speaker_id"] for r in again] == [r["assistant_speaker_id"] for r in out]


def test_gender_filter_applies_to_user_voices():
    speakers = pool(10, genders=("female", "male"))
    out = assign(speakers, voices(user_genders=["female"]), rows(20))
    genders = {s.speaker_id: s.gender for s in speakers}
    assert {genders[r["user_speaker_id"]] for r in out} == {"female"}


@pytest.mark.parametrize("cfg, languages, message", [
    (voices(assistant="nobody"), ("en",), "'nobody' is not in"),
    (voices(assistant="spk000"), ("en", "zh"), "speaks 'en', not 'zh'"),
    (voices(assistant={"en": "spk000"}), ("en", "zh"), "no voice for language(s) ['zh']"),
    (voices(user_genders=["male"]), ("en",), "no speaker for language 'en' with gender in ['male']"),
])
def test_bad_voice_settings_are_clear_errors(cfg, languages, message):
    with pytest.raises(ValueError) as err:
        VoiceStage(pool(4) + pool(2, language="zh", prefix="zh"), cfg, 0, list(languages))
    assert message in str(err.value)


def test_single_voice_pool_voices_both_sides():
    out = assign(pool(1), voices(), rows(2))
    assert {r["user_speaker_id"] for r in out} == {"spk000"}


def test_language_without_speakers_is_rejected():
    data = rows(1)
    data[0]["language"] = "zh"
    out = assign(pool(3), voices(), data)
    assert out[0]["reject_reason"] == "voices_no_speaker_for_language"


def test_usage_balance_summarises_the_histogram():
    from pipeline.io.stats import usage_balance

    out = assign(pool(5), voices(), rows(10))  # 4 user voices for 10 conversations: 3, 3, 2, 2
    balance = usage_balance(Counter(r["user_speaker_id"] for r in out))
    assert balance["histogram"] == {"2": 2, "3": 2} and balance["speakers"] == 4
    assert balance["max_over_mean"] == round(3 / 2.5, 3)
