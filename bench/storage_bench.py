"""Object storage: the shard writer to a local S3 server against a raw upload of the same bytes, and a smoke run
to S3 against the same run to local disk. Ratios against baselines measured in the same invocation.

    python bench/storage_bench.py                 # shard writer rows (a minute or two)
    python bench/storage_bench.py --runs          # plus the smoke run to S3 vs to local disk (minutes)

The S3 server is moto's standalone server (tests/s3_server.py) on 127.0.0.1: a Python server, so absolute MB/s
are its, not S3's; the ratio says what the writer costs on top of moving the bytes. Rows:
  shard writer vs put_object   write_shard (tar encode + sha256 + streamed multipart upload + manifest part)
                               vs one put_object of the finished tar's bytes (already in memory)
  shard writer, one PUT        the same with the shard under the multipart threshold (tar encode + sha256 + PUT)
  shard writer vs pyarrow      the same against pyarrow.fs.S3FileSystem's output stream
  smoke run S3 vs local        wall time of `pipeline/main.py run` to a local folder / to s3:// (same config)
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]


def shard_rows(conversations: int, audio_kb: int) -> list[dict]:
    """Conversations as the shard writer receives them, each turn with `audio_kb` of audio bytes (incompressible:
    FLAC payloads are)."""
    from rows import shard_conversation as conversation

    from pipeline.schema import rows_to_table

    rows = rows_to_table([conversation(i, 2) for i in range(1, conversations + 1)]).to_pylist()
    for row in rows:
        for turn in row["turns"]:
            turn["audio_flac"] = turn["audio_flac"][:64] + os.urandom(audio_kb << 10)
    return rows


def best_of(n: int, fn) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def writer_rows(repeats: int, conversations: int, audio_kb: int, part_mb: int = 8) -> list[tuple[str, float, str]]:
    import pyarrow.fs as pafs
    from s3_server import make_bucket, s3fs_client

    from pipeline.io.layout import Layout
    from pipeline.io.shard_writer import write_shard, write_tar
    from pipeline.schema import conversation_samples

    bucket = make_bucket(f"bench-{os.getpid()}")
    rows = shard_rows(conversations, audio_kb)
    buf = io.BytesIO()
    write_tar(buf, (s for r in rows for s in conversation_samples(r, ["t"])))
    data = buf.getvalue()
    mb = len(data) / 1e6
    layout = Layout(f"{bucket}/writer", {"part_size_mb": part_mb, "multipart_threshold_mb": 8})
    fs = s3fs_client()
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    arrow = pafs.S3FileSystem(endpoint_override=endpoint, region="us-east-1")
    runs = iter(range(10_000))

    def writer():
        write_shard(layout, f"shard-rb-{next(runs):012x}", rows, "en", "train", ["t"])

    one_put = Layout(f"{bucket}/one-put", {"part_size_mb": part_mb, "multipart_threshold_mb": 4096})

    def writer_one_put():
        write_shard(one_put, f"shard-rb-{next(runs):012x}", rows, "en", "train", ["t"])

    def put_object():
        fs.call_s3("put_object", Bucket=bucket[5:], Key=f"raw/{next(runs)}.tar", Body=data)

    def pyarrow_stream():
        with arrow.open_output_stream(f"{bucket[5:]}/arrow/{next(runs)}.tar") as out:
            for i in range(0, len(data), 1 << 20):
                out.write(data[i:i + 1 << 20])

    writer()  # warm: connections, thread pools
    t_writer = best_of(repeats, writer)
    t_put = best_of(repeats, put_object)
    writer_one_put()
    t_one = best_of(repeats, writer_one_put)
    rows = [("shard writer vs put_object", t_put / t_writer,
             f"{mb:.1f} MB tar, {part_mb} MB parts: writer {mb / t_writer:.1f} MB/s, put_object {mb / t_put:.1f} MB/s (best of {repeats})")]
    rows.append(("shard writer, one PUT, vs put_object", t_put / t_one,
                 f"the same shard under storage.multipart_threshold_mb: writer {mb / t_one:.1f} MB/s (what the "
                 f"multipart protocol costs on this server: the row above against this one)"))
    try:
        t_arrow = best_of(repeats, pyarrow_stream)
        rows.append(("shard writer vs pyarrow", t_arrow / t_writer,
                     f"writer {mb / t_writer:.1f} MB/s, pyarrow output stream {mb / t_arrow:.1f} MB/s"))
    except OSError as exc:  # moto's server refuses pyarrow's CompleteMultipartUpload (INTERNAL_FAILURE)
        rows.append(("shard writer vs pyarrow", float("nan"), f"not measured: {str(exc).splitlines()[0][:120]}"))
    return rows


def run_rows(conversations: int) -> list[tuple[str, float, str]]:
    from s3_server import make_bucket

    bucket = make_bucket(f"bench-run-{os.getpid()}")
    common = ["--config", "configs/smoke.yaml", f"plan.num_conversations={conversations}", "plan.exchanges.en.min=1",
              "plan.exchanges.en.max=1", "llm.max_tokens=200"]
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, out in (("local", f"{tmp}/local"), ("s3", f"{bucket}/run")):
            t = time.perf_counter()
            subprocess.run([sys.executable, "pipeline/main.py", "run", "--out", out, *common], cwd=REPO, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=3600)
            times[name] = time.perf_counter() - t
    return [("smoke run S3 vs local", times["local"] / times["s3"],
             f"{conversations} conversations: local {times['local']:.0f} s, S3 {times['s3']:.0f} s (one run each)")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--conversations", type=int, default=64, help="conversations in the benchmark shard")
    ap.add_argument("--audio-kb", type=int, default=96, help="audio bytes per turn")
    ap.add_argument("--part-mb", type=int, default=8, help="storage.part_size_mb of the writer")
    ap.add_argument("--runs", action="store_true", help="also time a smoke run to S3 and to local disk")
    ap.add_argument("--run-conversations", type=int, default=4)
    args = ap.parse_args()
    from s3_server import S3Server, free_port

    port = free_port()
    os.environ.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true", RAY_AUTH_MODE="disabled")
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp, S3Server(port, Path(tmp) / "moto.log"):
        rows = writer_rows(args.repeats, args.conversations, args.audio_kb, args.part_mb)
        if args.runs:
            rows += run_rows(args.run_conversations)
    print(f"load average at start {load:.1f}, {os.cpu_count()} CPUs; target >= 0.8 for the writer rows")
    print("| row | ratio | details |\n|---|---|---|")
    for name, ratio, details in rows:
        print(f"| {name} | {ratio:.2f} | {details} |")
    return 0 if statistics.fmean(r for _, r, _ in rows[:1]) > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
