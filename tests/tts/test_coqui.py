"""Coqui TTS backends with tiny randomly initialised Coqui models built inside the tests (no downloads).

Real parts: coqui-tts's Vits and Xtts classes (tokenizers, GPT, HiFi-GAN decoders, speaker encoder,
get_conditioning_latents, inference), the checkpoint loaders, a real local Ray, real tars read back
with webdataset. The models are random, so their audio is noise:
- the 2,000-speaker run sets `verify.enabled: false` (Whisper on noise would reject everything, and
  Whisper on 4,000 turns does not fit a 2-core test); that run checks that the card and stats say so;
- what stays untested here is the *quality* of XTTS-v2's cloning and mixing (that needs the real
  weights) and the CUDA path (no GPU on the test machine): the code paths are the real ones.
The turn-failure tests wrap the real tiny VITS backend in a fault hook (`Flaky`) that spoils chosen
attempts; that hook is the only stand-in.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from tiny_coqui import build_tiny_vits, build_tiny_xtts, write_clip

from pipeline.config import REPO_ROOT, ConfigError, load_config
from pipeline.schema import empty_turn, rows_to_table
from pipeline.voices.pool import Speaker, load_pool

torch = pytest.importorskip("torch")
pytest.importorskip("TTS")

N_SPEAKERS = 2000
SENTENCES = ["Where is the nearest train station", "Could you tell me the time please",
             "I would like a cup of tea", "The weather is lovely today", "How far is it to the museum",
             "Please close the window when you leave", "We should plan the trip next week",
             "My sister likes to read in the garden"]


@pytest.fixture(scope="module")
def tiny_vits(tmp_path_factory) -> Path:
    return build_tiny_vits(tmp_path_factory.mktemp("models") / "vits", num_speakers=N_SPEAKERS)


@pytest.fixture(scope="module")
def tiny_xtts(tmp_path_factory) -> Path:
    return build_tiny_xtts(tmp_path_factory.mktemp("models") / "xtts")


def write_pool(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    return path


def vits_speaker(speaker_id: str, **extra) -> dict:
    return {"speaker_id": speaker_id, "language": "en", "source": "tiny random VITS", "license": "test-only",
            "backend": "vits", **extra}


def conversation(cid: str, speakers: list[str], texts: list[str], language: str = "en", seed: int = 1) -> dict:
    turns = []
    for i, (spk, text) in enumerate(zip(speakers, texts)):
        t = empty_turn("user" if i % 2 == 0 else "assistant", text)
        t.update(spoken_text=text, speaker_id=spk)
        turns.append(t)
    return {"conversation_id": cid, "language": language, "num_exchanges": len(turns) // 2, "seed": seed,
            "turns": turns}


# --- config and preflight: no weights, no work ------------------------------------------------------------


def test_missing_weights_stop_in_preflight_with_what_to_download(tmp_path):
    from pipeline.run.preflight import preflight

    for backend, words in (("xtts", ["XTTS-v2 weights not found", "coqui/XTTS-v2", "speakers_xtts.pth", "tts.model"]),
                           ("vits", ["Coqui VITS weights not found", "tts.model"])):
        cfg = load_config(REPO_ROOT / "configs/smoke.yaml", [f"tts.backend={backend}", f"tts.model={tmp_path / 'none'}"],
                          tmp_path / "out")
        with pytest.raises(ConfigError) as err:
            preflight(cfg)
        assert all(w in str(err.value) for w in words), str(err.value)
        assert f"is a piper voice but tts.backend is {backend}" in str(err.value)  # the Piper pool cannot be used
    assert not (tmp_path / "out").exists()


def test_a_coqui_model_name_resolves_in_the_local_cache_only(tmp_path, monkeypatch):
    from pipeline.tts.coqui import resolve_model

    monkeypatch.setenv("TTS_HOME", str(tmp_path / "home"))
    cached = tmp_path / "home/tts/tts_models--en--vctk--vits"
    with pytest.raises(ConfigError, match=f"Coqui VITS weights not found at {cached}"):
        resolve_model("vits", "tts_models/en/vctk/vits")  # not in the cache: nothing is downloaded
    cached.mkdir(parents=True)
    (cached / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="incomplete"):
        resolve_model("vits", "tts_models/en/vctk/vits")
    (cached / "model_file.pth").write_bytes(b"")
    assert resolve_model("vits", "tts_models/en/vctk/vits") == cached
    xtts = tmp_path / "home/tts/tts_models--multilingual--multi-dataset--xtts_v2"
    xtts.mkdir(parents=True)
    (xtts / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"missing model\.pth, vocab\.json.*coqui/XTTS-v2"):
        resolve_model("xtts", None)  # null tts.model: the cached XTTS-v2


@pytest.mark.parametrize("overrides, message", [
    (["tts.num_gpus=0.25"], "needs a Coqui backend"),
    (["tts.backend=vits"], "needs tts.model"),
    (["tts.backend=xtts", "tts.device=cuda"], "needs tts.num_gpus > 0"),
    (["tts.backend=xtts", "tts.device=cpu", "tts.num_gpus=0.5"], "reserve GPUs that are never used"),
    (["tts.backend=xtts", "tts.num_gpus=2"], "less than or equal to 1"),
])
def test_bad_tts_device_settings_are_config_errors(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(REPO_ROOT / "configs/smoke.yaml", overrides)
    assert message in str(err.value) and "tts" in str(err.value)


@pytest.mark.integration  # builds a tiny Coqui model (torch)
def test_gpu_share_reaches_the_tts_actors(tmp_path, tiny_vits, stage_plan):
    """tts.num_gpus goes to map_batches as num_gpus (0.25 = 4 actors per GPU). A recording stand-in for
    the Ray dataset replaces execution here (no GPU, and the plan is what is checked)."""
    from conftest import record_plan

    cfg = load_config(REPO_ROOT / "configs/smoke.yaml", ["tts.backend=vits", f"tts.model={tiny_vits}",
                                                         "tts.num_gpus=0.25", "verify.enabled=false"], tmp_path)
    record_plan(cfg, "tts,verify,shard", pool=load_pool(REPO_ROOT / "speakers/piper_en.jsonl"), tts_model=tiny_vits)
    assert ("TTSStage", 0.25) in stage_plan
    assert "VerifyStage" not in [name for name, _ in stage_plan]  # verify.enabled=false
    assert stage_plan[-1][0] == "DuplicateIdStage+ShardStage"  # the in-run de-dup runs in the shard writer's actor


# --- VITS: 2,000 speakers through the real pipeline on a real Ray -------------------------------------


@pytest.mark.integration
def test_two_thousand_vits_speakers_through_the_pipeline(tmp_path, tiny_vits, ray_session):
    """A 2,000-speaker pool (speaker_index 0..1999) and 2,000 cached one-exchange conversations: the voices
    stage's permutation gives every speaker exactly one conversation, the real Coqui VITS speaks each turn
    in a Ray actor, and the shards name 2,000 distinct user speakers, once each."""
    import webdataset as wds

    from pipeline.io.layout import Layout
    from pipeline.run.runner import run
    from pipeline.run.selection import StageSelection
    from pipeline.schema import TEXT_CACHE_SCHEMA
    from pipeline.schema import rows_to_table as to_table

    pool = write_pool(tmp_path / "speakers/vits.jsonl",
                      [vits_speaker("vits-assistant", speaker_name="spk0")]
                      + [vits_speaker(f"vits-{i:04d}", speaker_index=i) for i in range(N_SPEAKERS)])
    out = tmp_path / "out"
    rows = [{"conversation_id": f"en-{i:016x}", "plan_index": i, "dataset": "coqui-test", "language": "en",
             "domain": "daily", "topic": "travel", "scenario": "asking", "persona": "tourist", "num_exchanges": 1,
             "seed": i, "text_digest": "test", "llm_model": "none", "llm_requests": 0, "prompt_tokens": 0,
             "completion_tokens": 0,
             "turns": [{"role": "user", "display_text": SENTENCES[i % 8] + "?"},
                       {"role": "assistant", "display_text": SENTENCES[(i + 3) % 8] + "."}]}
            for i in range(N_SPEAKERS)]
    (out / "text").mkdir(parents=True)
    pq.write_table(to_table(rows, TEXT_CACHE_SCHEMA), out / "text/part-rtest-000000000000.parquet")
    cfg = load_config(REPO_ROOT / "configs/smoke.yaml",
                      ["dataset=coqui-test", "tts.backend=vits", f"tts.model={tiny_vits}", "tts.device=cpu",
                       f"voices.pool={pool}", "voices.assistant_speaker=vits-assistant", "verify.enabled=false", "dedup.enabled=false",
                       "tts.batch_size=100", "tts.max_actors=2", "shard.conversations_per_shard=500",
                       "license_tags=[tts:tiny-random-vits:test-only]"], out)
    # the hand-written text cache makes the folder non-empty and unmarked: the run adopts it
    stats = run(cfg, StageSelection.parse("tts,verify,shard"), adopt_output=True)

    last = stats["last_run"]
    assert last["kept"] == N_SPEAKERS and last["rejected"] == 0, last["rejected_by_reason"]
    assert last["verified"] is False
    users: Counter = Counter()
    assistants: Counter = Counter()
    for tar in Layout(out).shards():
        for sample in wds.WebDataset(str(tar), shardshuffle=False):
            meta = json.loads(sample["json"])
            users[meta["user"]["speaker_id"]] += 1
            assistants[meta["assistant"]["speaker_id"]] += 1
            assert meta["models"]["tts"].startswith("coqui-tts 0.28.0 vits") and meta["user"]["error_rate"] == -1
            assert sample["user.flac"][:4] == b"fLaC" and sample["assistant.flac"][:4] == b"fLaC"
    assert len(users) == N_SPEAKERS and set(users.values()) == {1}
    assert set(users) == {f"vits-{i:04d}" for i in range(N_SPEAKERS)}
    assert assistants == Counter({"vits-assistant": N_SPEAKERS})
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "NOT transcribed back" in card


@pytest.mark.integration  # builds a tiny Coqui model (torch)
def test_vits_speakers_by_index_and_name_differ_and_bad_rows_are_reported(tiny_vits):
    from pipeline.tts.vits import VitsBackend

    backend = VitsBackend(str(tiny_vits), device="cpu")
    assert backend.num_speakers == N_SPEAKERS and backend.sample_rate == 22050
    first = Speaker.model_validate(vits_speaker("a", speaker_index=0))
    by_name = Speaker.model_validate(vits_speaker("b", speaker_name="spk0"))
    last = Speaker.model_validate(vits_speaker("c", speaker_index=N_SPEAKERS - 1))
    a, rate = backend.synthesize("hello there", first, seed=3)
    b, _ = backend.synthesize("hello there", by_name, seed=3)
    c, _ = backend.synthesize("hello there", last, seed=3)
    assert rate == 22050 and a.dtype == np.float32 and np.isfinite(a).all()
    assert np.array_equal(a, b)  # speaker_name spk0 is row 0; same seed, same audio
    assert not np.array_equal(a, c)  # another row of the speaker table
    with pytest.raises(ValueError, match="outside the model's 2000 speakers"):
        backend.synthesize("hi", Speaker.model_validate(vits_speaker("d", speaker_index=N_SPEAKERS)))
    with pytest.raises(ValueError, match="not in the model's"):
        backend.synthesize("hi", Speaker.model_validate(vits_speaker("e", speaker_name="nobody")))


# --- turn failures: retried with new seeds, then rejected with the reason -----------------------------------


class Flaky:
    """Fault hook around a real backend: spoils the attempts listed in `bad` (1-based, counted per call)."""

    def __init__(self, real, bad: set[int], mode: str):
        self.real, self.bad, self.mode, self.calls, self.seeds = real, bad, mode, 0, []
        self.model_id = real.model_id

    def synthesize(self, text, speaker, language="en", seed=0):
        self.calls += 1
        self.seeds.append(seed)
        samples, rate = self.real.synthesize(text, speaker, language=language, seed=seed)
        if self.calls in self.bad:
            if self.mode == "raise":
                raise RuntimeError("CUDA error: device-side assert (injected)")
            if self.mode == "nan":
                samples = samples.copy()
                samples[::7] = np.nan
            elif self.mode == "runaway":
                samples = np.zeros(rate * 40, dtype=np.float32)
            elif self.mode == "empty":
                samples = samples[:0]
        return samples, rate


def faulty_stage(tiny_vits, tmp_path, bad, mode, max_attempts=3):
    from pipeline.stages.tts import TTSStage

    pool = load_pool(write_pool(tmp_path / "pool.jsonl", [vits_speaker("u", speaker_index=5),
                                                           vits_speaker("a", speaker_index=6)]))
    stage = TTSStage("vits", None, pool, backend_options={"model": str(tiny_vits), "device": "cpu"},
                     max_attempts=max_attempts)
    stage.setup()
    stage.backend = Flaky(stage.backend, bad, mode)
    stage._ready = True
    return stage


@pytest.mark.integration  # builds a tiny Coqui model (torch)
@pytest.mark.parametrize("mode", ["raise", "nan", "runaway", "empty"])
def test_a_failed_turn_is_resynthesised_with_a_new_seed_and_kept(tiny_vits, tmp_path, mode):
    stage = faulty_stage(tiny_vits, tmp_path, bad={1}, mode=mode)
    row = stage(rows_to_table([conversation("en-00000000000000a1", ["u", "a"], ["good morning", "hello to you"])]))
    row = row.to_pylist()[0]
    assert row["reject_reason"] is None
    assert [t["tts_attempts"] for t in row["turns"]] == [2, 1]
    assert stage.backend.seeds[0] != stage.backend.seeds[1]  # the retry used a new seed
    assert all(t["audio_flac"][:4] == b"fLaC" for t in row["turns"])


@pytest.mark.integration  # builds a tiny Coqui model (torch)
def test_a_turn_failing_every_attempt_rejects_the_conversation_with_each_reason(tiny_vits, tmp_path):
    stage = faulty_stage(tiny_vits, tmp_path, bad={2, 3, 4}, mode="nan")  # turn 0 fine; turn 1 always NaN
    row = stage(rows_to_table([conversation("en-00000000000000a2", ["u", "a"], ["good morning", "hello to you"])]))
    row = row.to_pylist()[0]
    assert (row["reject_stage"], row["reject_reason"]) == ("tts", "tts_failed")
    details = row["reject_details"]
    assert details.startswith("turn 1 (a): ") and details.count("non_finite_audio") == 3
    assert all(f"attempt {n} (seed " in details for n in (1, 2, 3))
    assert stage.backend.calls == 4 and all(t["audio_flac"] is None for t in row["turns"])
    # the job goes on: the next conversation in a later batch is spoken normally
    stage.backend.bad = set()
    ok = stage(rows_to_table([conversation("en-00000000000000a3", ["u", "a"], ["one more", "sure thing"])]))
    assert ok.to_pylist()[0]["reject_reason"] is None


@pytest.mark.integration  # builds a tiny Coqui model (torch)
def test_a_speaker_of_another_backend_is_rejected_not_crashed(tiny_vits, tmp_path):
    from pipeline.stages.tts import TTSStage

    pool = load_pool(write_pool(tmp_path / "pool.jsonl", [
        vits_speaker("u", speaker_index=1),
        {"speaker_id": "p", "language": "en", "source": "x", "license": "x", "backend": "piper"}]))
    stage = TTSStage("vits", None, pool, backend_options={"model": str(tiny_vits), "device": "cpu"})
    row = stage(rows_to_table([conversation("en-00000000000000a4", ["u", "p"], ["hi there", "hello"])])).to_pylist()[0]
    assert row["reject_reason"] == "tts_backend_mismatch" and "piper voice" in row["reject_details"]


# --- XTTS: conditioning cache, virtual voices, text pieces ---------------------------------------------------


@pytest.fixture()
def xtts_pool(tmp_path):
    write_clip(tmp_path / "speakers/clips/a.wav", seed=1)
    write_clip(tmp_path / "speakers/clips/b.wav", seed=2)
    write_clip(tmp_path / "speakers/clips/b2.wav", seed=3)

    def spk(sid, lang="en", **extra):
        return {"speaker_id": sid, "language": lang, "source": "synthetic clips", "license": "test-only",
                "backend": "xtts", **extra}

    clip = {"duration_s": 3.0, "sample_rate": 22050}
    return write_pool(tmp_path / "speakers/xtts.jsonl", [
        spk("xa", references=[{"path": "clips/a.wav", **clip}]),
        spk("xb", lang="zh", references=[{"path": "clips/b.wav", **clip}, {"path": "clips/b2.wav", **clip}]),
        spk("xmix", recipe={"sources": ["xa", "xb"], "weights": [0.7, 0.3], "seed": 11, "noise_scale": 0.2}),
        spk("xmix-other-seed", recipe={"sources": ["xa", "xb"], "weights": [0.7, 0.3], "seed": 12, "noise_scale": 0.2}),
        spk("xmix-plain", recipe={"sources": ["xa", "xb"], "weights": [0.5, 0.5], "seed": 1, "noise_scale": 0.0}),
    ])


def xtts_backend(model: Path, pool_file: Path, state: Path):
    from pipeline.tts.xtts import XttsBackend

    return XttsBackend(str(model), device="cpu", languages={"en": "en", "zh": "zh-cn"}, pool=load_pool(pool_file),
                       pool_file=pool_file, latent_dir=state / "xtts_latents", chunk_gap_s=0.1)


@pytest.mark.integration  # builds a tiny Coqui model (torch)
def test_xtts_latents_are_cached_in_memory_then_on_disk(tiny_xtts, xtts_pool, tmp_path):
    from pipeline.stages.tts import TTSStage

    state = tmp_path / "out/state"
    pool = load_pool(xtts_pool)
    stage = TTSStage("xtts", None, pool, backend_options={
        "model": str(tiny_xtts), "device": "cpu", "languages": {"en": "en", "zh": "zh-cn"}, "pool": pool,
        "pool_file": xtts_pool, "latent_dir": state / "xtts_latents"})
    two_exchanges = conversation("en-00000000000000b1", ["xa", "xmix", "xa", "xmix"],
                                 ["hello there", "hi, how can I help", "where is the bank", "next to the park"])
    row = stage(rows_to_table([two_exchanges])).to_pylist()[0]
    assert row["reject_reason"] is None, row["reject_details"]
    assert row["tts_model"].startswith("coqui-tts 0.28.0 xtts")
    stats = stage.backend.cache_stats
    # xa computed on turn 0 and hit on turn 2; xmix mixed on turn 1 (its source xa hit, xb computed), hit on turn 3
    assert (stats["computed"], stats["mixed"], stats["memory_hits"], stats["disk_hits"]) == (2, 1, 3, 0)
    assert sorted(p.name for p in (state / "xtts_latents").iterdir()) == ["xa.pt", "xb.pt"]  # no temp files left

    again = xtts_backend(tiny_xtts, xtts_pool, state)  # a second actor, or a rerun
    gpt, emb = again.latents(load_pool(xtts_pool)[0])
    assert (again.cache_stats["disk_hits"], again.cache_stats["computed"]) == (1, 0)
    first_gpt, first_emb = stage.backend.latents(pool[0])
    assert torch.equal(gpt, first_gpt) and torch.equal(emb, first_emb)

    write_clip(tmp_path / "speakers/clips/a.wav", seed=99)  # a changed reference clip is recomputed
    third = xtts_backend(tiny_xtts, xtts_pool, state)
    gpt3, _ = third.latents(load_pool(xtts_pool)[0])
    assert (third.cache_stats["disk_hits"], third.cache_stats["computed"]) == (0, 1)
    assert not torch.equal(gpt3, gpt)


@pytest.mark.integration  # builds a tiny Coqui model (torch)
def test_virtual_voices_mix_latents_deterministically(tiny_xtts, xtts_pool, tmp_path):
    pool = {s.speaker_id: s for s in load_pool(xtts_pool)}
    one = xtts_backend(tiny_xtts, xtts_pool, tmp_path / "s1")
    two = xtts_backend(tiny_xtts, xtts_pool, tmp_path / "s2")
    g1, e1 = one.latents(pool["xmix"])
    g2, e2 = two.latents(pool["xmix"])
    assert torch.equal(g1, g2) and torch.equal(e1, e2)  # same recipe, same voice, in any process
    g3, _ = one.latents(pool["xmix-other-seed"])
    assert not torch.equal(g1, g3)  # the seed changes the noise
    ga, ea = one.latents(pool["xa"])
    gb, eb = one.latents(pool["xb"])
    assert not torch.allclose(g1, ga) and not torch.allclose(g1, gb)
    assert torch.allclose(e1.norm(dim=1), torch.ones(1), atol=1e-5)  # a unit-length speaker embedding
    gp, ep = one.latents(pool["xmix-plain"])  # no noise: exactly the weighted mean
    assert torch.allclose(gp, 0.5 * ga + 0.5 * gb, atol=1e-6)
    mean = 0.5 * ea + 0.5 * eb
    assert torch.allclose(ep, mean / mean.norm(dim=1, keepdim=True), atol=1e-6)


@pytest.mark.integration  # builds a tiny Coqui model (torch)
def test_xtts_text_is_split_within_the_language_limits(tiny_xtts, xtts_pool, tmp_path):
    backend = xtts_backend(tiny_xtts, xtts_pool, tmp_path / "s")
    spoken: list[tuple[str, str]] = []
    real = backend.model.tokenizer.encode

    def record(text, lang):  # a spy on what reaches the GPT, piece by piece: the real tokenizer runs
        spoken.append((text, lang))
        return real(text, lang=lang)

    backend.model.tokenizer.encode = record
    zh = "今天天气很好，我们一起去公园散步吧。" * 12  # 216 characters
    en = "The station is two streets away, right next to the old bank on the corner. " * 8  # ~600 characters
    pool = {s.speaker_id: s for s in load_pool(xtts_pool)}
    audio, rate = backend.synthesize(zh, pool["xb"], language="zh", seed=5)
    zh_pieces = [t for t, _ in spoken]
    assert rate == 24000 and np.isfinite(audio).all()
    assert len(zh_pieces) >= 3 and all(len(p) <= 82 for p in zh_pieces) and {lang for _, lang in spoken} == {"zh"}
    assert "".join(zh_pieces) == zh  # sentence-bounded pieces, nothing lost
    spoken.clear()
    backend.synthesize(en, pool["xa"], language="en", seed=5)
    assert len(spoken) >= 3 and all(len(t) <= 250 for t, _ in spoken) and spoken[0][1] == "en"
    assert all(t.endswith(".") for t, _ in spoken)
    # reproducible per seed: the same turn and attempt give the same audio
    a, _ = backend.synthesize("hello there", pool["xa"], language="en", seed=9)
    b, _ = backend.synthesize("hello there", pool["xa"], language="en", seed=9)
    assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="not one of the model's languages"):
        backend.synthesize("hola", pool["xa"], language="xx", seed=1)


@pytest.mark.integration  # builds a tiny Coqui model (torch)
def test_xtts_reference_clips_are_read_without_ffmpeg(tiny_xtts, xtts_pool, tmp_path, monkeypatch):
    """GPU images often lack FFmpeg, which torchaudio.load (torchcodec) needs: the backend reads references
    with soundfile. The stereo 24 kHz FLAC comes back as coqui's reader would give it (mono mean, resampled)."""
    import soundfile as sf
    import torchaudio
    from TTS.tts.models import xtts as coqui_xtts

    from pipeline.tts.patches import read_reference as _read_reference

    rate, seconds = 24000, 2.0
    t = np.arange(int(rate * seconds)) / rate
    left, right = 0.5 * np.sin(2 * np.pi * 220 * t), 0.3 * np.sin(2 * np.pi * 330 * t)
    sf.write(tmp_path / "stereo.flac", np.stack([left, right], axis=1), rate)
    ours = _read_reference(tmp_path / "stereo.flac", 22050)
    assert ours.shape == (1, int(22050 * seconds))
    expected = torchaudio.functional.resample(torch.tensor((left + right) / 2, dtype=torch.float32), rate, 22050)
    n = min(ours.shape[1], expected.shape[0]) - 200  # resampler edges differ
    corr = np.corrcoef(ours[0, 100:n].numpy(), expected[100:n].numpy())[0, 1]
    assert corr > 0.999, corr

    def no_ffmpeg(*_a, **_k):
        raise RuntimeError("torchaudio.load called: this needs FFmpeg")

    monkeypatch.setattr(torchaudio, "load", no_ffmpeg)
    backend = xtts_backend(tiny_xtts, xtts_pool, tmp_path / "state")
    assert coqui_xtts.load_audio is _read_reference
    gpt, emb = backend.latents(load_pool(xtts_pool)[0])
    assert backend.cache_stats["computed"] == 1 and torch.isfinite(gpt).all() and torch.isfinite(emb).all()
