"""A golden run, to prove a restructuring changed no output: the same seeded run made by two checkouts, then
compared file by file. Not a pytest test (it runs two whole pipelines); run it by hand:

    python tests/golden_run.py run --repo OLD_CHECKOUT --out /tmp/golden/old --llm http://127.0.0.1:PORT/v1
    python tests/golden_run.py run --repo .            --out /tmp/golden/new --llm http://127.0.0.1:PORT/v1
    python tests/golden_run.py compare /tmp/golden/old /tmp/golden/new

The LLM must give the same text to both runs: point --llm at the replay stub (`python tests/llm_stub.py
--port PORT`, recorded SmolLM2 answers). Piper's sampling noise is off, so the audio is the same too.
Compared: every sample's JSON (parsed) and audio bytes, the manifest rows without the shard's name, checksum and
byte offset (they carry the run ID and the arrival order), the rejects' columns that both versions have, the
text cache, stats.json without `last_run`, and the resolved config without `out_dir`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

OVERRIDES = ["plan.num_conversations=8", "tts.piper_noise_scale=0", "tts.piper_noise_w_scale=0", "llm.max_tokens=300",
             "shard.conversations_per_shard=64", "verify.max_actors=1", "tts.max_actors=1"]
RUN_SPECIFIC = {"shard", "shard_sha256", "offset"}


def run(repo: Path, out: Path, llm: str) -> int:
    env = {**os.environ, "PYTHONPATH": str(repo)}
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, str(repo / "pipeline/main.py"), "run", "--config", "configs/smoke.yaml", "--out", str(out),
           f"llm.base_url={llm}", *OVERRIDES]
    return subprocess.run(cmd, cwd=repo, env=env, timeout=3600).returncode


def _table(parts: list[Path]) -> list[dict]:
    tables = [pq.read_table(p) for p in parts]
    return pa.concat_tables(tables, promote_options="default").to_pylist() if tables else []


def snapshot(root: Path) -> dict:
    samples = {}
    for tar in sorted(root.glob("data/*/*/*.tar")):
        with tarfile.open(tar) as tf:
            for m in tf:
                data = tf.extractfile(m).read()
                samples[m.name] = json.loads(data) if m.name.endswith(".json") else hashlib.sha256(data).hexdigest()
    manifest = sorted(({k: v for k, v in r.items() if k not in RUN_SPECIFIC} for r in _table(sorted(root.glob("manifest/*.parquet")))),
                      key=lambda r: r["key"])
    rejects = sorted(_table(sorted(root.glob("rejects/*.parquet"))), key=lambda r: r["conversation_id"])
    text = sorted(_table(sorted(root.glob("text/*.parquet"))), key=lambda r: r["conversation_id"])
    stats = json.loads((root / "stats.json").read_text())
    stats.pop("last_run", None)
    config = yaml.safe_load((root / "config.yaml").read_text())
    config.pop("out_dir", None)  # the two runs write to two folders
    return {"samples": samples, "manifest": manifest, "rejects": rejects, "text": text, "stats": stats,
            "config": config}


def compare(a: Path, b: Path) -> int:
    old, new = snapshot(a), snapshot(b)
    problems = []
    for part in ("samples", "manifest", "text", "stats", "config"):
        if old[part] != new[part]:
            problems.append(f"{part} differ")
    common = set(old["rejects"][0]) & set(new["rejects"][0]) if old["rejects"] and new["rejects"] else set()
    if [{k: r[k] for k in common} for r in old["rejects"]] != [{k: r[k] for k in common} for r in new["rejects"]]:
        problems.append("rejects differ")
    print(f"samples: {len(old['samples'])} members vs {len(new['samples'])}; manifest rows {len(old['manifest'])} vs "
          f"{len(new['manifest'])}; rejects {len(old['rejects'])} vs {len(new['rejects'])} (compared on "
          f"{sorted(common)}; new columns: {sorted(set(new['rejects'][0]) - common) if new['rejects'] else []}); "
          f"cached conversations {len(old['text'])} vs {len(new['text'])}")
    print("IDENTICAL" if not problems else "DIFFERENT: " + "; ".join(problems))
    return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run")
    p_run.add_argument("--repo", type=Path, required=True)
    p_run.add_argument("--out", type=Path, required=True)
    p_run.add_argument("--llm", required=True)
    p_cmp = sub.add_parser("compare")
    p_cmp.add_argument("a", type=Path)
    p_cmp.add_argument("b", type=Path)
    args = parser.parse_args()
    if args.command == "run":
        return run(args.repo.resolve(), args.out.resolve(), args.llm)
    return compare(args.a, args.b)


if __name__ == "__main__":
    sys.exit(main())
