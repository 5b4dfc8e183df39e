"""The judge stage against the real llama.cpp server (SmolLM2; its scores are weak, so what is checked is the
plumbing, the thresholds and the failures), and a judge that answers garbage, hangs, or is not there at all:
the batch always comes back whole, every conversation kept unscored (or rejected as `judge_failed`)."""

import socket
import time

import pytest
from fault_proxy import FaultProxy
from text_data import BREAD, HOUSEPLANT, conversation

from pipeline.config import REPO_ROOT, JudgeConfig
from pipeline.llm.judge import CRITERIA, NOT_SCORED
from pipeline.schema import rejects_rows, rows_to_table
from pipeline.stages.judge import JudgeStage

pytestmark = pytest.mark.integration

ROWS = [conversation(1, HOUSEPLANT), conversation(2, BREAD)]


def judge(base_url, **settings):
    # thresholds at 1 unless a test sets them: SmolLM2's scores are not what these tests are about
    cfg = JudgeConfig(**{"enabled": True, "max_tokens": 80, "min_scores": dict.fromkeys(CRITERIA, 1), **settings})
    return JudgeStage(cfg, base_url, REPO_ROOT / "prompts", "SmolLM2-135M-Instruct", "json_object_schema")


def judged(stage, rows=ROWS):
    out = stage(rows_to_table(rows)).to_pylist()
    assert [r["conversation_id"] for r in out] == [r["conversation_id"] for r in rows]  # nothing lost
    return out


def test_real_judge_scores_and_thresholds(llm_base_url):
    # the strictest thresholds: a conversation is rejected exactly when one of its scores is under 5, and the
    # rejection lists each criterion it missed with its score
    for row in judged(judge(llm_base_url, min_scores=dict.fromkeys(CRITERIA, 5))):
        assert row["judge_model"] == "SmolLM2-135M-Instruct" and set(row["judge_scores"]) == set(CRITERIA)
        assert all(1 <= s <= 5 for s in row["judge_scores"].values()), row["judge_scores"]
        missed = {c: s for c, s in row["judge_scores"].items() if s < 5}
        assert (row["reject_reason"] == "judge_below_threshold") == bool(missed), row
        if missed:
            assert {f["metric"]: f["value"] for f in row["reject_failures"]} == missed
            assert all(f["limit"] == 5 for f in row["reject_failures"])
            assert rejects_rows([row])[0]["metric"] in missed


def test_garbage_answers_are_repaired_then_left_unscored(llm_base_url):
    with FaultProxy(llm_base_url, ["bad_json"]) as proxy:  # the first answer is prose; the repair request is not
        [row] = judged(judge(proxy.base_url, repair_attempts=1, concurrency=1), ROWS[:1])
    assert proxy.seen[:2] == ["bad_json", "pass"]
    assert row["reject_reason"] is None and all(1 <= s <= 5 for s in row["judge_scores"].values())
    # garbage every time (max_tokens=16: the answers are replaced by prose anyway)
    with FaultProxy(llm_base_url, ["bad_json"] * 3) as proxy:
        [row] = judged(judge(proxy.base_url, repair_attempts=1, max_tokens=16), ROWS[:1])
    assert proxy.seen == ["bad_json"] * 2  # 1 try + 1 repair, then stop: bounded
    assert row["reject_reason"] is None and row["judge_scores"] == dict.fromkeys(CRITERIA, NOT_SCORED)
    with FaultProxy(llm_base_url, ["bad_json"]) as proxy:
        [row] = judged(judge(proxy.base_url, repair_attempts=0, on_error="reject", max_tokens=16), ROWS[:1])
    assert (row["reject_stage"], row["reject_reason"]) == ("judge", "judge_failed")
    assert row["reject_details"].startswith("judge_not_json")


def test_a_slow_judge_times_out_within_its_bound(llm_base_url):
    with FaultProxy(llm_base_url, ["hang"] * 4, hang_s=60.0) as proxy:  # would answer (504) after a minute
        started = time.monotonic()
        rows = judged(judge(proxy.base_url, timeout_s=1.0, max_retries=1, repair_attempts=0))
        elapsed = time.monotonic() - started
    assert proxy.seen == ["hang"] * 4 and elapsed < 30  # 2 conversations x (1 try + 1 retry) x ~1 s, at once
    assert all(r["reject_reason"] is None and r["judge_scores"] == dict.fromkeys(CRITERIA, NOT_SCORED) for r in rows)


def test_a_judge_that_is_not_there_costs_nothing_and_loses_nothing():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    rows = judged(judge(f"http://127.0.0.1:{port}/v1", max_retries=1), ROWS * 4)
    assert time.monotonic() - started < 20
    assert all(r["reject_reason"] is None and r["judge_scores"] == dict.fromkeys(CRITERIA, NOT_SCORED) for r in rows)
