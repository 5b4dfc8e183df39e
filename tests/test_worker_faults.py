"""Worker faults: a TTS actor that dies hard once, one that raises, and one that dies on every try.

The text is generated once (real llama.cpp server) and cached; every run here speaks it again with
`--stages tts,verify,shard` in a real `python pipeline/main.py run` process (its own local Ray, Piper,
faster-whisper tiny.en), with pipeline/faults.py `inject` armed through SPEECHCHAT_CRASH_* variables
(inherited by the Ray workers). Piper's sampling noise is off, so a clean run's kept and rejected sets
are the reference.
"""

import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from pipeline.config import REPO_ROOT
from pipeline.io.layout import Layout
from pipeline.io.verify_output import verify_output
from pipeline.main import StageSelection, run

from conftest import small_config

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
    """Three one-exchange conversations, generated once and cached as text."""
    gen = tmp_path_factory.mktemp("text") / "ds"
    run(small_config(gen, "plan.num_conversations=3", f"llm.base_url={llm_base_url}", "llm.max_tokens=200",
                     "plan.exchanges.en.min=1", "plan.exchanges.en.max=1"), StageSelection.parse("generate"))
    ids = sorted(r["conversation_id"] for p in sorted((gen / "text").glob("*.parquet"))
                 for r in pq.read_table(p, columns=["conversation_id"]).to_pylist())
    assert len(ids) >= 2, "the LLM rejected too much to test with"
    return gen, ids


@pytest.fixture(scope="module")
def baseline(text, tmp_path_factory):
    gen, _ = text
    out = tmp_path_factory.mktemp("clean") / "ds"
    run(small_config(out, *AUDIO), StageSelection.parse("tts,verify,shard"), text_from=gen)
    return set(kept_ids(out)), {r["conversation_id"] for r in rejects(out)}


def speak(gen, out, crash: dict[str, str], *extra, timeout_s=420):
    """One audio run as its own process; returns (exit code, stderr). A hang fails the test at timeout_s."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPEECHCHAT_", "RAY_ADDRESS"))}
    env.update({f"SPEECHCHAT_CRASH_{k}": v for k, v in crash.items()})
    proc = subprocess.run([sys.executable, "pipeline/main.py", "run", "--config", "configs/smoke.yaml", "--out",
                           str(out), "--stages", "tts,verify,shard", "--text-from", str(gen), *AUDIO, *extra],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)
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
