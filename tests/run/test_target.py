"""Exact-count mode's planning loop. `run_once` (the real pipeline pass, tested end to end in test_e2e) is
replaced here by a stand-in that keeps every other conversation and honours the quota, so that the loop's
arithmetic and bounds can be checked over many rounds in milliseconds."""

import pytest

import pipeline.run.runner as runner
from pipeline.config import REPO_ROOT, load_config


@pytest.fixture()
def fake_pass(monkeypatch, tmp_path):
    state = {"kept": 0, "planned_calls": []}

    def run_once(cfg, stages, text_from, quota=None, adopt_output=False):
        n = cfg.plan.num_conversations
        state["planned_calls"].append(n)
        new = range(state.get("next", 0), n)
        state["next"] = n
        candidates = sum(1 for i in new if i % 2 == 0)  # half of the newly planned conversations survive
        state["kept"] += min(candidates, quota["en"])
        return {"languages": {"en": {"conversations": state["kept"]}}, "totals": {"conversations_kept": state["kept"]}}

    def compute_stats(layout):
        return {"languages": {"en": {"conversations": state["kept"]}}}

    monkeypatch.setattr(runner, "run_once", run_once)
    monkeypatch.setattr(runner, "compute_stats", compute_stats)
    return state


def test_plans_more_until_exactly_the_target_is_kept(fake_pass, tmp_path):
    cfg = load_config(REPO_ROOT / "configs/smoke.yaml", ["target.conversations=10"], tmp_path)
    stats = runner.run(cfg)
    assert fake_pass["kept"] == 10 and stats["target"]["kept"] == {"en": 10}
    assert fake_pass["planned_calls"][0] == 10 and len(fake_pass["planned_calls"]) <= 3
    assert fake_pass["planned_calls"] == sorted(fake_pass["planned_calls"])


def test_stops_at_the_plan_cap(fake_pass, tmp_path):
    cfg = load_config(REPO_ROOT / "configs/smoke.yaml",
                      ["target.conversations=10", "target.max_plan_factor=1.2", "target.max_rounds=10"], tmp_path)
    stats = runner.run(cfg)
    assert max(fake_pass["planned_calls"]) == 12 and stats["target"]["kept"]["en"] == 6


def test_target_refuses_a_dataset_source(tmp_path):
    from pipeline.config import ConfigError

    with pytest.raises(ConfigError, match="target.conversations works with source.kind 'generate'"):
        load_config(REPO_ROOT / "configs/rewrite_en.yaml", ["target.conversations=5", f"source.path={tmp_path}"])


# --- the real thing: llama.cpp, Piper, faster-whisper, a local Ray, and a shard-actor crash ----------------


def planned_ids(out, overrides, planned):
    """Every ID the rounds planned: plan indices 0..planned-1 of the same config (what `speechchat plan` gives)."""
    import pyarrow.parquet as pq

    from pipeline.run.plan_file import write_plan

    cfg = load_config(REPO_ROOT / "configs/smoke.yaml", [*overrides, f"plan.num_conversations={planned}"], out)
    write_plan(cfg, out.parent / "plan.parquet")
    return set(pq.read_table(out.parent / "plan.parquet", columns=["conversation_id"]).column(0).to_pylist())


def exact_run(tmp_path, base_url, want, extra=(), crash=None, note=None):
    """A real `pipeline/main.py run` in exact-count mode; the crash env arms pipeline/faults.py `inject`."""
    import json
    import os
    import sys

    from proc import run as run_proc

    out = tmp_path / "ds"
    overrides = [f"llm.base_url={base_url}", "plan.exchanges.en.min=1", "plan.exchanges.en.max=1", "llm.max_tokens=200",
                 "llm.batch_size=1", "tts.batch_size=1", "verify.batch_size=1", "tts.piper_noise_scale=0",
                 "tts.piper_noise_w_scale=0", "shard.conversations_per_shard=1", f"target.conversations={want}",
                 "target.max_plan_factor=8", "target.max_rounds=5", *extra]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPEECHCHAT_", "RAY_ADDRESS"))}
    env.update({f"SPEECHCHAT_CRASH_{k}": v for k, v in (crash or {}).items()})
    env.update({f"SPEECHCHAT_NOTE_{k}": v for k, v in (note or {}).items()})
    res = run_proc([sys.executable, "pipeline/main.py", "run", "--config", "configs/smoke.yaml", "--out", str(out),
                    *overrides], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=2300)
    assert res.returncode == 0, res.stderr[-3000:]
    stats = json.loads((out / "stats.json").read_text())
    runs = [json.loads(line) for line in (out / "state/runs.jsonl").read_text().splitlines()]
    return out, overrides, stats, runs


def assert_exactly(out, overrides, runs, want):
    import pyarrow.parquet as pq

    from pipeline.io.layout import Layout
    from pipeline.io.verify_output import verify_output

    layout = Layout(out)
    assert verify_output(out) == []
    kept = [r["conversation_id"] for p in layout.manifest_parts() for r in pq.read_table(p).to_pylist()
            if r["exchange_index"] == 0]
    rejected = [r["conversation_id"] for p in layout.reject_parts() for r in pq.read_table(p).to_pylist()]
    assert len(kept) == want == len(set(kept)), f"{len(kept)} kept, target {want}: {kept}"
    planned = max(r["planned"] for r in runs)  # the last round plans the most
    assert set(kept) | set(rejected) == planned_ids(out, overrides, planned)  # every planned ID ends once
    assert not set(kept) & set(rejected) and len(rejected) == len(set(rejected))
    return kept, rejected


@pytest.mark.integration
@pytest.mark.timeout(2400)  # rounds of real SmolLM2 + Piper + Whisper: minutes, more on a loaded machine
def test_exact_count_with_the_real_llm_and_piper_and_a_shard_actor_crash_in_the_last_round(tmp_path, llm_base_url):
    """Real llama.cpp (SmolLM2), Piper, faster-whisper. The shard actor dies (os._exit) on the conversation that took
    the last place of the target, so in the last round by construction (the quota stage notes its ID, the shard
    stage crashes on it); Ray restarts the actor and retries the batch. The output holds exactly the target."""
    marker, last = tmp_path / "crashed", tmp_path / "last-place"
    out, overrides, stats, runs = exact_run(tmp_path, llm_base_url, 2, crash={
        "AT": "shard", "ID": f"@{last}", "MODE": "exit", "MARKER": str(marker)},
        note={"AT": "quota.filled", "FILE": str(last)})
    assert marker.exists(), "the shard actor never got the conversation that filled the target"
    kept, _ = assert_exactly(out, overrides, runs, 2)
    assert last.read_text() in kept  # the crashed batch was retried and its conversation kept, once
    assert stats["totals"]["conversations_kept"] == 2


@pytest.mark.integration
@pytest.mark.timeout(2400)
def test_exact_count_when_the_quota_actor_dies_taking_the_last_place(tmp_path, llm_stub):
    """Deterministic (the replay stub). The quota actor, which counts the places left, dies as it takes the last
    one; its restart must not hand out places that earlier batches of the same round already took."""
    marker = tmp_path / "crashed"
    out, overrides, stats, runs = exact_run(tmp_path, llm_stub.base_url, 3, crash={
        "AT": "quota.filled", "ID": "en", "MODE": "exit", "MARKER": str(marker)})
    assert marker.exists()
    assert_exactly(out, overrides, runs, 3)
