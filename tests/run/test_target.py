"""Exact-count mode's planning loop. `run_once` (the real pipeline pass, tested end to end in test_e2e) is
replaced here by a stand-in that keeps every other conversation and honours the quota, so that the loop's
arithmetic and bounds can be checked over many rounds in milliseconds."""

import pytest

import pipeline.run.runner as runner
from pipeline.config import REPO_ROOT, load_config


@pytest.fixture()
def fake_pass(monkeypatch, tmp_path):
    state = {"kept": 0, "planned_calls": []}

    def run_once(cfg, stages, text_from, quota=None):
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
