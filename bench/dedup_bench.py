"""Near-duplicate removal: time and memory per million conversations, against baselines from the same run.

    python bench/dedup_bench.py                 # 200,000 conversations (a few minutes on 2 cores)
    python bench/dedup_bench.py --n 1000000     # the full million

Synthetic English conversations (4 turns of 12-30 words drawn from a Zipf vocabulary, 5 % of them light
edits of an earlier one) go through what the dedup step does per conversation: canonical tokens -> word
2-gram shingles -> a datasketch MinHash (128 permutations) -> the LSH index (`NearDupIndex`, the band table).
Each measurement runs in its own process, so its peak RSS is its own. Rows:

- signatures: shingling + MinHash, conversations/s on one core;
- index (ours): NearDupIndex.check on precomputed signatures: conversations/s, bytes per conversation
  (arrays) and peak RSS over the process's baseline, extrapolated linearly to 1M (arrays grow linearly);
- datasketch MinHashLSH (dict storage): the same checks through datasketch's own in-memory index, the
  baseline, at --baseline-n (its Python sets cost kilobytes per entry, so it runs smaller);
- exact dedup: a set of 64-bit hashes of the canonical text (finds only exact copies): the floor.
Ratios compare ours with the baselines. Recall/precision on the planted edits are printed too.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.quality.near_dup import NearDupIndex, ShingleSettings, Signer, tokens  # noqa: E402

THRESHOLD = 0.7
BATCH = 64
SETTINGS = ShingleSettings()


def conversations(n: int, seed: int = 0) -> tuple[list[list[str]], np.ndarray]:
    """n conversations; copy_of[i] = index of the conversation i lightly edits (one changed word), or -1."""
    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{i}" for i in range(20000)])
    ranks = np.arange(1, len(vocab) + 1)
    lengths = rng.integers(12, 31, size=(n, 4))
    # every word of every turn in one weighted draw (a draw per turn spends its time rebuilding the CDF)
    words = vocab[rng.choice(len(vocab), size=int(lengths.sum()), p=(1 / ranks) / (1 / ranks).sum())].tolist()
    out: list[list[str]] = []
    copy_of = np.full(n, -1, dtype=np.int64)
    pos = 0
    for i in range(n):
        fresh = []
        for length in lengths[i]:
            fresh.append(" ".join(words[pos:pos + length]))
            pos += length
        if i > 100 and rng.random() < 0.05:
            src = int(rng.integers(0, i))
            turns = list(out[src])
            t = int(rng.integers(0, len(turns)))
            turn = turns[t].split()
            turn[int(rng.integers(0, len(turn)))] = str(vocab[int(rng.integers(0, len(vocab)))])
            turns[t] = " ".join(turn)
            copy_of[i] = src if copy_of[src] < 0 else copy_of[src]
            out.append(turns)
        else:
            out.append(fresh)
    return out, copy_of


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(kind: str, n: int, total: int, cache: Path) -> dict:
    convs, copy_of = conversations(total)  # the same conversations in every worker; this one takes the first n
    convs, copy_of = convs[:n], copy_of[:n]
    if kind == "signatures":
        signer = Signer(SETTINGS)
        start = time.perf_counter()
        sigs = signer.signatures(convs, ["en"] * n)
        seconds = time.perf_counter() - start
        np.save(cache, sigs)
        return {"seconds": seconds, "per_s": n / seconds}
    if kind == "exact":
        keys = [" ".join(t for text in turns for t in tokens(text, "en")).encode() for turns in convs]
        del convs, copy_of
        base = rss_mb()
        start = time.perf_counter()
        seen: set[int] = set()
        dups = 0
        for key in keys:
            h = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")
            dups += h in seen
            seen.add(h)
        seconds = time.perf_counter() - start
        return {"seconds": seconds, "per_s": n / seconds, "rss_mb": rss_mb() - base, "found": dups}
    sigs = np.load(cache)[:n]
    del convs
    ids = [f"en-{i:016x}" for i in range(n)]
    base = rss_mb()
    start = time.perf_counter()
    if kind == "ours":
        index = NearDupIndex(THRESHOLD, SETTINGS)
        verdicts = []
        for lo in range(0, n, BATCH):  # the stage gets batches of conversations
            verdicts += index.check_many(ids[lo:lo + BATCH], sigs[lo:lo + BATCH])
        index.flush()  # everything in the sorted arrays, none in the recent-insert dict: the steady state
        extra = {"array_bytes_per_conversation": index.nbytes() / n, "bands": index.bands, "rows": index.rows}
    else:
        from datasketch import LeanMinHash, MinHashLSH

        from pipeline.quality.near_dup import LSH_WEIGHTS

        lsh = MinHashLSH(threshold=THRESHOLD, num_perm=SETTINGS.num_perm, weights=LSH_WEIGHTS)
        verdicts = []
        for i, sig in enumerate(sigs):
            m = LeanMinHash(seed=SETTINGS.seed, hashvalues=sig, scheme="affine32")
            found = lsh.query(m)
            if found:
                verdicts.append(f"en-{min(found):016x}")
            else:
                verdicts.append(None)
                lsh.insert(i, m, check_duplication=False)
        extra = {}
    seconds = time.perf_counter() - start
    flagged = np.array([v is not None for v in verdicts])
    planted = copy_of >= 0
    return {"seconds": seconds, "per_s": n / seconds, "rss_mb": rss_mb() - base, "peak_rss_mb": peak_mb(),
            "recall": float((flagged & planted).sum() / max(planted.sum(), 1)),
            "false_positives": int((flagged & ~planted).sum()), "planted": int(planted.sum()), **extra}


def run(kind: str, n: int, total: int, cache: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", kind, "--n", str(n), "--total", str(total),
                          "--cache", str(cache)],
                         capture_output=True, text=True, timeout=3600, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000, help="conversations for the signatures and our index")
    parser.add_argument("--baseline-n", type=int, default=50_000, help="conversations for datasketch's MinHashLSH")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--total", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/speechchat-dedup-bench-signatures.npy"))
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.n, args.total or args.n, args.cache)))
        return
    started = time.time()
    n, small = args.n, args.baseline_n
    sig = run("signatures", n, n, args.cache)
    # memory per conversation is the slope between two sizes: fixed costs (imports, the bounded buffer of recent
    # inserts, allocator slack) cancel out
    ours = {m: run("ours", m, n, args.cache) for m in (small, n)}
    theirs = {m: run("datasketch", m, n, args.cache) for m in (small // 2, small)}
    exact = {m: run("exact", m, n, args.cache) for m in (small, n)}

    def per_million_mb(results: dict) -> float:
        (a, ra), (b, rb) = sorted(results.items())
        return (rb["rss_mb"] - ra["rss_mb"]) / (b - a) * 1_000_000

    per_m = 1_000_000
    mem_ours, mem_theirs, mem_exact = per_million_mb(ours), per_million_mb(theirs), per_million_mb(exact)
    big, ds = ours[n], theirs[small]
    print(f"# dedup bench, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f} at the end; n={n:,}, baseline n={small:,}")
    print(f"index: threshold {THRESHOLD}, {SETTINGS.num_perm} permutations, {big['bands']} bands x {big['rows']} "
          "rows; memory per 1M = RSS slope between the two sizes, extrapolated linearly")
    print("| what | n | conversations/s | time per 1M | memory per 1M | recall / false positives |")
    print("|---|---|---|---|---|---|")
    print(f"| signatures (shingles + MinHash, 1 core) | {n:,} | {sig['per_s']:,.0f} | "
          f"{per_m / sig['per_s'] / 60:.1f} min | - | - |")
    for m, r in ours.items():
        print(f"| NearDupIndex (band table) | {m:,} | {r['per_s']:,.0f} | {per_m / r['per_s']:.0f} s | "
              f"{mem_ours:,.0f} MB ({r['array_bytes_per_conversation']:.0f} B/conv. in arrays) | "
              f"{r['recall']:.3f} / {r['false_positives']} ({r['planted']} planted) |")
    for m, r in theirs.items():
        print(f"| datasketch MinHashLSH, dict storage (baseline) | {m:,} | {r['per_s']:,.0f} | "
              f"{per_m / r['per_s']:.0f} s | {mem_theirs:,.0f} MB | {r['recall']:.3f} / {r['false_positives']} "
              f"({r['planted']} planted) |")
    for m, r in exact.items():
        print(f"| exact dedup, set of 64-bit hashes (floor) | {m:,} | {r['per_s']:,.0f} | {per_m / r['per_s']:.0f} s "
              f"| {mem_exact:,.0f} MB | exact copies only: {r['found']} found |")
    whole = 1 / (1 / sig["per_s"] + 1 / big["per_s"])
    print(f"\nratios, same run: index memory datasketch/ours {mem_theirs / mem_ours:.1f}x; index checks "
          f"ours/datasketch {ours[small]['per_s'] / ds['per_s']:.2f}x (both at n={small:,}); exact-hash/ours checks "
          f"{exact[n]['per_s'] / big['per_s']:.2f}x")
    print(f"dedup step (signature + check) on one core: {whole:,.0f} conversations/s = "
          f"{per_m / whole / 60:.1f} min per 1M")
    print(f"7M conversations in one index actor: ~{mem_ours * 7 / 1024:.1f} GB, checks "
          f"~{7 * per_m / big['per_s'] / 60:.0f} min; signatures ~{7 * per_m / sig['per_s'] / 3600:.1f} core-hours "
          "(stateless: any number of tasks)")


if __name__ == "__main__":
    main()
