"""Exact count (`target.conversations`) end to end: the real llama.cpp server writes the text, Piper speaks it,
faster-whisper checks it, and the shard writer's actor (which holds the quota) dies hard in the last round at the
worst moment: with the quota just filled and one more conversation in hand. The output holds exactly the target.

Round 1 cannot reach the target: a proxy in front of the server answers its requests with HTTP 500 (no retries),
so the run must plan a second round. pipeline/faults.py `inject("quota_full", "*")` ends the actor (os._exit) the
first time a conversation arrives past the quota; Ray restarts it and retries that batch.
"""

import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from fault_proxy import FaultProxy

from pipeline.config import REPO_ROOT
from pipeline.io.layout import Layout
from pipeline.io.verify_output import verify_output

pytestmark = pytest.mark.integration

TARGET = 3


def test_exactly_the_target_is_kept_with_a_shard_actor_crash_in_the_last_round(tmp_path, llm_base_url):
    out, marker = tmp_path / "ds", tmp_path / "crashed"
    settings = [f"target.conversations={TARGET}", "target.max_plan_factor=4", "plan.exchanges.en.min=1",
                "plan.exchanges.en.max=1", "llm.batch_size=1", "llm.max_tokens=200", "llm.max_retries=0", "llm.repair_attempts=1",
                "tts.piper_noise_scale=0", "tts.piper_noise_w_scale=0", "tts.batch_size=1", "verify.batch_size=1",
                "shard.conversations_per_shard=1"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPEECHCHAT_", "RAY_ADDRESS"))}
    env.update(SPEECHCHAT_CRASH_AT="quota_full", SPEECHCHAT_CRASH_ID="*", SPEECHCHAT_CRASH_MODE="exit",
               SPEECHCHAT_CRASH_MARKER=str(marker))
    # round 1: every chat request fails (the client's GET /models probes after each failure pass through)
    with FaultProxy(llm_base_url, ["500"] * TARGET, faults_on_get=False) as proxy:
        proc = subprocess.run([sys.executable, "pipeline/main.py", "run", "--config", "configs/smoke.yaml", "--out",
                               str(out), f"llm.base_url={proxy.base_url}", *settings],
                              cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1500, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "target round 2" in proc.stderr, proc.stderr[-4000:]
    assert marker.exists(), "no conversation arrived past the quota: the crash never happened"

    layout = Layout(out)
    kept = [r["conversation_id"] for p in layout.manifest_parts() for r in pq.read_table(p).to_pylist()
            if r["exchange_index"] == 0]
    rejected = [r for p in layout.reject_parts() for r in pq.read_table(p).to_pylist()]
    assert len(kept) == len(set(kept)) == TARGET  # exactly the target, none twice
    assert not set(kept) & {r["conversation_id"] for r in rejected}
    assert sum(r["reason"] == "llm_http_error" for r in rejected) == TARGET  # round 1
    assert any(r["reason"] == "target_reached" for r in rejected)  # the one in hand when the actor died
    assert verify_output(out) == []
