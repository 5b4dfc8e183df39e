"""Batched XTTS-v2 and VITS synthesis (pipeline/tts/xtts_batched.py, vits_batched.py, hifigan_batched.py).

Real parts: coqui-tts's Xtts and Vits classes with tiny random weights built here (tests/tiny_coqui.py),
their tokenizers, conditioning encoder, speaker encoder and HiFi-GAN decoders, the pipeline's XttsBackend
and VitsBackend with their latent caches. fp32 on the CPU throughout.

The tiny XTTS GPT is re-drawn with `spread=0.3` (GPT-2's own 0.02 init makes a toy GPT say the same codes
whatever the text and voice, which would hide batching bugs) and its stop token's logit is raised by
`stop_bias=0.5`, so that some pieces stop early and others run to the code limit, as they do with a
trained model; which ones is decided by text, voice and seed, and the tests check that both kinds occur.
The only fault injected is a NaN conditioning latent put into the backend's in-memory latent cache for
one speaker (a corrupt voice); everything downstream of it runs for real.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from tiny_coqui import build_tiny_vits, build_tiny_xtts, write_clip

torch = pytest.importorskip("torch")
pytest.importorskip("TTS")

from pipeline.tts.base import SynthesisRequest, call_batched, length_batches  # noqa: E402
from pipeline.tts.xtts_batched import BatchedXttsGPT, GptItem, Sampling, synthesize_batch  # noqa: E402
from pipeline.voices.pool import Speaker, load_pool  # noqa: E402

pytestmark = pytest.mark.integration  # builds tiny Coqui models (or loads Piper)

TEXTS = ["Hi.", "Where is the nearest train station from here, and how long does it take to walk there?",
         "Okay, thanks.", "The museum opens at nine.",
         "I would like a cup of tea with some milk, please, and perhaps a small piece of that lemon cake too.",
         "Yes.", "Could you tell me the time?", "We should plan the whole trip next week, when everyone is back home."]
SPEAKERS = ["xa", "xb", "xmix"]


@pytest.fixture(scope="module")
def spread_xtts(tmp_path_factory) -> Path:
    return build_tiny_xtts(tmp_path_factory.mktemp("models") / "xtts", max_audio_tokens=48, spread=0.3,
                           stop_bias=0.5)


@pytest.fixture(scope="module")
def small_xtts(tmp_path_factory) -> Path:
    """As spread_xtts with at most 21 codes per piece (about 1 s of audio): the stage and pipeline tests speak
    many turns through XTTS's full-size HiFi-GAN, whose CPU time is what these tests cost."""
    return build_tiny_xtts(tmp_path_factory.mktemp("models") / "xtts-small", max_audio_tokens=24, spread=0.3,
                           stop_bias=0.5)


