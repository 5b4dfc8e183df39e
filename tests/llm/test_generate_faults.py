"""The generate stage against a real llama.cpp server behind a fault-injecting proxy on 127.0.0.1."""

import time

import pytest
from fault_proxy import FaultProxy

from pipeline.config import REPO_ROOT, LLMConfig
from pipeline.schema import rows_to_table
from pipeline.stages.generate import GenerateStage

pytestmark = pytest.mark.integration


def spec(i=0, exchanges=1):
    return {"conversation_id": f"en-{i:016x}", "plan_index": i, "language": "en", "topic": "baking bread",
            "scenario": "asking for advice", "persona": "a retired teacher", "num_exchanges": exchanges, "seed": 7 + i}


def generate(base_url, rows, **cfg):
    stage = GenerateStage(LLMConfig(**{"max_tokens": 300, "timeout_s": 20, **cfg}), base_url, REPO_ROOT / "prompts")
    return stage(rows_to_table(rows)).to_pylist()


def test_transient_faults_are_retried_until_an_answer(llm_base_url):
    with FaultProxy(llm_base_url, ["429", "500", "cut"]) as proxy:
        [row] = generate(proxy.base_url, [spec()], max_retries=4)
    assert proxy.seen[:4] == ["429", "500", "cut", "pass"]  # (the Retry-After wait is measured in test_retry_after.py)
    # the request got through: whatever the model wrote was parsed (kept, or judged on its content)
    assert row["reject_reason"] not in {"llm_http_error", "llm_unreachable", "llm_timeout"}, row["reject_details"]
    assert row["llm_requests"] >= 1 and row["completion_tokens"] > 0


def test_a_hang_times_out_and_is_retried(llm_base_url):
    # the timeout must let a real answer through (a few seconds on 2 cores) but cut the hang
    # (generous: a loaded 2-core machine needs several seconds for even 60 tokens)
    with FaultProxy(llm_base_url, ["hang"], hang_s=25.0) as proxy:
        [row] = generate(proxy.base_url, [spec()], timeout_s=20, max_retries=2, max_tokens=60)
    assert proxy.seen[:2] == ["hang", "pass"]
    assert row["llm_requests"] >= 1 and row["reject_reason"] != "llm_timeout"


def test_persistent_errors_end_in_a_recorded_rejection(llm_base_url):
    with FaultProxy(llm_base_url, ["500"] * 3) as proxy:
        [row] = generate(proxy.base_url, [spec()], max_retries=2)
    # 1 try + 2 retries, then stop: bounded; then one GET /models (the server works: this conversation's failure)
    assert proxy.seen == ["500"] * 3 + ["pass"]
    assert (row["reject_stage"], row["reject_reason"]) == ("generate", "llm_http_error")
    assert "HTTP 500" in row["reject_details"]


def test_persistent_hang_is_a_timeout_rejection_not_a_hang(llm_base_url):
    with FaultProxy(llm_base_url, ["hang"] * 2, hang_s=3.0) as proxy:
        started = time.monotonic()
        [row] = generate(proxy.base_url, [spec()], timeout_s=1.0, max_retries=1)
    assert row["reject_reason"] == "llm_timeout"
    assert time.monotonic() - started < 15


def test_unparseable_answer_gets_one_repair_request(llm_base_url):
    with FaultProxy(llm_base_url, ["bad_json"]) as proxy:
        [row] = generate(proxy.base_url, [spec()], repair_attempts=1)
    assert proxy.seen[:2] == ["bad_json", "pass"]
    assert row["llm_requests"] == 2  # the bad answer and the repair


def test_unparseable_answers_without_repairs_left_are_rejected(llm_base_url):
    with FaultProxy(llm_base_url, ["bad_json", "bad_json"]) as proxy:
        [row] = generate(proxy.base_url, [spec()], repair_attempts=1)
    assert (row["reject_reason"], row["llm_requests"]) == ("llm_not_json", 2)


def test_a_mixed_fault_storm_ends_with_every_conversation_accounted_for_once(llm_base_url):
    script = ["429", "truncated_json", "500", "cut", "bad_json", "500", "500", "500", "hang"]
    rows = [spec(i) for i in range(4)]
    with FaultProxy(llm_base_url, script, hang_s=12.0) as proxy:
        started = time.monotonic()
        out = generate(proxy.base_url, rows, timeout_s=8, max_retries=2, repair_attempts=1, concurrency=2,
                       max_tokens=150)
    assert time.monotonic() - started < 300 and len(proxy.seen) <= 4 * 2 * 3  # bounded: tries x repairs x retries
    assert sorted(r["conversation_id"] for r in out) == sorted(r["conversation_id"] for r in rows)  # once each
    for row in out:
        assert row["reject_reason"] is None or (row["reject_stage"] == "generate" and row["reject_details"])
        if row["reject_reason"] is None:
            assert len(row["turns"]) == 2 and row["turns"][0]["role"] == "user"
