"""Faults around a run: a TTS actor that dies hard once, one that raises, one that dies on every try;
the LLM server vanishing mid-run; the output disk filling up.

For the worker and disk cases the text is generated once (real llama.cpp server) and cached; every run
speaks it again with `--stages tts,verify,shard` in a real `python pipeline/main.py run` process (its own
local Ray, Piper, faster-whisper tiny.en), with pipeline/faults.py `inject` armed through SPEECHCHAT_CRASH_*
variables (inherited by the Ray workers). Piper's sampling noise is off, so a clean run's kept and rejected
sets are the reference.
"""

import json
import os
import shutil
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
from conftest import small_config

from pipeline.config import REPO_ROOT
from pipeline.io.layout import Layout
from pipeline.io.verify_output import verify_output
from pipeline.run.runner import run
from pipeline.run.selection import StageSelection

pytestmark = pytest.mark.integration

AUDIO = ["tts.piper_noise_scale=0", "tts.piper_noise_w_scale=0", "tts.batch_size=1", "verify.batch_size=1",
         "shard.conversations_per_shard=1"]


def kept_ids(out):
    return [r["conversation_id"] for p in Layout(out).manifest_parts() for r in pq.read_table(p).to_pylist()
            if r["exchange_index"] == 0]


def rejects(out):
    return [r for p in Layout(out).reject_parts() for r in pq.read_table(p).to_pylist()]


@pytest.fixture(scope="module")
def text(tmp_path_factory, ray_session, llm_base_url):
    """Three one-exchange conversations, generated once and cached as text; beside them a speaker pool with
    the packaged Piper voice and a cloned speaker whose reference clip is missing (dropped by preflight)."""
    gen = tmp_path_factory.mktemp("text") / "ds"
    run(small_config(gen, "plan.num_conversations=3", f"llm.base_url={llm_base_url}", "llm.max_tokens=200",
                     "plan.exchanges.en.min=1", "plan.exchanges.en.max=1"), StageSelection.parse("generate"))
    ids = sorted(r["conversation_id"] for p in sorted((gen / "text").glob("*.parquet"))
                 for r in pq.read_table(p, columns=["conversation_id"]).to_pylist())
    assert len(ids) >= 2, "the LLM rejected too much to test with"
    broken = {"speaker_id": "lost-clip", "language": "en", "source": "test", "license": "cc0", "backend": "xtts",
              "references": [{"path": "clips/lost.wav", "duration_s": 3.0, "sample_rate": 22050}]}
    (gen.parent / "pool.jsonl").write_text((REPO_ROOT / "speakers/piper_en.jsonl").read_text() + json.dumps(broken) + "\n")
    return gen, ids


def pool(gen):
    return f"voices.pool={gen.parent / 'pool.jsonl'}"


@pytest.fixture(scope="module")
def baseline(text, tmp_path_factory):
    gen, _ = text
    out = tmp_path_factory.mktemp("clean") / "ds"
    stats = run(small_config(out, *AUDIO, pool(gen)), StageSelection.parse("tts,verify,shard"), text_from=gen)
    # the speaker with the missing clip was dropped before the start, and the run's stats say so
    assert stats["last_run"]["speakers_dropped"] == 1
    assert stats["speakers_dropped"] == [{"speaker_id": "lost-clip", "file": "clips/lost.wav", "problem": "file not found"}]
    return set(kept_ids(out)), {r["conversation_id"] for r in rejects(out)}


