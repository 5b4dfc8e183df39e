"""GPU benchmark (issue 9, row 7): TTS real-time factor per actor and per GPU with 1/2/4 actors on one
GPU, Whisper's batched real-time factor, and the GPU-hours that 60,000 hours of audio need.

    python bench/gpu_bench.py --json gpu.json              # on a CUDA machine, ~6 min
    python bench/gpu_bench.py --device cpu --size tiny --seconds 3 --actors 1,2   # the code path, no GPU
    python bench/gpu_bench.py --tts-batches 1,8,32,64 --json out.json     # batched synthesis (issue 16)
    python bench/gpu_bench.py --device cpu --size full --tts-batches 1,16  # the same on this CPU

TTS runs through the pipeline's own backends (`pipeline.tts.base.make_backend`), each actor a
separate process holding one model on the device, as a Ray actor with `tts.num_gpus: 1/N` would. The
models have the real architectures with random weights (`--size full`: XTTS-v2's 30-layer GPT, HiFi-GAN
decoder and speaker encoder; coqui's standard VITS): a lent machine can download no weights, and the
cost per second of audio is what sizing needs, not the sound. A random GPT rarely says stop, so each
XTTS piece is capped at `--xtts-codes` audio codes (150 codes = 7.0 s, a typical turn); the RTF is
computed on the audio actually produced.

`--tts-batches B1,B2,...` measures batched synthesis instead (pipeline/tts/xtts_batched.py, vits_batched.py):
each actor process holds one model and, for every batch size in turn, speaks windows of English turns
(TURNS below; a window is `--tts-window` x B turns, sorted by length and cut into chunks of B, as the
TTS stage does with a Ray batch). XTTS pieces get a per-item code limit of 1.5 codes per character of
their text (about what XTTS-v2 says per character of English; a random GPT rarely says stop, so each
piece runs to its own limit and short and long turns mix as in a run, padding included). It prints
audio-seconds per second per device, the ratio to batch 1 measured in the same run, the GPT's codes per
second on their own (decoder and vocoder apart), peak GPU memory per actor, and, on a GPU, the share of
greedy codes at batch B that equal batch 1's (float error can flip near-ties). It also times the GPT's
decoding step alone in its variants at the largest batch: eager (compacting finished rows), static
(fixed shapes, finished rows masked), torch.compile of the static step, and CUDA graphs of it (CUDA only).

Verification uses faster-whisper (CTranslate2) where it can run on the device with the packaged models.
Where it cannot (CTranslate2's wheels link CUDA 12's cuBLAS; the packaged models are not on the lent
machine), it times a Transformers Whisper of the same shape (tiny/base) in float16 with random weights:
CPU log-mel features of 30 s windows, the encoder, and a greedy decoder forced to `--asr-tokens` tokens
per turn (what a real transcript of a `--clip-s` turn costs). Transformers' eager decoding is slower
than CTranslate2's, so those figures are an upper bound on the verify GPU time.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

HOURS_TARGET = 60_000
TEXTS = ["Where is the nearest train station from here?", "It is two streets away, right next to the old bank.",
         "Could you tell me what time the museum opens tomorrow morning?",
         "The museum opens at nine, but the queue usually starts a little earlier than that.",
         "I would like a cup of tea with some milk, please.", "Of course, would you like anything to eat with it?"]
WHISPER_SHAPES = {  # openai/whisper model dimensions
    "tiny": {"d_model": 384, "encoder_layers": 4, "decoder_layers": 4, "encoder_attention_heads": 6,
                 "decoder_attention_heads": 6, "encoder_ffn_dim": 1536, "decoder_ffn_dim": 1536},
    "base": {"d_model": 512, "encoder_layers": 6, "decoder_layers": 6, "encoder_attention_heads": 8,
                 "decoder_attention_heads": 8, "encoder_ffn_dim": 2048, "decoder_ffn_dim": 2048},
}


# --- TTS: N actor processes on one device ----------------------------------------------------------------


def build_models(tmp: Path, size: str) -> dict[str, tuple[dict, dict]]:
    """backend name -> (make_backend options, speaker row) for the models built into `tmp`."""
    from tiny_coqui import build_tiny_vits, build_tiny_xtts, write_clip

    full = size == "full"
    base = {"language": "en", "source": "bench", "license": "bench"}
    write_clip(tmp / "pool/a.wav", seed=1, seconds=6.0)
    (tmp / "pool/pool.jsonl").write_text("")
    xtts = build_tiny_xtts(tmp / "xtts", full_size=full)
    vits = build_tiny_vits(tmp / "vits", num_speakers=2000, full_size=full)
    return {
        "xtts": ({"model": str(xtts), "pool_file": tmp / "pool/pool.jsonl", "latent_dir": tmp / "latents"},
                 {**base, "speaker_id": "xa", "backend": "xtts",
                  "references": [{"path": "a.wav", "duration_s": 6.0, "sample_rate": 22050}]}),
        "vits": ({"model": str(vits)}, {**base, "speaker_id": "v7", "backend": "vits", "speaker_index": 7}),
    }


def _tts_actor(name, options, speaker_row, device, seconds, xtts_codes, barrier, results) -> None:
    try:
        import torch

        torch.set_num_threads(1)  # one CPU thread per actor, as under Ray with num_cpus=1
        from pipeline.tts.base import make_backend
        from pipeline.voices.pool import Speaker

        backend = make_backend(name, None, **options, device=device)
        if name == "xtts":
            gpt = backend.model.gpt  # never past the model's own limit (its position table)
            gpt.max_gen_mel_tokens = min(xtts_codes, gpt.max_gen_mel_tokens)
        speaker = Speaker.model_validate(speaker_row)
        for i in range(2):  # kernels, cuDNN autotune and the speaker's conditioning stay out of the timing
            backend.synthesize(TEXTS[i], speaker, language="en", seed=i)
        barrier.wait(timeout=600)
        audio = synth = 0.0
        turns = 0
        started = time.perf_counter()
        while time.perf_counter() - started < seconds or turns < 2:
            t = time.perf_counter()
            samples, rate = backend.synthesize(TEXTS[turns % len(TEXTS)], speaker, language="en", seed=100 + turns)
            synth += time.perf_counter() - t
            audio += samples.size / rate
            turns += 1
        results.put({"audio_s": audio, "synth_s": synth, "turns": turns, "wall_s": time.perf_counter() - started,
                     "gpu_mem_gb": torch.cuda.max_memory_allocated() / 1e9 if device.startswith("cuda") else 0.0})
    except BaseException as exc:  # noqa: BLE001 - the parent reports which actor failed and why
        barrier.abort()
        results.put({"error": f"{type(exc).__name__}: {exc}"})


def measure_tts(name: str, options: dict, speaker: dict, device: str, actors: int, seconds: float,
                xtts_codes: int) -> dict:
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(actors), ctx.Queue()
    procs = [ctx.Process(target=_tts_actor, args=(name, options, speaker, device, seconds, xtts_codes, barrier, results))
             for _ in range(actors)]
    for p in procs:
        p.start()
    out = [results.get(timeout=seconds + 900) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    errors = [r["error"] for r in out if "error" in r]
    if errors:
        raise RuntimeError(f"{name} with {actors} actors: {errors[0]}")
    audio = sum(r["audio_s"] for r in out)
    return {"actors": actors, "audio_s": audio, "wall_s": max(r["wall_s"] for r in out),
            "rtf_per_actor": sum(r["synth_s"] for r in out) / audio, "turns": sum(r["turns"] for r in out),
            "audio_s_per_s": audio / max(r["wall_s"] for r in out), "gpu_mem_gb_per_actor": max(r["gpu_mem_gb"] for r in out)}


# --- batched TTS (issue 16): one process per actor, every batch size in turn ------------------------------------

# English turns of the lengths a run produces (short user questions, longer assistant answers), 12-236 characters
TURNS = ["Hi, how are you?", "Where is the nearest train station?", "Thanks a lot!",
         "It is two streets away, right next to the old bank on the corner.",
         "Could you tell me what time the museum opens tomorrow morning?",
         "The museum opens at nine, but the queue usually starts a little earlier than that, so try to be there "
         "by half past eight.", "What should I cook tonight?",
         "How about a simple pasta with tomatoes, garlic and fresh basil? It takes about twenty minutes and you "
         "probably have everything at home already.", "Is it going to rain this weekend?",
         "The forecast says Saturday will be dry and sunny, but there is a good chance of showers on Sunday "
         "afternoon, so take an umbrella if you go out.", "Can you recommend a good book?",
         "If you enjoy mysteries, try a classic detective novel; they are short, clever, and hard to put down.",
         "Sure.", "Why is the sky blue?",
         "Sunlight is made of many colours. The air scatters blue light much more than red light, so when you "
         "look up, blue light reaches your eyes from every direction of the sky, and that is the colour you see.",
         "How do I reset my password?",
         "Open the settings page, choose account, then security, and press the reset button. You will get an "
         "email with a link that is valid for one hour.", "Okay, that makes sense.",
         "What is a healthy breakfast?",
         "Porridge with fruit, yoghurt with nuts, or eggs on wholegrain toast all keep you full until lunch.",
         "Tell me a fun fact.", "Octopuses have three hearts and blue blood.",
         "How long does it take to learn to play the guitar well enough to play a few songs with friends?",
         "With twenty minutes of practice a day, most people can play a handful of simple songs within two or "
         "three months; the first few weeks are the hardest, while your fingers get used to the strings."]
CODES_PER_CHAR = 1.5  # XTTS-v2 says about 1.5 audio codes (21.5 per second of audio) per character of English


def turn_windows(batch: int, window_factor: int, offset: int):
    """Endless windows of window_factor*batch turns (a rotating cut of TURNS), each sorted by length and cut
    into chunks of `batch`, as the TTS stage sorts a Ray batch and hands over max_batch_turns at a time."""
    size = max(1, window_factor * batch)
    start = offset
    while True:
        texts = [TURNS[(start + i * 7) % len(TURNS)] for i in range(size)]  # stride 7: lengths mix
        start += size
        texts.sort(key=len)
        yield [texts[i:i + batch] for i in range(0, len(texts), batch)]


def _xtts_gpt_items(backend, gpt_latent, texts, seed0, cap=None):
    from pipeline.tts.xtts_batched import GptItem

    items = []
    for n, text in enumerate(texts):
        tokens = backend.model.tokenizer.encode(text.strip().lower(), lang="en")
        codes = max(1, round(CODES_PER_CHAR * len(text)))
        items.append(GptItem(list(tokens), gpt_latent, seed=seed0 + n, max_codes=min(codes, cap or codes)))
    return items


def _greedy_match(decoder, items, sampling_greedy, checked: int = 16) -> float:
    """Share of batch-1 greedy codes that the batch reproduces (common prefix per item, over all codes), for the
    first `checked` items of the batch (each needs a decoding of its own)."""
    together = decoder.decode(items, sampling_greedy)
    matched = total = 0
    for item, got in zip(items[:checked], together):
        alone = decoder.decode([item], sampling_greedy)[0].codes.tolist()
        same = 0
        for a, b in zip(alone, got.codes.tolist()):
            if a != b:
                break
            same += 1
        matched, total = matched + same, total + max(len(alone), 1)
    return matched / total


def _batch_actor(name, options, speaker_row, device, seconds, batches, window, threads, actor, barrier, results,
                 greedy_check) -> None:
    try:
        import torch

        torch.set_num_threads(threads)
        from pipeline.tts import vits_batched
        from pipeline.tts.base import SynthesisRequest, make_backend
        from pipeline.tts.xtts_batched import BatchedXttsGPT, Sampling, vocode
        from pipeline.voices.pool import Speaker

        backend = make_backend(name, None, **options, device=device)
        speaker = Speaker.model_validate(speaker_row)
        cuda = device.startswith("cuda")
        if name == "xtts":
            gpt_latent, speaker_embedding = backend.latents(speaker)
            decoder = BatchedXttsGPT(backend.model.gpt)
            sampling = Sampling.from_config(backend.config)

        def speak(texts, seed0, totals, cap=None):
            if name == "vits":
                t = time.perf_counter()
                out = vits_batched.synthesize_batch(backend, [SynthesisRequest(x, speaker, "en", seed0 + i)
                                                              for i, x in enumerate(texts)], max_batch=len(texts))
                totals["audio_s"] += sum(w.size / r for w, r in out)
                totals["synth_s"] += time.perf_counter() - t
                return
            items = _xtts_gpt_items(backend, gpt_latent, texts, seed0, cap)
            t = time.perf_counter()
            decoded = decoder.decode(items, sampling)
            if cuda:
                torch.cuda.synchronize()
            t_gpt = time.perf_counter()
            wavs = vocode(backend.model.hifigan_decoder, [d.latents for d in decoded], [speaker_embedding] * len(items))
            t_end = time.perf_counter()
            totals["audio_s"] += sum(w.size for w in wavs) / backend.sample_rate
            totals["codes"] += sum(d.latents.shape[0] for d in decoded)
            totals["gpt_s"] += t_gpt - t
            totals["vocoder_s"] += t_end - t_gpt
            totals["synth_s"] += t_end - t

        for batch in batches:
            windows = turn_windows(batch, window, offset=actor * 5)
            # warm-up at this batch's shape, a few codes per item (allocator, kernels, autotuning), untimed
            unused = {"audio_s": 0.0, "codes": 0, "gpt_s": 0.0, "vocoder_s": 0.0, "synth_s": 0.0}
            speak(next(windows)[0], 0, unused, cap=8)
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            totals = {"audio_s": 0.0, "codes": 0, "gpt_s": 0.0, "vocoder_s": 0.0, "synth_s": 0.0, "turns": 0}
            barrier.wait(timeout=1800)
            started = time.perf_counter()
            rounds = 0
            while time.perf_counter() - started < seconds or rounds < 1:
                for chunk in next(windows):
                    speak(chunk, 100 + totals["turns"], totals)
                    totals["turns"] += len(chunk)
                rounds += 1
            totals["wall_s"] = time.perf_counter() - started
            totals["gpu_mem_gb"] = torch.cuda.max_memory_allocated() / 1e9 if cuda else 0.0
            if greedy_check and name == "xtts" and batch > 1:
                texts = next(windows)[0]
                totals["greedy_match"] = _greedy_match(decoder, _xtts_gpt_items(backend, gpt_latent, texts, 0),
                                                       Sampling.from_config(backend.config, do_sample=False))
            results.put({"batch": batch, "actor": actor, **totals})
            barrier.wait(timeout=1800)  # the next batch size starts together
    except BaseException as exc:  # noqa: BLE001 - the parent reports which actor failed and why
        barrier.abort()
        results.put({"error": f"{type(exc).__name__}: {exc}"})


def measure_tts_batches(name, options, speaker, device, actors, seconds, batches, window, greedy_check) -> list[dict]:
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(actors), ctx.Queue()
    threads = 1 if device.startswith("cuda") else max(1, (os.cpu_count() or 1) // actors)
    procs = [ctx.Process(target=_batch_actor, args=(name, options, speaker, device, seconds, batches, window, threads,
                                                    a, barrier, results, greedy_check)) for a in range(actors)]
    for p in procs:
        p.start()
    rows = []
    try:
        for _ in batches:
            got = [results.get(timeout=seconds * 20 + 3600) for _ in procs]
            errors = [r["error"] for r in got if "error" in r]
            if errors:
                raise RuntimeError(f"{name} with {actors} actors: {errors[0]}")
            wall = max(r["wall_s"] for r in got)
            row = {"backend": name, "actors": actors, "batch": got[0]["batch"], "wall_s": wall,
                   "audio_s": sum(r["audio_s"] for r in got), "turns": sum(r["turns"] for r in got),
                   "audio_s_per_s": sum(r["audio_s"] for r in got) / wall,
                   "rtf_per_actor": sum(r["synth_s"] for r in got) / sum(r["audio_s"] for r in got),
                   "gpu_mem_gb_per_actor": max(r["gpu_mem_gb"] for r in got)}
            if name == "xtts":
                row["gpt_codes_per_s"] = sum(r["codes"] / r["gpt_s"] for r in got)  # the decoder on its own
                row["gpt_share"] = sum(r["gpt_s"] for r in got) / sum(r["synth_s"] for r in got)
                row["codes"] = sum(r["codes"] for r in got)
                if "greedy_match" in got[0]:
                    row["greedy_match"] = sum(r["greedy_match"] for r in got) / len(got)
            rows.append(row)
            print(f"tts {name} x{actors} batch {row['batch']}: {row['audio_s_per_s']:.1f} audio-s/s per device"
                  + (f", GPT {row['gpt_codes_per_s']:.0f} codes/s ({row['gpt_share']:.0%} of the time)"
                     if name == "xtts" else "") + f", {row['turns']} turns", flush=True)
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    base = {r["actors"]: r["audio_s_per_s"] for r in rows if r["batch"] == 1}
    for r in rows:
        if r["actors"] in base:
            r["ratio_to_batch_1"] = r["audio_s_per_s"] / base[r["actors"]]
    return rows


def _gpt_modes_worker(options, speaker_row, device, batch, codes, modes, threads, results) -> None:
    """Codes/s of the GPT decoding alone, one fixed batch repeated (same shapes), in each step variant."""
    try:
        import torch

        torch.set_num_threads(threads)
        from pipeline.tts.base import make_backend
        from pipeline.tts.xtts_batched import BatchedXttsGPT, CudaGraphStep, GptItem, Sampling
        from pipeline.voices.pool import Speaker

        backend = make_backend("xtts", None, **options, device=device)
        gpt_latent, _ = backend.latents(Speaker.model_validate(speaker_row))
        texts = [TURNS[(i * 7) % len(TURNS)] for i in range(batch)]
        items = [GptItem(list(backend.model.tokenizer.encode(t.lower(), lang="en")), gpt_latent, seed=i,
                         max_codes=codes) for i, t in enumerate(texts)]
        sampling = Sampling.from_config(backend.config)
        out = {}
        for mode in modes:
            decoder = BatchedXttsGPT(backend.model.gpt)
            try:
                kwargs = {}
                if mode == "static":
                    kwargs = {"static": True}
                elif mode == "compile":
                    kwargs = {"static": True, "fixed_step": torch.compile(decoder.fixed_step, dynamic=False)}
                elif mode == "graphs":
                    if not device.startswith("cuda"):
                        out[mode] = {"skipped": "CUDA graphs need a CUDA device"}
                        continue
                    kwargs = {"static": True, "fixed_step": CudaGraphStep(decoder)}
                t = time.perf_counter()
                decoder.decode(items, sampling, **kwargs)  # warm-up: compilation, capture, allocator
                warm = time.perf_counter() - t
                runs, generated, t = 0, 0, time.perf_counter()
                while runs < 2 or time.perf_counter() - t < 5:
                    generated += sum(r.latents.shape[0] for r in decoder.decode(items, sampling, **kwargs))
                    runs += 1
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                wall = time.perf_counter() - t
                out[mode] = {"codes_per_s": generated / wall, "warmup_s": warm, "runs": runs}
            except Exception as exc:  # noqa: BLE001 - one variant failing must not lose the others
                out[mode] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            print(f"gpt step {mode}: {out[mode]}", flush=True)
        results.put(out)
    except BaseException as exc:  # noqa: BLE001
        results.put({"error": f"{type(exc).__name__}: {exc}"})


def measure_gpt_modes(options, speaker, device, batch, codes, modes) -> dict:
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    threads = 1 if device.startswith("cuda") else max(1, os.cpu_count() or 1)
    p = ctx.Process(target=_gpt_modes_worker, args=(options, speaker, device, batch, codes, modes, threads, results))
    p.start()
    try:
        out = results.get(timeout=3600)
    finally:
        p.join(timeout=60)
    base = out.get("eager", {}).get("codes_per_s")
    for r in out.values():
        if isinstance(r, dict) and base and "codes_per_s" in r:
            r["ratio_to_eager"] = r["codes_per_s"] / base
    return {"batch": batch, "codes_per_item": codes, **out}


# --- verification ----------------------------------------------------------------------------------------


def faster_whisper_usable(device: str) -> str | None:
    """None if faster-whisper can run on `device` with the packaged models, else why not."""
    if not device.startswith("cuda"):
        return None
    try:
        import ctranslate2

        if ctranslate2.get_cuda_device_count() < 1:
            return "CTranslate2 sees no CUDA device (its wheels need CUDA 12's cuBLAS/cuDNN)"
        from pipeline.assets import packaged_asr

        packaged_asr("base")
    except Exception as exc:  # noqa: BLE001 - any failure means: use the stand-in and say why
        return f"{type(exc).__name__}: {exc}"
    return None


def measure_faster_whisper(model: str, device: str, clip_s: float, batch: int, clips: int) -> dict:
    import numpy as np

    from pipeline.asr.whisper import BatchedWhisperASR
    from pipeline.assets import packaged_asr

    asr = BatchedWhisperASR(packaged_asr(model), "en", "float16", 1, device=device.split(":")[0], batch_size=batch)
    rng = np.random.default_rng(0)
    audio = [0.1 * rng.standard_normal(int(clip_s * 16000)).astype(np.float32) for _ in range(clips)]
    asr.transcribe_many(audio[:batch])
    t = time.perf_counter()
    asr.transcribe_many(audio)
    wall = time.perf_counter() - t
    return {"engine": "faster-whisper", "batch": batch, "audio_s": clips * clip_s, "wall_s": wall,
            "audio_s_per_s": clips * clip_s / wall}


def measure_hf_whisper(shape: str, device: str, clip_s: float, tokens: int, batch: int, clips: int) -> dict:
    """Transformers Whisper of `shape` with random weights, float16 on CUDA: features + encoder + `tokens`
    greedy decoder steps per turn, batched as faster-whisper's batched pipeline does (one 30 s window per turn)."""
    import numpy as np
    import torch
    from transformers import (
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
    )
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(WhisperConfig(vocab_size=51865, num_mel_bins=80, **WHISPER_SHAPES[shape]))
    model = model.to(device=device, dtype=dtype).eval()
    features = WhisperFeatureExtractor(feature_size=80)
    rng = np.random.default_rng(0)
    audio = [0.1 * rng.standard_normal(int(clip_s * 16000)).astype(np.float32) for _ in range(batch)]

    def one_batch() -> None:
        mel = features(audio, sampling_rate=16000, return_tensors="pt").input_features.to(device=device, dtype=dtype)
        with torch.inference_mode():
            enc = model.model.encoder(mel).last_hidden_state
            ids = torch.full((batch, 1), 50258, dtype=torch.long, device=device)  # <|startoftranscript|>
            cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
            for _ in range(tokens):
                out = model.model.decoder(input_ids=ids, encoder_hidden_states=enc, past_key_values=cache, use_cache=True)
                cache = out.past_key_values
                ids = model.proj_out(out.last_hidden_state[:, -1:]).argmax(-1)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    one_batch()  # warm-up
    rounds = max(1, clips // batch)
    t = time.perf_counter()
    for _ in range(rounds):
        one_batch()
    wall = time.perf_counter() - t
    return {"engine": f"transformers whisper-{shape} shape, random weights", "batch": batch, "tokens": tokens,
            "audio_s": rounds * batch * clip_s, "wall_s": wall, "audio_s_per_s": rounds * batch * clip_s / wall}


# --- report ----------------------------------------------------------------------------------------------


def gpu_hours(tts_rate: float, asr_rate: float) -> float:
    """GPU-hours to synthesise and verify HOURS_TARGET hours of audio at these audio-s/s per GPU."""
    return HOURS_TARGET / tts_rate + HOURS_TARGET / asr_rate


def run(args) -> dict:
    import torch

    device = args.device
    batches = getattr(args, "tts_batches", None)
    info = {"device": device, "size": args.size, "seconds": args.seconds, "xtts_codes": args.xtts_codes,
            "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else "none", "tts": {}, "asr": {},
            "torch": torch.__version__, "cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        models = build_models(Path(tmp), args.size)
        info["build_s"] = time.perf_counter() - t
        print(f"models built in {info['build_s']:.0f} s", flush=True)
        if batches:
            info.update(tts_batches=batches, tts_window=args.tts_window, codes_per_char=CODES_PER_CHAR, tts_batched=[])
            for name in args.backends.split(","):
                options, speaker = models[name]
                for actors in args.actors:
                    try:
                        check = device.startswith("cuda") and actors == 1  # greedy match: once per batch size
                        info["tts_batched"] += measure_tts_batches(name, options, speaker, device, actors, args.seconds,
                                                                   batches, args.tts_window, check)
                    except Exception as exc:  # noqa: BLE001 - one failed setting must not lose the others
                        info.setdefault("errors", []).append(f"tts {name} x{actors}: {exc}")
                        print(info["errors"][-1], flush=True)
            modes = [m for m in args.gpt_modes.split(",") if m]
            if "xtts" in args.backends.split(",") and modes:
                options, speaker = models["xtts"]
                try:
                    info["gpt_modes"] = measure_gpt_modes(options, speaker, device, max(batches), args.gpt_mode_codes,
                                                          modes)
                except Exception as exc:  # noqa: BLE001
                    info.setdefault("errors", []).append(f"gpt modes: {type(exc).__name__}: {exc}")
        else:
            for name in args.backends.split(","):
                options, speaker = models[name]
                info["tts"][name] = []
                for actors in args.actors:
                    try:
                        r = measure_tts(name, options, speaker, device, actors, args.seconds, args.xtts_codes)
                    except Exception as exc:  # noqa: BLE001 - one failed setting must not lose the others
                        info.setdefault("errors", []).append(f"tts {name} x{actors}: {exc}")
                        print(info["errors"][-1], flush=True)
                        continue
                    info["tts"][name].append(r)
                    print(f"tts {name} x{actors}: {r['audio_s_per_s']:.1f} audio-s/s per GPU, RTF/actor "
                          f"{r['rtf_per_actor']:.3f}, {r['turns']} turns, {r['gpu_mem_gb_per_actor']:.1f} GB/actor",
                          flush=True)
    if batches and not device.startswith("cuda"):
        info["asr_engine_note"] = "not measured: verification is timed on a GPU only in --tts-batches mode"
        return info
    why_not = faster_whisper_usable(device) if device.startswith("cuda") else "no CUDA device"
    info["asr_engine_note"] = why_not
    for model in ("tiny", "base"):
        info["asr"][model] = []
        for batch in args.asr_batches:
            try:
                if why_not is None:
                    r = measure_faster_whisper({"tiny": "tiny.en"}.get(model, model), device, args.clip_s, batch,
                                               args.asr_clips)
                else:
                    r = measure_hf_whisper(model, device, args.clip_s, args.asr_tokens, batch, args.asr_clips)
            except Exception as exc:  # noqa: BLE001
                info.setdefault("errors", []).append(f"asr {model} batch {batch}: {type(exc).__name__}: {exc}")
                print(info["errors"][-1], flush=True)
                continue
            info["asr"][model].append(r)
            print(f"asr {model} batch {batch}: {r['audio_s_per_s']:.0f} audio-s/s ({r['engine']})", flush=True)
    return info


def batched_table(info: dict) -> str:
    unit = "GPU" if info["device"].startswith("cuda") else "device"
    lines = [(f"Batched TTS on {info['gpu']} ({info['device']}, {info['cpu_count']} CPUs, torch {info['torch']}), "
              f"models {info['size']}-size with random weights, {info['seconds']} s per setting; windows of "
              f"{info['tts_window']} x batch turns sorted by length; XTTS code limit {info['codes_per_char']} per "
              "character"), "",
             f"| backend | actors per {unit} | batch | audio-s/s per {unit} | vs batch 1 | GPT codes/s | GPT share of "
             f"time | greedy codes = batch 1 | {unit} mem/actor | turns |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in info.get("tts_batched", []):
        gpt = f"{r['gpt_codes_per_s']:.1f}" if "gpt_codes_per_s" in r else "-"
        share = f"{r['gpt_share']:.0%}" if "gpt_share" in r else "-"
        match = f"{r['greedy_match']:.1%}" if "greedy_match" in r else "-"
        lines.append(f"| {r['backend']} | {r['actors']} | {r['batch']} | {r['audio_s_per_s']:.2f} | "
                     f"{r.get('ratio_to_batch_1', float('nan')):.2f}x | {gpt} | {share} | {match} | "
                     f"{r['gpu_mem_gb_per_actor']:.1f} GB | {r['turns']} |")
    modes = info.get("gpt_modes")
    if modes:
        lines += ["", f"GPT decoding alone, batch {modes['batch']}, {modes['codes_per_item']} codes per item, the same "
                      "batch repeated:", "", "| step | codes/s | vs eager | warm-up s |", "|---|---|---|---|"]
        for mode, r in modes.items():
            if not isinstance(r, dict):
                continue
            if "codes_per_s" in r:
                lines.append(f"| {mode} | {r['codes_per_s']:.1f} | {r.get('ratio_to_eager', float('nan')):.2f}x | "
                             f"{r['warmup_s']:.1f} |")
            else:
                lines.append(f"| {mode} | {r.get('error') or r.get('skipped')} | - | - |")
    for actors in sorted({r["actors"] for r in info.get("tts_batched", [])}):
        rows = {r["batch"]: r for r in info["tts_batched"] if r["backend"] == "xtts" and r["actors"] == actors}
        if 1 in rows and len(rows) > 1:
            top = max(b for b in rows if b > 1)
            lines.append(f"\nXTTS-v2 shape, {actors} actor(s): batch {top} / batch 1 = "
                         f"{rows[top]['audio_s_per_s'] / rows[1]['audio_s_per_s']:.2f}x whole synthesis, "
                         f"{rows[top]['gpt_codes_per_s'] / rows[1]['gpt_codes_per_s']:.2f}x GPT codes/s")
    for err in info.get("errors", []):
        lines.append(f"\nerror: {err}")
    asr_best = max((r["audio_s_per_s"] for r in info["asr"].get("base", [])), default=None)
    if asr_best:
        for name in ("xtts", "vits"):
            rows = [r for r in info.get("tts_batched", []) if r["backend"] == name]
            if rows:
                best = max(rows, key=lambda r: r["audio_s_per_s"])
                hours = gpu_hours(best["audio_s_per_s"], asr_best)
                lines.append(f"\n{name}: {hours:,.0f} GPU-hours for {HOURS_TARGET:,} h of kept audio at keep rate 1 "
                             f"(TTS batch {best['batch']} x{best['actors']} actors "
                             f"{best['audio_s_per_s']:.1f} audio-s/s "
                             f"+ verify base {asr_best:.0f} audio-s/s); / keep rate {info['keep_rate']}: "
                             f"{hours / info['keep_rate']:,.0f}")
    return "\n".join(lines)


def table(info: dict) -> str:
    lines = [(f"GPU bench on {info['gpu']} ({info['device']}), models {info['size']}-size with random weights, "
             f"{info['seconds']} s per setting; XTTS pieces capped at {info['xtts_codes']} codes"), "",
             "| what | actors or batch | audio-s/s per GPU | RTF per actor | GPU mem/actor |", "|---|---|---|---|---|"]
    for name, rows in info["tts"].items():
        for r in rows:
            lines.append(f"| TTS {name} | {r['actors']} actors | {r['audio_s_per_s']:.1f} | {r['rtf_per_actor']:.3f} | "
                         f"{r['gpu_mem_gb_per_actor']:.1f} GB |")
    for model, rows in info["asr"].items():
        for r in rows:
            lines.append(f"| ASR {model} ({r['engine']}) | batch {r['batch']} | {r['audio_s_per_s']:.0f} | "
                         f"{r['wall_s'] / r['audio_s']:.4f} | - |")
    if info.get("asr_engine_note"):
        lines.append(f"\nASR stand-in used because: {info['asr_engine_note']}")
    for err in info.get("errors", []):
        lines.append(f"\nerror: {err}")
    asr_best = max((r["audio_s_per_s"] for r in info["asr"].get("base", [])), default=None)
    for name, rows in info["tts"].items():
        if not rows or asr_best is None:
            continue
        best = max(rows, key=lambda r: r["audio_s_per_s"])
        lines.append(f"\n{name}: {gpu_hours(best['audio_s_per_s'], asr_best):,.0f} GPU-hours for {HOURS_TARGET:,} h of audio "
                     f"(TTS at {best['actors']} actors/GPU {best['audio_s_per_s']:.1f} audio-s/s + verify with base "
                     f"{asr_best:.0f} audio-s/s)")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--size", choices=("full", "tiny"), default="full")
    ap.add_argument("--backends", default="xtts,vits")
    ap.add_argument("--actors", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4])
    ap.add_argument("--seconds", type=float, default=20.0, help="timed synthesis per TTS setting")
    ap.add_argument("--xtts-codes", type=int, default=150, help="cap on audio codes per XTTS piece (21.5 codes = 1 s)")
    ap.add_argument("--asr-batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16])
    ap.add_argument("--asr-clips", type=int, default=64)
    ap.add_argument("--asr-tokens", type=int, default=24, help="decoder steps per turn for the stand-in")
    ap.add_argument("--clip-s", type=float, default=6.0, help="seconds of speech per verified turn")
    ap.add_argument("--tts-batches", type=lambda s: [int(x) for x in s.split(",")],
                    help="batched synthesis at these batch sizes (e.g. 1,8,32,64) instead of one turn per call")
    ap.add_argument("--tts-window", type=int, default=2, help="turns per window = this x batch (sorted, then chunked)")
    ap.add_argument("--gpt-modes", default=None,
                    help="GPT step variants timed alone at the largest batch (default: eager,static,compile,graphs "
                         "on CUDA; eager,compile on CPU)")
    ap.add_argument("--gpt-mode-codes", type=int, default=None, help="codes per item in the GPT step timing "
                                                                     "(default 150 on CUDA, 48 on CPU)")
    ap.add_argument("--keep-rate", type=float, default=0.75,
                    help="share of synthesised conversations kept: the smoke run (README Measured) kept 9 of the 12 "
                         "that reached TTS (8 of its 20 were rejected on text, before any synthesis)")
    ap.add_argument("--json", help="write the raw measurements here")
    args = ap.parse_args()
    cuda = args.device.startswith("cuda")
    if args.gpt_modes is None:
        args.gpt_modes = "eager,static,compile,graphs" if cuda else "eager,compile"
    if args.gpt_mode_codes is None:
        args.gpt_mode_codes = 150 if cuda else 48
    if args.tts_batches and "--actors" not in " ".join(sys.argv):
        args.actors = [1, 2] if cuda else [1]  # on the CPU a second actor only halves each one's cores
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            ap.error("no CUDA device here; use --device cpu --size tiny to exercise the code path")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    info = run(args)
    info["keep_rate"] = args.keep_rate
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(info, indent=1, default=str))
    print("\n" + (batched_table(info) if args.tts_batches else table(info)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
