"""Retry-After, measured: the generate stage's client waits what a 429's Retry-After header says, and only then.
The server is the replay stub (tests/llm_stub.py) with a fault script: the claim is about the client's retry
timing, not about the LLM; the gap is measured between the arrivals of the two requests at the server."""

import pytest
from llm_stub import LLMStub

from pipeline.config import REPO_ROOT, LLMConfig
from pipeline.schema import rows_to_table
from pipeline.stages.generate import GenerateStage

SPEC = {"conversation_id": "en-00000000000000a1", "plan_index": 0, "language": "en", "topic": "baking bread",
        "scenario": "asking for advice", "persona": "a retired teacher", "num_exchanges": 1, "seed": 11}


def gap_after_a_429(retry_after):
    stub = LLMStub(script=["429"], retry_after=retry_after, valid_only=True)
    with stub as url:
        stage = GenerateStage(LLMConfig(max_retries=2, timeout_s=20), url, REPO_ROOT / "prompts")
        [row] = stage(rows_to_table([dict(SPEC)])).to_pylist()
    first, second = stub.requests[:2]
    assert first.answered == "fault:429" and second.answered != "fault:429"
    assert row["reject_reason"] is None and row["llm_requests"] == 1  # the retry got the answer
    return second.at - first.at


@pytest.mark.parametrize("seconds", [3, 4.5])
def test_the_client_waits_at_least_what_retry_after_says(seconds):
    assert gap_after_a_429(seconds) >= seconds


def test_without_retry_after_the_client_backs_off_briefly_instead():
    # the openai client's own backoff: 0.5 s x jitter for a first retry; far below a 3 s Retry-After
    assert gap_after_a_429(None) < 2.0
