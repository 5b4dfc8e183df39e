"""GPU benchmark (issue 9, row 7): TTS real-time factor per actor and per GPU with 1/2/4 actors on one
GPU, Whisper's batched real-time factor, and the GPU-hours that 60,000 hours of audio need.

    python bench/gpu_bench.py --json gpu.json              # on a CUDA machine, ~6 min
    python bench/gpu_bench.py --device cpu --size tiny --seconds 3 --actors 1,2   # the code path, no GPU

TTS runs through the pipeline's own backends (`pipeline.tts.base.make_backend`), each actor a
separate process holding one model on the device, as a Ray actor with `tts.num_gpus: 1/N` would. The
models have the real architectures with random weights (`--size full`: XTTS-v2's 30-layer GPT, HiFi-GAN
decoder and speaker encoder; coqui's standard VITS): a lent machine can download no weights, and the
cost per second of audio is what sizing needs, not the sound. A random GPT rarely says stop, so each
XTTS piece is capped at `--xtts-codes` audio codes (150 codes = 7.0 s, a typical turn); the RTF is
computed on the audio actually produced.

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
    info = {"device": device, "size": args.size, "seconds": args.seconds, "xtts_codes": args.xtts_codes,
            "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else "none", "tts": {}, "asr": {}}
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        models = build_models(Path(tmp), args.size)
        info["build_s"] = time.perf_counter() - t
        print(f"models built in {info['build_s']:.0f} s", flush=True)
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
                      f"{r['rtf_per_actor']:.3f}, {r['turns']} turns, {r['gpu_mem_gb_per_actor']:.1f} GB/actor", flush=True)
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
    ap.add_argument("--json", help="write the raw measurements here")
    args = ap.parse_args()
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            ap.error("no CUDA device here; use --device cpu --size tiny to exercise the code path")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    info = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(info, indent=1, default=str))
    print("\n" + table(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
