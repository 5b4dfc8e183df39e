"""Real Piper (en_US joe) and real faster-whisper tiny.en on a few short turns."""

import pytest
from rows import spoken_conversation as conversation

from pipeline.audio import decode_audio
from pipeline.config import REPO_ROOT, VerifyConfig
from pipeline.schema import rows_to_table
from pipeline.stages.tts import TTSStage
from pipeline.stages.verify import VerifyStage
from pipeline.voices.pool import load_pool


@pytest.fixture(scope="module")
def spoken():
    pool = load_pool(REPO_ROOT / "speakers/piper_en.jsonl")
    good = conversation("en-good", [("Where is the station?",) * 2, ("It is two streets away, next to the bank.",) * 2])
    return TTSStage("piper", None, pool)(rows_to_table([good])).to_pylist()[0]


@pytest.mark.integration  # loads a model (Piper, Whisper, DNSMOS, XTTS or Resemblyzer)
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


@pytest.mark.integration  # loads a model (Piper, Whisper, DNSMOS or Resemblyzer)
@pytest.mark.parametrize("asr_batch_size", [1, 4])  # per-turn calls, and a conversation's turns decoded together
def test_verify_keeps_good_audio_and_rejects_audio_of_the_wrong_text(spoken, asr_batch_size):
    wrong = {**spoken, "conversation_id": "en-wrong", "turns": [dict(t) for t in spoken["turns"]]}
    wrong["turns"][1]["spoken_text"] = "My favourite colour is purple and I like to swim in the lake."
    cfg = VerifyConfig(max_wer=0.2, asr_batch_size=asr_batch_size, resynthesis_rounds=0)  # 0: reject at once
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


@pytest.mark.integration  # loads a model (Piper, Whisper, DNSMOS or Resemblyzer)
def test_verify_rejects_too_short_audio(spoken):
    short = {**spoken, "conversation_id": "en-short", "turns": [dict(t) for t in spoken["turns"]]}
    short["turns"][0]["duration_s"] = 0.05
    out = VerifyStage(VerifyConfig(resynthesis_rounds=0), None)(rows_to_table([short])).to_pylist()[0]
    assert out["reject_reason"] == "audio_too_short"


@pytest.mark.integration  # loads a model (Piper, Whisper, DNSMOS or Resemblyzer)
def test_verify_sends_a_failing_turn_back_to_tts_while_rounds_are_left(spoken):
    from pipeline.schema import awaits_synthesis, has_pending_turns

    wrong = {**spoken, "conversation_id": "en-wrong", "turns": [dict(t) for t in spoken["turns"]]}
    wrong["turns"][1]["spoken_text"] = "My favourite colour is purple and I like to swim in the lake."
    out = VerifyStage(VerifyConfig(max_wer=0.2, resynthesis_rounds=1), None)(rows_to_table([wrong])).to_pylist()[0]
    assert out["reject_reason"] is None and has_pending_turns(out)
    user, assistant = out["turns"]
    assert user["verified"] and user["audio_flac"] and not awaits_synthesis(user)  # the passing turn keeps its audio
    assert awaits_synthesis(assistant) and assistant["resyntheses"] == 1 and assistant["error_rate"] is None
    (miss,) = assistant["failed_attempts"]
    assert (miss["reason"], miss["metric"], miss["turn"]) == ("asr_error_rate_above_threshold", "WER", 1)
    assert miss["value"] > 0.2 and miss["limit"] == 0.2


@pytest.mark.integration  # loads a model (Piper, Whisper, DNSMOS or Resemblyzer)
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

    pool = load_pool(REPO_ROOT / "speakers/piper_en.jsonl")
    gpu = ["verify.num_gpus=0.25", "verify.asr_batch_size=16", "verify.max_actors=4"]  # auto would ask Ray
    record_plan(load_config(REPO_ROOT / "configs/smoke.yaml", [*gpu, "verify.resynthesis_rounds=0"], tmp_path),
                "tts,verify,shard", pool=pool)
    assert ("VerifyStage", 0.25) in stage_plan and ("TTSStage", None) in stage_plan
    # re-synthesis, one_actor: TTS and ASR share the loop actor, which holds the larger share
    stage_plan.clear()
    record_plan(load_config(REPO_ROOT / "configs/smoke.yaml", gpu, tmp_path), "tts,verify,shard", pool=pool)
    assert ("Loop_TTSStage_VerifyStage", 0.25) in stage_plan and not any(n == "VerifyStage" for n, _ in stage_plan)
    # stage_pairs: 1 + 2 rounds of tts and verify operators, every verify one with its GPU share
    stage_plan.clear()
    record_plan(load_config(REPO_ROOT / "configs/smoke.yaml", [*gpu, "verify.resynthesis_layout=stage_pairs"], tmp_path),
                "tts,verify,shard", pool=pool)
    assert stage_plan.count(("VerifyStage", 0.25)) == 3 and stage_plan.count(("TTSStage", None)) == 3