def speak(gen, out, crash: dict[str, str], *extra, timeout_s=420):
    """One audio run as its own process; returns (exit code, stderr). A hang fails the test at timeout_s."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPEECHCHAT_", "RAY_ADDRESS"))}
    env.update({f"SPEECHCHAT_CRASH_{k}": v for k, v in crash.items()})
    proc = subprocess.run([sys.executable, "pipeline/main.py", "run", "--config", "configs/smoke.yaml", "--out",
                           str(out), "--stages", "tts,verify,shard", "--text-from", str(gen), *AUDIO, pool(gen),
                           *extra],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)
    return proc.returncode, proc.stderr


def assert_whole(out):
    assert verify_output(out) == []
    kept, rejected = kept_ids(out), [r["conversation_id"] for r in rejects(out)]
    assert len(kept) == len(set(kept)) and len(rejected) == len(set(rejected))  # no duplicates


def test_a_hard_crash_once_is_absorbed_without_loss(text, baseline, tmp_path):
    gen, ids = text
    out, marker = tmp_path / "ds", tmp_path / "crashed"
    rc, err = speak(gen, out, {"AT": "tts", "ID": ids[0], "MODE": "exit", "MARKER": str(marker)})
    assert rc == 0, err[-3000:]
    assert marker.exists()  # the actor really died (os._exit) on that conversation
    assert_whole(out)
    assert (set(kept_ids(out)), {r["conversation_id"] for r in rejects(out)}) == baseline  # nothing lost


def test_an_exception_on_one_conversation_is_a_recorded_tts_rejection(text, baseline, tmp_path):
    gen, ids = text
    out, marker = tmp_path / "ds", tmp_path / "raised"
    rc, err = speak(gen, out, {"AT": "tts", "ID": ids[0], "MODE": "raise", "MARKER": str(marker)})
    assert rc == 0, err[-3000:]
    assert_whole(out)
    [victim] = [r for r in rejects(out) if r["conversation_id"] == ids[0]]
    assert (victim["stage"], victim["reason"]) == ("tts", "tts_error")
    assert victim["details"] == f"InjectedFault: injected fault at tts for {ids[0]}"
    assert set(kept_ids(out)) == baseline[0] - {ids[0]}  # the job went on with the others


def test_a_crash_loop_stops_within_the_bound_and_a_rerun_completes(text, baseline, tmp_path):
    gen, ids = text
    out = tmp_path / "ds"
    # no marker: the actor dies on this conversation every time it is tried
    rc, err = speak(gen, out, {"AT": "tts", "ID": ids[0], "MODE": "exit"},
                    "workers.max_restarts=1", "workers.max_task_retries=1", timeout_s=420)
    assert rc == 3, err[-3000:]
    assert "speechchat: stopped: a worker process (TTS, ASR, LLM client or shard writer) kept crashing" in err
    assert "workers.max_task_retries=1" in err
    assert ids[0] not in kept_ids(out)
    assert_whole(out)  # what is there is consistent
    rc, err = speak(gen, out, {})  # the cause is gone (say, more memory): the rerun resumes and completes
    assert rc == 0, err[-3000:]
    assert_whole(out)
    assert (set(kept_ids(out)), {r["conversation_id"] for r in rejects(out)}) == baseline


# --- the LLM server disappears mid-run ----------------------------------------------------------


def test_llm_server_gone_mid_run_stops_cleanly_and_a_rerun_completes(tmp_path, ray_session, llm_base_url):
    """A second real llama.cpp server is SIGKILLed once the first conversation is generated; the run must
    stop (not hang, not reject the rest as if the text were bad), and a rerun against a fresh server (the
    session's) must finish the remaining IDs without generating the cached one again."""
    from pipeline.assets import smollm2_gguf
    from pipeline.llm.server import LlamaCppServer

    ov = ["plan.num_conversations=3", "llm.max_tokens=200", "llm.batch_size=1", "llm.max_retries=1",
          "llm.timeout_s=60", "plan.exchanges.en.min=1", "plan.exchanges.en.max=1", *AUDIO]
    out, marker = tmp_path / "ds", tmp_path / "first-generated"
    doomed = LlamaCppServer(smollm2_gguf(), "SmolLM2-135M-Instruct", tmp_path / "doomed.log", n_ctx=4096,
                            start_timeout_s=180)
    base_url = doomed.start()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SPEECHCHAT_", "RAY_ADDRESS"))}
        # the generate actor pauses before its second batch: the test kills the server meanwhile
        env.update(SPEECHCHAT_FAULT_AT="generate", SPEECHCHAT_FAULT_AFTER="1", SPEECHCHAT_FAULT_MARKER=str(marker),
                   SPEECHCHAT_FAULT_WAIT_S="10")
        proc = subprocess.Popen([sys.executable, "pipeline/main.py", "run", "--config", "configs/smoke.yaml", "--out",
                                 str(out), f"llm.base_url={base_url}", *ov], cwd=REPO_ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 300
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert marker.exists(), f"the job never reached its second LLM batch (exit code {proc.poll()})"
        doomed.proc.kill()  # SIGKILL: connections refused from now on
        doomed.proc.wait(timeout=30)
        _, err = proc.communicate(timeout=300)  # bounded: a hang fails here
    finally:
        doomed.stop()
    assert proc.returncode == 3, err[-3000:]
    assert f"speechchat: stopped: LLM server {base_url} unreachable after 1 retries" in err
    assert "rerun the same command to resume" in err
    cached_first = [r["conversation_id"] for p in sorted((out / "text").glob("*.parquet"))
                    for r in pq.read_table(p, columns=["conversation_id"]).to_pylist()]
    assert len(cached_first) <= 1  # only what the live server wrote
    assert not [r for r in rejects(out) if r["reason"] in ("llm_unreachable", "llm_timeout", "generate_error")]
    assert verify_output(out) == []
    # the first conversation either sits in the text cache or was already rejected for its content
    first = set(cached_first) | {r["conversation_id"] for r in rejects(out)}
    assert len(first) <= 1

    stats = run(small_config(out, f"llm.base_url={llm_base_url}", *ov))  # a fresh server: resume
    assert_whole(out)
    cached = [r["conversation_id"] for p in sorted((out / "text").glob("*.parquet"))
              for r in pq.read_table(p, columns=["conversation_id"]).to_pylist()]
    assert len(cached) == len(set(cached)) and set(cached_first) <= set(cached)  # nothing generated twice
    done = set(kept_ids(out)) | {r["conversation_id"] for r in rejects(out)}
    assert len(done) == 3  # every planned conversation ends kept or rejected, once
    assert 3 - len(first) <= stats["last_run"]["llm_requests"] <= (3 - len(first)) * 2  # the missing ones only


# --- the output disk fills up -------------------------------------------------------------------


def mount_tiny_disk(where, size_kb):
    """A real small filesystem: tmpfs mounted on a temp folder (needs root; skipped with the reason otherwise)."""
    where.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(where)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()}); the full-disk test needs root")


