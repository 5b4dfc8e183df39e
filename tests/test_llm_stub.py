"""The replay stub (tests/llm_stub.py) is what the tests that use it take it for: recorded SmolLM2 answers,
the same answer for the same request on every run, a deterministic fallback when prompts change, counted
requests, its fault knobs, and a bounded start and stop. The client is the pipeline's own generate stage."""

import json
import time

import httpx
import pytest
from llm_stub import BANK, LLMStub, load_bank, request_key, schema_exchanges

from pipeline.config import REPO_ROOT, LLMConfig
from pipeline.llm.prompts import build_messages, response_format
from pipeline.schema import rows_to_table
from pipeline.stages.generate import GenerateStage


def spec(i=0, exchanges=1, topic="baking bread"):
    return {"conversation_id": f"en-{i:016x}", "plan_index": i, "language": "en", "topic": topic,
            "scenario": "asking for advice", "persona": "a retired teacher", "num_exchanges": exchanges, "seed": 7 + i}


def generate(base_url, rows, **cfg):
    stage = GenerateStage(LLMConfig(**{"max_tokens": 200, "timeout_s": 20, **cfg}), base_url, REPO_ROOT / "prompts")
    return stage(rows_to_table(rows)).to_pylist()




def test_the_bank_is_real_recorded_answers_with_usage():
    bank = load_bank(BANK)
    assert len(bank) >= 40 and len({r["key"] for r in bank}) == len(bank)
    assert all(r["model"].startswith("SmolLM2-135M-Instruct") and r["usage"]["completion_tokens"] > 0 for r in bank)
    assert {r["num_exchanges"] for r in bank} >= {1, 2, 3, 4}
    assert 0 < sum(r["valid"] for r in bank) < len(bank)  # SmolLM2 as it is: some answers are rejected


def test_a_recorded_request_gets_its_recorded_answer_and_usage(tmp_path):
    """Plan the recipe the bank was recorded from, ask through the generate stage: exact hits, recorded usage."""
    import pyarrow.parquet as pq

    from pipeline.config import load_config
    from pipeline.run.plan_file import write_plan

    cfg = load_config(REPO_ROOT / "configs/smoke.yaml", ["plan.exchanges.en.min=1", "plan.exchanges.en.max=1",
                                                         "llm.max_tokens=200", "plan.num_conversations=3"], tmp_path)
    write_plan(cfg, tmp_path / "p.parquet")
    specs = pq.read_table(tmp_path / "p.parquet").to_pylist()
    bank = {r["key"]: r for r in load_bank(BANK)}
    with LLMStub(exact_only=True) as url:
        rows = GenerateStage(cfg.llm, url, REPO_ROOT / "prompts")(rows_to_table(specs)).to_pylist()
    for row in rows:
        from pipeline.llm.prompts import PromptSet

        messages = build_messages(PromptSet.load(REPO_ROOT / "prompts", "en"), row)
        first = bank[request_key(messages, row["seed"], 1)]  # KeyError: the bank does not hold this request
        assert row["prompt_tokens"] >= first["usage"]["prompt_tokens"] > 0
        if first["valid"]:
            assert row["llm_requests"] == 1 and row["prompt_tokens"] == first["usage"]["prompt_tokens"]
            content = json.loads(first["content"][first["content"].index("{"):])
            assert row["turns"][0]["display_text"] == " ".join(content["exchanges"][0]["user"].split())
        else:
            assert row["reject_reason"] == first["reason"] or row["llm_requests"] == 2


def test_same_request_same_answer_and_a_prompt_edit_falls_back_by_seed():
    rows = [spec(i, exchanges=1 + i % 3) for i in range(6)]
    with LLMStub() as url:
        first, again = generate(url, rows, repair_attempts=0), generate(url, rows, repair_attempts=0)
    assert [r["turns"] for r in first] == [r["turns"] for r in again]
    assert [r["reject_reason"] for r in first] == [r["reject_reason"] for r in again]
    edited = [{**r, "topic": r["topic"] + " (edited prompt)"} for r in rows]
    with LLMStub() as url:
        stub_edit = generate(url, edited, repair_attempts=0)
    # the prompt changed, the seed did not: the same recorded answer (a fallback never depends on the prompt text)
    assert [r["turns"] for r in stub_edit] == [r["turns"] for r in first]
    for row in first:
        if row["reject_reason"] is None:
            assert len(row["turns"]) == 2 * row["num_exchanges"]


def test_valid_only_answers_only_with_answers_the_pipeline_accepts():
    rows = [spec(i, exchanges=1 + i % 4) for i in range(12)]
    stub = LLMStub(valid_only=True)
    with stub as url:
        out = generate(url, rows, repair_attempts=0)
    assert [r["reject_reason"] for r in out] == [None] * 12
    assert [s.answered for s in stub.requests] == ["fallback"] * 12  # these specs are not in the recording
    assert stub.counts_by_seed() == {r["seed"]: 1 for r in rows}


def test_exact_only_refuses_what_was_not_recorded():
    from pipeline.llm.base import LLMUnavailable

    stub = LLMStub(exact_only=True)
    with stub as url, pytest.raises(LLMUnavailable, match="every request is refused with HTTP 404"):
        generate(url, [spec()], max_retries=0)  # every request refused: the job stops (a wrong URL or model)
    assert [s.answered for s in stub.requests] == ["missing"]


def test_fault_knobs():
    stub = LLMStub(script=["500", "cut", "bad_json", "pass"], valid_only=True)
    with stub as url:
        [row] = generate(url, [spec()], max_retries=2, repair_attempts=1)
    assert [s.answered.split(":")[0] for s in stub.requests] == ["fault", "fault", "fallback", "fallback"]
    assert [s.answered for s in stub.requests][:2] == ["fault:500", "fault:cut"]
    assert row["reject_reason"] is None and row["llm_requests"] == 2  # the bad JSON and its repair


def test_the_schema_names_the_exchange_count_in_both_formats():
    for fmt in ("json_object_schema", "json_schema"):
        body = {"response_format": response_format(3, LLMConfig(response_format=fmt))}
        assert schema_exchanges(body) == 3
    assert schema_exchanges({}) is None


def test_start_and_stop_are_bounded_even_with_a_hanging_request():
    stub = LLMStub(script=["hang"], hang_s=30)
    started = time.monotonic()
    url = stub.start(timeout_s=5)
    assert httpx.get(f"{url}/models", timeout=5).json()["data"][0]["owned_by"].startswith("recorded SmolLM2")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{url}/chat/completions", json={"messages": [], "seed": 1}, timeout=1)
    stub.stop(timeout_s=5)
    assert time.monotonic() - started < 10
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/models", timeout=2)


def test_unknown_faults_are_refused():
    with pytest.raises(ValueError, match=r"unknown fault\(s\) \['explode'\]"):
        LLMStub(script=["explode"])
