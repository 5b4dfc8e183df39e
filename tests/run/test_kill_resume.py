"""Kill -9 the whole job at five points, rerun, and check that nothing is lost or duplicated.

Each interrupted run is a real `python pipeline/main.py run` process (its own local Ray, Piper, faster-whisper,
the session's llama.cpp server); pipeline/faults.py makes it stop and wait at the chosen point, then the test
SIGKILLs it with every child process. Piper's sampling noise is off (tts.piper_noise_*=0) and the LLM is
seeded, so an uninterrupted run's kept and rejected sets are the reference the resumed run must equal.
"""

import os
import signal
import subprocess
import sys
import time

import psutil
import pyarrow.parquet as pq
import pytest
from conftest import small_config

from pipeline.config import REPO_ROOT
from pipeline.io.layout import Layout
from pipeline.io.verify_output import verify_output
from pipeline.run.runner import run

pytestmark = pytest.mark.integration

POINTS = [  # (checkpoint, passes before the kill)
    ("generate", 1),                          # during generation, one conversation already written
    ("tts", 1),                               # during synthesis
    ("verify", 1),                            # during ASR verification
    ("shard.between_tar_and_manifest", 0),    # mid-shard: tar renamed into place, manifest part not yet
    ("shard.after_manifest", 0),              # between shards: the first shard finished, more to come
]


def overrides(base_url):
    return ["plan.num_conversations=3", f"llm.base_url={base_url}", "llm.max_tokens=200", "llm.batch_size=1",
            "plan.exchanges.en.min=1", "plan.exchanges.en.max=1", "tts.piper_noise_scale=0",
            "tts.piper_noise_w_scale=0", "tts.batch_size=1",
            "verify.batch_size=1", "verify.max_actors=1",  # one process counts the passes before a kill point
            "shard.conversations_per_shard=1"]


def kept_ids(out):
    return [r["conversation_id"] for p in Layout(out).manifest_parts() for r in pq.read_table(p).to_pylist()
            if r["exchange_index"] == 0]


def rejected_ids(out):
    return [r["conversation_id"] for p in Layout(out).reject_parts() for r in pq.read_table(p).to_pylist()]


def kill_tree(proc):
    try:
        family = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:  # it ended by itself (the assertion on the marker says why)
        return
    for pid in family:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, ray_session, llm_base_url):
    out = tmp_path_factory.mktemp("baseline") / "ds"
    run(small_config(out, *overrides(llm_base_url)))
    return set(kept_ids(out)), set(rejected_ids(out))


@pytest.mark.parametrize("point, after", POINTS)
def test_kill_at_a_point_then_resume(point, after, baseline, tmp_path, llm_base_url):
    out, marker = tmp_path / "ds", tmp_path / "killed-here"
    env = {**os.environ, "SPEECHCHAT_FAULT_AT": point, "SPEECHCHAT_FAULT_AFTER": str(after),
           "SPEECHCHAT_FAULT_MARKER": str(marker), "SPEECHCHAT_FAULT_WAIT_S": "300"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen([sys.executable, "pipeline/main.py", "run", "--config", "configs/smoke.yaml", "--out", str(out),
                             *overrides(llm_base_url)], cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert marker.exists(), f"the job never reached {point} (exit code {proc.poll()})"
    finally:
        kill_tree(proc)
    if point == "shard.between_tar_and_manifest":
        assert len(Layout(out).shards()) > len(Layout(out).manifest_parts())  # the kill left a torn shard
    stats = run(small_config(out, *overrides(llm_base_url)))  # resume
    assert verify_output(out) == []
    kept, rejected = kept_ids(out), rejected_ids(out)
    assert len(kept) == len(set(kept)) and len(rejected) == len(set(rejected))  # no duplicates
    assert (set(kept), set(rejected)) == baseline  # nothing lost, same outcome as an uninterrupted run
    assert stats["totals"]["conversations_kept"] == len(baseline[0])


FOREIGN = {"notes/draft.tmp": b"my draft", "draft.tmp": b"mine", "data/en/train/holiday-photos.tar": b"photos",
           "data/en/train/holiday-photos.tar.tmp": b"half", "manifest/notes.parquet": b"not a manifest",
           "rejects/mine.parquet": b"x", "text/part-mine.parquet": b"x", "state/notes.txt": b"x"}


def test_a_user_s_files_survive_runs_kills_and_restarts(baseline, tmp_path, llm_base_url):
    """A folder holding the user's files in every subfolder: refused without --adopt-output, then adopted,
    killed mid-shard (a torn shard to clean up), resumed and run again; the user's files are untouched and
    never read as data, the outcome is the uninterrupted run's."""
    out, marker = tmp_path / "ds", tmp_path / "killed-here"
    for rel, data in FOREIGN.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
    cmd = [sys.executable, "pipeline/main.py", "run", "--config", "configs/smoke.yaml", "--out", str(out),
           *overrides(llm_base_url)]
    refused = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "--adopt-output" in refused.stderr and str(out) in refused.stderr
    env = {**os.environ, "SPEECHCHAT_FAULT_AT": "shard.between_tar_and_manifest", "SPEECHCHAT_FAULT_AFTER": "0",
           "SPEECHCHAT_FAULT_MARKER": str(marker), "SPEECHCHAT_FAULT_WAIT_S": "300"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen([*cmd, "--adopt-output"], cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert marker.exists(), f"the job never reached the shard (exit code {proc.poll()})"
    finally:
        kill_tree(proc)
    for _ in range(2):  # the resume, then a run with nothing left to do
        run(small_config(out, *overrides(llm_base_url)))
        assert {rel: (out / rel).read_bytes() for rel in FOREIGN} == FOREIGN
        assert verify_output(out) == []
        assert (set(kept_ids(out)), set(rejected_ids(out))) == baseline