def test_full_disk_stops_cleanly_and_a_rerun_with_space_completes(text, baseline, tmp_path):
    """The output folder lives on a real 2 MB tmpfs, filled with a ballast file so that less room is left than
    one shard needs; ENOSPC comes from the kernel, not from an injected fault."""
    gen, _ = text
    disk = tmp_path / "disk"
    mount_tiny_disk(disk, 2048)
    try:
        out = disk / "ds"
        st = os.statvfs(disk)
        room = 16 * 1024  # less than one shard (about 200 KB here) plus config, rejects parts and stats
        with open(disk / "ballast", "wb") as fh:
            fh.write(b"\0" * (st.f_bavail * st.f_frsize - room))
        rc, err = speak(gen, out, {})
        assert rc == 3, err[-3000:]
        assert f"speechchat: stopped: disk full: no space left on device while writing to {out}" in err
        assert not list(out.rglob("*.tmp"))  # no half-written file left, none renamed into place
        assert verify_output(out) == []  # what is there is consistent
        (disk / "ballast").unlink()  # space again: the rerun resumes and completes
        rc, err = speak(gen, out, {})
        assert rc == 0, err[-3000:]
        assert_whole(out)
        assert (set(kept_ids(out)), {r["conversation_id"] for r in rejects(out)}) == baseline
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
        shutil.rmtree(disk, ignore_errors=True)