@pytest.fixture(scope="module")
def pool_file(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("speakers")
    for name, seed in (("a", 1), ("b", 2)):
        write_clip(root / f"clips/{name}.wav", seed=seed)
    clip = {"duration_s": 3.0, "sample_rate": 22050}
    base = {"language": "en", "source": "synthetic clips", "license": "test-only", "backend": "xtts"}
    rows = [{"speaker_id": "xa", **base, "references": [{"path": "clips/a.wav", **clip}]},
            {"speaker_id": "xb", **base, "references": [{"path": "clips/b.wav", **clip}]},
            {"speaker_id": "xmix", **base, "recipe": {"sources": ["xa", "xb"], "weights": [0.6, 0.4], "seed": 3,
                                                     "noise_scale": 0.3}}]
    path = root / "xtts.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def backend(spread_xtts, pool_file, tmp_path_factory):
    from pipeline.tts.xtts import XttsBackend

    return XttsBackend(str(spread_xtts), device="cpu", languages={"en": "en"}, pool=load_pool(pool_file),
                       pool_file=pool_file, latent_dir=tmp_path_factory.mktemp("state") / "latents", chunk_gap_s=0.1)


def speakers(backend) -> dict[str, Speaker]:
    return dict(backend.speakers)


def gpt_items(backend, seeds=None) -> list[GptItem]:
    """One GPT item per text of TEXTS, speakers cycling through the three voices."""
    pool = speakers(backend)
    items = []
    for i, text in enumerate(TEXTS):
        gpt_latent, _ = backend.latents(pool[SPEAKERS[i % 3]])
        tokens = backend.model.tokenizer.encode(text.lower(), lang="en")
        items.append(GptItem(list(tokens), gpt_latent, seed=(seeds or {}).get(i, 1000 + i)))
    return items


def codes(results) -> list[list[int]]:
    return [r.codes.tolist() for r in results]


# --- greedy: a batch equals its turns one at a time -----------------------------------------------------------


def test_greedy_batch_of_eight_mixed_speakers_equals_one_at_a_time(backend):
    """8 turns, 3 speakers (two cloned, one virtual), 1 to 23 text tokens: the same codes, batched or alone, and
    waveforms equal to float precision; and a batch of one is exactly coqui's own `Xtts.inference`."""
    pool = speakers(backend)
    requests = [SynthesisRequest(text, pool[SPEAKERS[i % 3]], "en", seed=7 + i) for i, text in enumerate(TEXTS)]
    token_counts = [len(item.text_tokens) for item in gpt_items(backend)]
    assert max(token_counts) >= 5 * min(token_counts)  # very different lengths: lots of left padding

    decoder = BatchedXttsGPT(backend.model.gpt)
    greedy = Sampling.from_config(backend.config, do_sample=False)
    items = gpt_items(backend)
    alone = [decoder.decode([item], greedy)[0] for item in items]
    batch = decoder.decode(items, greedy)
    assert codes(batch) == codes(alone)
    assert len({tuple(c) for c in codes(alone)}) == len(TEXTS)  # the texts and voices do steer the codes
    assert any(r.stopped for r in alone) and any(not r.stopped for r in alone)  # early stops and code limits
    for a, b in zip(alone, batch):
        assert torch.allclose(a.latents, b.latents, atol=1e-5)

    one_by_one = [synthesize_batch(backend, [r], max_batch=1, do_sample=False)[0] for r in requests]
    together = synthesize_batch(backend, requests, max_batch=8, do_sample=False)
    for (wa, ra), (wb, rb) in zip(one_by_one, together):
        assert ra == rb == 24000 and wa.shape == wb.shape and wa.size > 0
        assert np.abs(wa - wb).max() < 1e-4, np.abs(wa - wb).max()

    # the reference: coqui-tts decoding the same piece itself (transformers generate + its second GPT pass)
    first = pool[SPEAKERS[0]]
    gpt_latent, speaker_embedding = backend.latents(first)
    cfg = backend.config
    with torch.inference_mode():
        ref = backend.model.inference(TEXTS[0], "en", gpt_latent, speaker_embedding, do_sample=False,
                                      repetition_penalty=cfg.repetition_penalty, length_penalty=cfg.length_penalty)
    ours, _ = one_by_one[0]
    assert ref["wav"].shape == ours.shape and np.abs(ref["wav"] - ours).max() < 1e-4


# --- sampling: a turn's seed decides its codes, whatever the batch ------------------------------------------------


def test_sampled_codes_depend_on_the_seed_not_the_batch(backend):
    decoder = BatchedXttsGPT(backend.model.gpt)
    sampling = Sampling.from_config(backend.config)
    assert sampling.do_sample and sampling.top_k and sampling.top_p < 1
    items = gpt_items(backend)
    turn = 1  # turn T=1 with seed S=1001
    alone = decoder.decode([items[turn]], sampling)[0].codes.tolist()
    in_four = decoder.decode(items[:4], sampling)[turn].codes.tolist()
    order = [6, 3, 0, 7, 2, 5, 1, 4]
    in_eight = decoder.decode([items[i] for i in order], sampling)[order.index(turn)].codes.tolist()
    assert alone == in_four == in_eight and len(alone) > 3
    # every item of the batch of 8, in another order, matches its batch-of-4 / alone codes
    by_item = dict(zip(order, codes(decoder.decode([items[i] for i in order], sampling))))
    assert [by_item[i] for i in range(4)] == codes(decoder.decode(items[:4], sampling))
    # and the seed matters: another seed, other codes; the greedy codes differ from the sampled ones
    reseeded = gpt_items(backend, seeds={turn: 55})[turn]
    assert decoder.decode([reseeded], sampling)[0].codes.tolist() != alone
    greedy = Sampling.from_config(backend.config, do_sample=False)
    assert decoder.decode([items[turn]], greedy)[0].codes.tolist() != alone


# --- early stops, code limits and failures stay with their item ---------------------------------------------------


def test_an_item_that_stops_early_or_hits_its_limit_leaves_the_others_unchanged(backend):
    decoder = BatchedXttsGPT(backend.model.gpt, compact_at=0.9)
    greedy = Sampling.from_config(backend.config, do_sample=False)
    items = gpt_items(backend)
    alone = [decoder.decode([item], greedy)[0] for item in items]
    early = [i for i, r in enumerate(alone) if r.stopped and len(r.codes) <= 16]
    long = [i for i, r in enumerate(alone) if len(r.codes) >= 30]
    assert early and long, [len(r.codes) for r in alone]
    limited = long[0]
    items[limited] = GptItem(items[limited].text_tokens, items[limited].cond_latent, items[limited].seed, max_codes=6)

    before = decoder.stats.compactions
    batch = decoder.decode(items, greedy)
    assert decoder.stats.compactions > before  # finished rows were dropped from the batch mid-way
    for i, (a, b) in enumerate(zip(alone, batch)):
        if i == limited:  # its own limit: the first 6 codes it would have said, no stop, 6 latents
            assert b.codes.tolist() == a.codes.tolist()[:6] and not b.stopped and b.latents.shape[0] == 6
        else:
            assert b.codes.tolist() == a.codes.tolist() and b.stopped == a.stopped
    # the fixed-shape decoding (finished rows masked, never dropped: what torch.compile / CUDA graphs run) agrees
    assert codes(decoder.decode(items, greedy, static=True)) == codes(batch)


def test_a_corrupt_voice_fails_only_its_own_turns(backend):
    """A NaN conditioning latent (put into the latent cache for one speaker) fails that speaker's turn with a
    reason; the other turns of the batch get exactly the audio they get without it."""
    pool = speakers(backend)
    requests = [SynthesisRequest(text, pool[SPEAKERS[i % 2]], "en", seed=40 + i, max_seconds=0.5)
                for i, text in enumerate(TEXTS[:3])]
    clean = synthesize_batch(backend, requests, max_batch=4, do_sample=True)
    corrupt = Speaker.model_validate({**pool["xa"].model_dump(), "speaker_id": "x-corrupt"})
    gpt_latent, speaker_embedding = backend.latents(pool["xa"])
    backend._latents["x-corrupt"] = (torch.full_like(gpt_latent, float("nan")), speaker_embedding)
    mixed = requests[:2] + [SynthesisRequest(TEXTS[5], corrupt, "en", seed=1)] + requests[2:]
    results = synthesize_batch(backend, mixed, max_batch=8, do_sample=True)
    assert isinstance(results[2], RuntimeError) and "non-finite" in str(results[2])
    for (w1, _), (w2, _) in zip(clean, results[:2] + results[3:]):
        assert w1.shape == w2.shape and np.abs(w1 - w2).max() < 1e-4
    # a request the model cannot take (unknown language) fails alone too, before any decoding
    odd = synthesize_batch(backend, [requests[0], SynthesisRequest("hola", pool["xa"], "xx", seed=1)], max_batch=2)
    assert isinstance(odd[1], ValueError) and "not one of the model's languages" in str(odd[1])
    assert np.abs(odd[0][0] - clean[0][0]).max() < 1e-4


def test_long_turns_are_split_and_their_pieces_join_the_batch(backend):
    pool = speakers(backend)
    long_text = " ".join(["The station is two streets away, right next to the old bank on the corner."] * 4)
    assert len(long_text) > 250  # XTTS's English limit: several pieces
    pieces = backend.pieces(long_text, "en")
    assert len(pieces) >= 2
    requests = [SynthesisRequest(long_text, pool["xb"], "en", seed=9, max_seconds=0.5),
                SynthesisRequest(TEXTS[3], pool["xa"], "en", 2, max_seconds=0.5)]
    timings: dict = {}
    (wav, rate), (short, _) = synthesize_batch(backend, requests, max_batch=8, do_sample=False, timings=timings)
    gap = int(0.1 * rate)
    piece_wavs = [synthesize_batch(backend, [SynthesisRequest(p, pool["xb"], "en", 0, max_seconds=0.5)],
                                   do_sample=False)[0][0] for p in pieces]
    assert wav.size == sum(w.size for w in piece_wavs) + gap * (len(pieces) - 1)  # pieces joined with the gap
    start = 0
    for w in piece_wavs:  # each piece as it sounds alone
        assert np.abs(wav[start:start + w.size] - w).max() < 1e-4
        start += w.size + gap
    assert short.size > 0 and timings["codes"] > 0 and timings["gpt_s"] > 0 and timings["vocoder_s"] > 0


def test_a_duration_cap_stops_a_runaway_just_past_the_limit(backend):
    pool = speakers(backend)
    request = SynthesisRequest(TEXTS[1], pool["xa"], "en", seed=3, max_seconds=0.3)
    wav, rate = synthesize_batch(backend, [request], do_sample=False)[0]
    item = GptItem(backend.model.tokenizer.encode(TEXTS[1].lower(), lang="en"), backend.latents(pool["xa"])[0])
    free = BatchedXttsGPT(backend.model.gpt).decode([item], Sampling.from_config(backend.config, do_sample=False))[0]
    assert 0.3 < wav.size / rate < 0.45 < free.latents.shape[0] * 1024 / 22050  # still too long, so still caught


# --- VITS ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=[False, True], ids=["deterministic-durations", "stochastic-durations"])
def vits_backend(request, tmp_path_factory):
    import tiny_coqui

    from pipeline.tts.vits import VitsBackend

    sizes = {**tiny_coqui.TINY_VITS_ARGS, "use_sdp": request.param}
    folder = tmp_path_factory.mktemp("vits")
    original = tiny_coqui.TINY_VITS_ARGS
    tiny_coqui.TINY_VITS_ARGS = sizes
    try:
        build_tiny_vits(folder, num_speakers=50)
    finally:
        tiny_coqui.TINY_VITS_ARGS = original
    return VitsBackend(str(folder), device="cpu")


def test_batched_vits_equals_one_at_a_time_in_any_order(vits_backend):
    from pipeline.tts import vits_batched

    def spk(i):
        return Speaker.model_validate({"speaker_id": f"v{i}", "language": "en", "source": "tiny", "license": "test",
                                       "backend": "vits", "speaker_index": i})

    requests = [SynthesisRequest(text, spk(3 * i % 50), "en", seed=11 + i) for i, text in enumerate(TEXTS)]
    alone = [vits_batched.synthesize_batch(vits_backend, [r])[0] for r in requests]
    order = [4, 0, 7, 2, 6, 1, 5, 3]
    mixed = vits_batched.synthesize_batch(vits_backend, [requests[i] for i in order], max_batch=8)
    for (wa, ra), i in zip(alone, range(8)):
        wb, rb = mixed[order.index(i)]
        assert ra == rb == 22050 and wa.shape == wb.shape and wa.size > 0
        assert np.abs(wa - wb).max() <= 1e-5 * max(np.abs(wa).max(), 1e-3)
    assert len({a[0].size for a in alone}) > 3  # different lengths: padding was exercised
    reseeded = vits_batched.synthesize_batch(vits_backend, [SynthesisRequest(TEXTS[1], spk(3), "en", seed=99)])[0][0]
    assert not np.array_equal(reseeded, alone[1][0])  # the seed matters
    bad = vits_batched.synthesize_batch(vits_backend, [requests[0], SynthesisRequest("hi", spk(0).model_copy(
        update={"speaker_index": 500}), "en", 1)])
    assert isinstance(bad[1], ValueError) and "outside the model's 50 speakers" in str(bad[1])
    assert np.array_equal(bad[0][0], alone[0][0])


# --- the interface -------------------------------------------------------------------------------------------------


def test_length_batches_sort_and_cut():
    assert length_batches([5, 1, 9, 3, 7], 2) == [[1, 3], [0, 4], [2]]
    assert length_batches([], 4) == []
    with pytest.raises(ValueError):
        length_batches([1], 0)


def test_a_backend_without_batching_speaks_turn_by_turn_and_keeps_failures_in_their_slot():
    """Piper (real, the packaged voice) behind the batch call: each turn spoken alone, a bad voice fails alone."""
    from pipeline.tts.piper import PiperBackend

    piper = PiperBackend(None, noise_scale=0.0, noise_w_scale=0.0, threads=1)
    good = Speaker.model_validate({"speaker_id": "joe", "language": "en", "source": "piper", "license": "MIT",
                                   "backend": "piper"})
    missing = good.model_copy(update={"speaker_id": "gone", "voice": "/nonexistent/voice.onnx"})
    requests = [SynthesisRequest("Good morning to you.", good), SynthesisRequest("Hello.", missing),
                SynthesisRequest("Hi.", good)]
    out = call_batched(piper, requests, max_batch=8)
    assert isinstance(out[1], Exception)
    alone = piper.synthesize("Good morning to you.", good)
    assert np.array_equal(out[0][0], alone[0]) and out[2][0].size < out[0][0].size


# --- the TTS stage: a Ray batch's turns go to the backend together; a failure is retried alone ---------------------


def conversation(cid: str, speakers_: list[str], texts: list[str], seed: int) -> dict:
    from pipeline.schema import empty_turn

    turns = []
    for i, (spk, text) in enumerate(zip(speakers_, texts)):
        t = empty_turn("user" if i % 2 == 0 else "assistant", text)
        t.update(spoken_text=text, speaker_id=spk)
        turns.append(t)
    return {"conversation_id": cid, "language": "en", "num_exchanges": len(turns) // 2, "seed": seed, "turns": turns}


class SpoilChosen:
    """Fault hook around the real XTTS backend's batch call: the turns whose (text, seed) are in `spoil` come back
    spoiled ("nan": NaN samples; "runaway": 100 s of audio, over the 70 s the longest text may take), every call's
    texts are recorded."""

    def __init__(self, real, spoil: dict[tuple[str, int], str]):
        self.real, self.spoil, self.calls = real, spoil, []
        self.model_id = real.model_id

    def synthesize_batch(self, requests):
        self.calls.append([(r.text, r.seed) for r in requests])
        out = self.real.synthesize_batch(requests)
        for i, r in enumerate(requests):
            mode = self.spoil.get((r.text, r.seed))
            if mode == "nan" and not isinstance(out[i], Exception):
                out[i] = (np.full_like(out[i][0], np.nan), out[i][1])
            elif mode == "runaway":
                out[i] = (np.zeros(24000 * 100, dtype=np.float32), 24000)
        return out


def test_the_stage_batches_a_ray_batch_and_retries_only_the_failed_turns(small_xtts, pool_file, tmp_path):
    from pipeline.schema import rows_to_table
    from pipeline.stages.tts import TTSStage, turn_seed

    pool = load_pool(pool_file)
    stage = TTSStage("xtts", None, pool, max_attempts=3, max_batch_turns=8, backend_options={
        "model": str(small_xtts), "device": "cpu", "languages": {"en": "en"}, "pool": pool, "pool_file": pool_file,
        "latent_dir": tmp_path / "latents", "max_batch_turns": 8})
    rows = [conversation(f"en-{i:016x}", [SPEAKERS[i % 3], SPEAKERS[(i + 1) % 3]],
                         [TEXTS[i % 8], TEXTS[(i + 3) % 8]], seed=i) for i in range(6)]  # 12 turns
    stage.setup()
    stage._ready = True
    real = stage.backend
    stage.backend = SpoilChosen(real, {})
    started = time.perf_counter()
    clean = stage(rows_to_table(rows)).to_pylist()
    wall = time.perf_counter() - started
    clean_calls = stage.backend.calls
    assert [len(c) for c in clean_calls[:2]] == [8, 4]  # round 1: all 12 turns, sorted by length, 8 per call
    first_round = sorted(t for call in clean_calls[:2] for t, _ in call)
    assert first_round == sorted(t["spoken_text"] for r in rows for t in r["turns"])
    # the batch's synthesis time is shared out to its conversations (the cost section's busy TTS seconds):
    # synthesis is nearly all of the stage call's time
    assert all(r["tts_busy_s"] > 0 for r in clean) and sum(r["tts_busy_s"] for r in clean) > 0.5 * wall

    def attempts(result):
        return [[t["tts_attempts"] for t in r["turns"]] for r in result]

    # spoil turn 0 of conversation 1 (NaN) and turn 1 of conversation 4 (a runaway) on their first attempt
    picked = [(1, 0, "nan"), (4, 1, "runaway")]
    assert all(attempts(clean)[c][t] == 1 for c, t, _ in picked)  # (they succeed first time when left alone)
    spoil = {(rows[c]["turns"][t]["spoken_text"], turn_seed(0, rows[c]["seed"], t, 1)): mode for c, t, mode in picked}
    stage.backend = SpoilChosen(real, spoil)
    spoiled = stage(rows_to_table(rows)).to_pylist()
    calls = stage.backend.calls
    assert all(r["reject_reason"] is None for r in spoiled) == all(r["reject_reason"] is None for r in clean)
    retried = {t for call in calls[2:] for t in call}
    clean_retried = {t for call in clean_calls[2:] for t in call}
    second = {(rows[c]["turns"][t]["spoken_text"], turn_seed(0, rows[c]["seed"], t, 2)) for c, t, _ in picked}
    assert retried == clean_retried | second  # round 2 has the spoiled turns and the turns that failed anyway
    for c, row in enumerate(spoiled):
        for t, turn in enumerate(row["turns"]):
            if (c, t) in {(c_, t_) for c_, t_, _ in picked}:
                assert turn["tts_attempts"] == 2 and turn["audio_flac"][:4] == b"fLaC"
            else:  # untouched turns: the same attempts and byte-identical audio as in the clean run
                assert turn["tts_attempts"] == clean[c]["turns"][t]["tts_attempts"]
                assert turn["audio_flac"] == clean[c]["turns"][t]["audio_flac"]


@pytest.mark.integration
def test_the_pipeline_keeps_the_same_conversations_at_any_max_batch_turns(small_xtts, pool_file, tmp_path,
                                                                          ray_session):
    """On a real local Ray: 12 cached one-exchange conversations through tts (tiny XTTS, greedy), verify off, and
    shard, once with tts.max_batch_turns=8 and once with 1. `tts.min_s_per_char=0.015` makes the turns whose
    greedy codes stop early fail as too short, so the run keeps only part of the conversations; both runs keep
    the same ones, with the same audio (to the 16-bit rounding of float differences between batch shapes)."""
    import pyarrow.parquet as pq
    import webdataset as wds

    from pipeline.config import REPO_ROOT, load_config
    from pipeline.io.layout import Layout
    from pipeline.run.runner import run
    from pipeline.run.selection import StageSelection
    from pipeline.schema import TEXT_CACHE_SCHEMA, rows_to_table

    rows = [{"conversation_id": f"en-{i:016x}", "plan_index": i, "dataset": "xtts-batch", "language": "en",
             "domain": "daily", "topic": "travel", "scenario": "asking", "persona": "tourist", "num_exchanges": 1,
             "seed": i, "text_digest": "test", "llm_model": "none", "llm_requests": 0, "prompt_tokens": 0,
             "completion_tokens": 0,
             "turns": [{"role": "user", "display_text": TEXTS[i % 8]},
                       {"role": "assistant", "display_text": TEXTS[(i * 3 + 1) % 8]}]} for i in range(12)]

    def one_run(max_batch_turns: int) -> tuple[dict, dict]:
        out = tmp_path / f"out-{max_batch_turns}"
        (out / "text").mkdir(parents=True)
        pq.write_table(rows_to_table(rows, TEXT_CACHE_SCHEMA), out / "text/part-rtest-000000000000.parquet")
        cfg = load_config(REPO_ROOT / "configs/smoke.yaml",
                          ["dataset=xtts-batch", "tts.backend=xtts", f"tts.model={small_xtts}", "tts.device=cpu",
                           "tts.languages={en: en}", f"voices.pool={pool_file}", "voices.assistant_speaker=xa",
                           "verify.enabled=false", "dedup.enabled=false", "tts.batch_size=12", "tts.max_actors=1", "tts.xtts_sampling=false",
                           f"tts.max_batch_turns={max_batch_turns}", "tts.max_attempts=1", "tts.min_s_per_char=0.015",
                           "license_tags=[tts:tiny-random-xtts:test-only]"], out)
        # the hand-written text cache makes the folder non-empty and unmarked: the run adopts it
        stats = run(cfg, StageSelection.parse("tts,verify,shard"), adopt_output=True)
        audio = {}
        for tar in Layout(out).shards():
            for sample in wds.WebDataset(str(tar), shardshuffle=False):
                audio[sample["__key__"]] = (sample["user.flac"], sample["assistant.flac"])
        return stats["last_run"], audio

    batched, batched_audio = one_run(8)
    single, single_audio = one_run(1)
    assert 0 < single["kept"] < len(rows), single  # some conversations fail the duration check
    assert set(single["rejected_by_reason"]) == {"tts/tts_failed"}
    assert (batched["kept"], batched["rejected_by_reason"]) == (single["kept"], single["rejected_by_reason"])
    assert set(batched_audio) == set(single_audio) and len(single_audio) == single["kept"]
    import io

    import soundfile as sf

    for key, pair in single_audio.items():  # the same codes, so the same lengths; samples to 16-bit rounding
        for one, other in zip(pair, batched_audio[key]):
            a, b = sf.read(io.BytesIO(one))[0], sf.read(io.BytesIO(other))[0]
            assert a.shape == b.shape and np.abs(a - b).max() <= 3 / 32768
