"""Real Piper (en_US joe) and real faster-whisper tiny.en on a few short turns."""

import pytest

from pipeline.audio import decode_audio
from pipeline.config import REPO_ROOT, VerifyConfig
from pipeline.schema import empty_turn, rows_to_table
from pipeline.stages.tts import TTSStage
from pipeline.stages.verify import VerifyStage
from pipeline.voices.pool import load_pool

SPEAKER = "piper-en_US-joe-medium"


def conversation(cid, pairs):
    turns = []
    for i, (display, spoken) in enumerate(pairs):
        t = empty_turn("user" if i % 2 == 0 else "assistant", display)
        t.update(spoken_text=spoken, speaker_id=SPEAKER)
        turns.append(t)
    return {"conversation_id": cid, "language": "en", "num_exchanges": len(pairs) // 2, "turns": turns}


@pytest.fixture(scope="module")
def spoken():
    pool = load_pool(REPO_ROOT / "speakers/piper_en.jsonl")
    good = conversation("en-good", [("Where is the station?",) * 2, ("It is two streets away, next to the bank.",) * 2])
    return TTSStage("piper", None, pool)(rows_to_table([good])).to_pylist()[0]


def test_tts_writes_flac_at_the_contract_rates(spoken):
    user, assistant = spoken["turns"]
    u, u_rate = decode_audio(user["audio_flac"])
    a, a_rate = decode_audio(assistant["audio_flac"])
    assert (u_rate, user["sample_rate"]) == (16000, 16000)
    assert a_rate == assistant["sample_rate"] == 22050
    assert user["duration_s"] == pytest.approx(len(u) / 16000) and 0.5 < user["duration_s"] < 5
    assert assistant["duration_s"] > user["duration_s"]
    assert u.std() > 0.01  # not silence
    assert spoken["tts_model"].startswith("piper-tts ")


@pytest.mark.parametrize("asr_batch_size", [1, 4])  # per-turn calls, and a conversation's turns decoded together
def test_verify_keeps_good_audio_and_rejects_audio_of_the_wrong_text(spoken, asr_batch_size):
    wrong = {**spoken, "conversation_id": "en-wrong", "turns": [dict(t) for t in spoken["turns"]]}
    wrong["turns"][1]["spoken_text"] = "My favourite colour is purple and I like to swim in the lake."
    cfg = VerifyConfig(max_wer=0.2, asr_batch_size=asr_batch_size)
    out = VerifyStage(cfg, None)(rows_to_table([spoken, wrong])).to_pylist()
    good, bad = out
    assert ("batched" in good["asr_model"]) == (asr_batch_size > 1)
    assert "bank" in good["turns"][1]["asr_text"].lower()  # each turn keeps its own transcript
    assert good["reject_reason"] is None
    assert "station" in good["turns"][0]["asr_text"].lower()
    assert all(t["error_rate"] <= 0.2 for t in good["turns"])
    assert (bad["reject_stage"], bad["reject_reason"]) == ("verify", "asr_error_rate_above_threshold")
    assert "turn 1 (assistant)" in bad["reject_details"]
    assert bad["turns"][1]["audio_flac"] is None  # rejected rows drop their audio


def test_verify_rejects_too_short_audio(spoken):
    short = {**spoken, "conversation_id": "en-short", "turns": [dict(t) for t in spoken["turns"]]}
    short["turns"][0]["duration_s"] = 0.05
    out = VerifyStage(VerifyConfig(), None)(rows_to_table([short])).to_pylist()[0]
    assert out["reject_reason"] == "audio_too_short"


def test_piper_without_sampling_noise_is_reproducible():
    from pipeline.tts.piper import PiperBackend

    pool = load_pool(REPO_ROOT / "speakers/piper_en.jsonl")
    backend = PiperBackend(None, noise_scale=0.0, noise_w_scale=0.0)
    a, _ = backend.synthesize("The same words twice.", pool[0])
    b, _ = backend.synthesize("The same words twice.", pool[0])
    assert a.size > 0 and (a == b).all()


def test_verify_gpu_share_reaches_the_verify_actors(tmp_path, stage_plan):
    """verify.num_gpus goes to map_batches as num_gpus (0.25 = 4 ASR actors per GPU). A recording stand-in for
    the Ray dataset replaces execution here (no GPU on the test machine; the plan is what is checked)."""
    from conftest import record_plan

    from pipeline.config import load_config

    cfg = load_config(REPO_ROOT / "configs/smoke.yaml", ["verify.num_gpus=0.25", "verify.asr_batch_size=16",
                                                         "verify.max_actors=4"], tmp_path)  # auto would ask Ray
    record_plan(cfg, "tts,verify,shard", pool=load_pool(REPO_ROOT / "speakers/piper_en.jsonl"))
    assert ("VerifyStage", 0.25) in stage_plan and ("TTSStage", None) in stage_plan
