"""TTS backend benchmark: real-time factor per actor, and throughput with 1 vs 2 actors.

    python bench/tts_bench.py [--turns 24] [--backends piper,vits,xtts]

piper is the packaged en_US joe voice; vits and xtts are the tiny randomly initialised Coqui models the
tests build (tests/tiny_coqui.py), so their numbers measure the pipeline's Coqui code path and the
machine, not the real models' speed. Each "actor" is a worker process holding one backend with one
torch/ONNX thread, as a Ray actor with num_cpus=1 would. For every backend it prints
  RTF   - synthesis seconds per second of audio in one actor (lower is faster),
  1 / 2 - turns per second with one and with two actors on the same turns,
  ratio - throughput(2 actors) / throughput(1 actor), measured in the same run (ideal 2.0 with 2 free cores).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

TEXTS = ["Where is the nearest train station?", "It is two streets away, right next to the old bank.",
         "Could you tell me what time the museum opens tomorrow morning?",
         "The museum opens at nine, but the queue starts a little earlier.",
         "I would like a cup of tea with some milk, please.", "Of course, would you like anything to eat with it?"]

_backend = None
_speaker = None


def _init(name: str, options: dict, speaker: dict) -> None:
    global _backend, _speaker
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    from pipeline.tts.base import make_backend
    from pipeline.voices.pool import Speaker

    _backend = make_backend(name, None, **options)
    _speaker = Speaker.model_validate(speaker)
    _backend.synthesize("warm up", _speaker, language="en", seed=0)  # first-call costs stay out of the timing


def _speak(i: int) -> tuple[float, float]:
    text = TEXTS[i % len(TEXTS)]
    t = time.perf_counter()
    samples, rate = _backend.synthesize(text, _speaker, language="en", seed=i)
    return time.perf_counter() - t, samples.size / rate


def _ready(_: int) -> int:
    return os.getpid()


def measure(name: str, options: dict, speaker: dict, turns: int, actors: int) -> tuple[float, float]:
    """(turns per second, synthesis seconds per audio second) with `actors` worker processes."""
    with ProcessPoolExecutor(actors, initializer=_init, initargs=(name, options, speaker)) as pool:
        pids = set(pool.map(_ready, range(actors * 4)))  # make every worker load its model before timing
        assert pids
        t = time.perf_counter()
        results = list(pool.map(_speak, range(turns)))
        wall = time.perf_counter() - t
    synth, audio = sum(r[0] for r in results), sum(r[1] for r in results)
    return turns / wall, synth / max(audio, 1e-9)


def setups(names: list[str], tmp: Path) -> list[tuple[str, str, dict, dict]]:
    out = []
    base = {"language": "en", "source": "bench", "license": "bench"}
    if "piper" in names:
        out.append(("piper", "piper", {"noise_scale": 0.667, "noise_w_scale": 0.8},
                    {**base, "speaker_id": "joe", "backend": "piper"}))
    if "vits" in names:
        from tiny_coqui import build_tiny_vits

        model = build_tiny_vits(tmp / "vits", num_speakers=2000)
        out.append(("vits (tiny random, 2000 spk)", "vits", {"model": str(model), "device": "cpu"},
                    {**base, "speaker_id": "v7", "backend": "vits", "speaker_index": 7}))
    if "xtts" in names:
        from tiny_coqui import build_tiny_xtts, write_clip

        model = build_tiny_xtts(tmp / "xtts")
        write_clip(tmp / "pool/a.wav", seed=1)
        pool_file = tmp / "pool/pool.jsonl"
        pool_file.write_text("")
        spk = {**base, "speaker_id": "xa", "backend": "xtts",
               "references": [{"path": "a.wav", "duration_s": 3.0, "sample_rate": 22050}]}
        out.append(("xtts (tiny random)", "xtts", {"model": str(model), "device": "cpu", "pool_file": pool_file,
                                                   "latent_dir": tmp / "latents"}, spk))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--turns", type=int, default=24)
    ap.add_argument("--backends", default="piper,vits,xtts")
    args = ap.parse_args()
    print(f"cpus: {os.cpu_count()}, load average at start: {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, name, options, speaker in setups(args.backends.split(","), Path(tmp)):
            thr1, rtf = measure(name, options, speaker, args.turns, 1)
            thr2, _ = measure(name, options, speaker, args.turns, 2)
            rows.append((label, rtf, thr1, thr2, thr2 / thr1))
            print(f"  done: {label}", flush=True)
    print(f"\n{'backend':<30} {'RTF/actor':>10} {'turns/s 1':>10} {'turns/s 2':>10} {'2 vs 1':>8}")
    for label, rtf, thr1, thr2, ratio in rows:
        print(f"{label:<30} {rtf:>10.4f} {thr1:>10.2f} {thr2:>10.2f} {ratio:>7.2f}x")
    print(f"load average at end: {os.getloadavg()[0]:.1f} (other work on this machine skews the 2-actor ratio)")


if __name__ == "__main__":
    main()
