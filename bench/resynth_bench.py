"""Yield and cost of turn-level re-synthesis (verify.resynthesis_rounds), and the two Ray-plan layouts of the loop.

The same conversations (a text cache of fixed English sentences, 2 exchanges each; no LLM) are spoken by Piper
(sampling noise off, so every run speaks the same audio) and verified by faster-whisper tiny.en, through the real
CLI (`pipeline/main.py run --stages tts,verify,shard`), in these runs:

    perfect         no faults, no re-synthesis: what a perfect TTS keeps (the reference)
    faulty          the fault hook makes 10 % of the turns' first syntheses wrong (another text spoken), no loop
    loop pairs      the same faults, resynthesis_rounds=2, layout stage_pairs (repeated tts/verify operators)
    loop one_actor  the same faults, resynthesis_rounds=2, layout one_actor (TTS and verify in one actor, looping)
    perfect loop    (not with --quick) no faults, resynthesis_rounds=2: what the loop costs when nothing fails

DECLARED FAULT INJECTION: the faults come from pipeline/tts/faults.py (SPEECHCHAT_TTS_FAULT), a hook around the
real Piper backend; the same turns are chosen in every faulty run (a hash of conversation ID and turn).
Each run reports kept conversations and audio, busy seconds of TTS and verify (stats.json last_run.cost), the
wall time, and kept audio-seconds per TTS-second and per verify-second.

    python bench/resynth_bench.py --conversations 40
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

FAULT_FRACTION = 0.1
STAGGER_S = 60
EXCHANGES = 2


def cli_run(out: Path, cache: Path, overrides: list[str], fault: str | None, timeout: float, reuse: bool = False) -> dict:
    if reuse and (out / "stats.json").is_file():  # a finished run of an earlier invocation (same cache)
        return run_figures(out, None)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "SPEECHCHAT_TTS_FAULT")}
    if fault:
        env["SPEECHCHAT_TTS_FAULT"] = fault
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "pipeline/main.py", "run", "--config", "configs/smoke.yaml", "--out", str(out),
                           "--stages", "tts,verify,shard", "--text-from", str(cache), "tts.piper_noise_scale=0",
                           "tts.piper_noise_w_scale=0", *overrides], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return run_figures(out, wall)


def run_figures(out: Path, wall: float | None) -> dict:
    stats = json.loads((out / "stats.json").read_text())
    last = stats["last_run"]
    cost = last.get("cost") or {}
    busy = cost.get("busy_s") or {}
    kept_s = last["audio_hours"] * 3600
    return {"kept": last["kept"], "rejected": last["rejected"], "kept_audio_s": round(kept_s, 1),
            "rejected_by_reason": last["rejected_by_reason"], "process_wall_s": round(wall, 1) if wall else None,
            "run_wall_s": last["wall_s"],
            "tts_busy_s": busy.get("tts", 0.0), "verify_busy_s": busy.get("verify", 0.0),
            "kept_audio_s_per_tts_s": round(kept_s / busy["tts"], 3) if busy.get("tts") else None,
            "kept_audio_s_per_verify_s": round(kept_s / busy["verify"], 3) if busy.get("verify") else None,
            "resynthesis": last.get("resynthesis") or {}}


def bench(n: int, workdir: Path, quick: bool, extra: list[str], parallel: bool = False, reuse: bool = False) -> dict:
    from run import write_text_cache

    from pipeline.tts.faults import TTSFaultPlan

    if not reuse:
        shutil.rmtree(workdir, ignore_errors=True)
    cache = workdir / "cache"
    if not (cache / "text").is_dir():
        write_text_cache(cache, n, exchanges=EXCHANGES)
    fault = TTSFaultPlan(mode="wrong_text", fraction=FAULT_FRACTION, attempts=1).to_env()
    timeout = 600 + 60 * n  # generous: a shared 2-core machine can be 20x oversubscribed
    runs = {
        "perfect": (["verify.resynthesis_rounds=0"], None),
        "faulty": (["verify.resynthesis_rounds=0"], fault),
        "loop_pairs": (["verify.resynthesis_rounds=2", "verify.resynthesis_layout=stage_pairs"], fault),
        "loop_one_actor": (["verify.resynthesis_rounds=2", "verify.resynthesis_layout=one_actor"], fault),
    }
    if not quick:
        runs["perfect_loop"] = (["verify.resynthesis_rounds=2"], None)
    out: dict = {"conversations": n, "exchanges": EXCHANGES, "fault_fraction": FAULT_FRACTION, "overrides": extra,
                 "fault_hook": "declared: pipeline/tts/faults.py wrong_text on the chosen turns' first synthesis",
                 "parallel": parallel}
    if parallel:  # every run at once: on a machine shared with other jobs they then see the same contention
        from concurrent.futures import ThreadPoolExecutor

        def staggered(k: int, *a):  # Ray's start-up times out when several local clusters start at once
            time.sleep(STAGGER_S * k)
            return cli_run(*a)

        with ThreadPoolExecutor(len(runs)) as pool:
            futures = {name: pool.submit(staggered, k, workdir / name, cache, o + extra, env, timeout, reuse)
                       for k, (name, (o, env)) in enumerate(runs.items())}
            for name, f in futures.items():
                try:
                    out[name] = f.result()
                except Exception as exc:  # one failed run must not hide the others
                    out[name] = {"error": f"{type(exc).__name__}: {str(exc)[-500:]}"}
    else:
        for name, (overrides, env) in runs.items():
            out[name] = cli_run(workdir / name, cache, overrides + extra, env, timeout, reuse)
    perfect = max(out["perfect"].get("kept", 0), 1)
    out["kept_vs_perfect"] = {name: round(out[name]["kept"] / perfect, 3) for name in runs if "kept" in out[name]}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--conversations", type=int, default=40)
    ap.add_argument("--quick", action="store_true", help="skip the perfect-loop run")
    ap.add_argument("--workdir", default="/tmp/speechchat-resynth-bench")
    ap.add_argument("--set", action="append", default=[], help="config override for every run")
    ap.add_argument("--parallel", action="store_true", help="start every run at once (each its own Ray): on a shared, "
                                                            "loaded machine the runs then meet the same contention")
    ap.add_argument("--reuse", action="store_true", help="keep the workdir; a run whose output has a stats.json is "
                                                         "read, not run again")
    args = ap.parse_args()
    print(json.dumps(bench(args.conversations, Path(args.workdir), args.quick, args.set, args.parallel, args.reuse),
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
