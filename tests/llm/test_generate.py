import json

import pytest

from pipeline.config import REPO_ROOT, LLMConfig
from pipeline.llm.base import LLMUnavailable
from pipeline.llm.parse import parse_conversation
from pipeline.llm.prompts import PromptSet, build_messages, response_format
from pipeline.reasons import Rejected
from pipeline.schema import rows_to_table
from pipeline.stages.generate import GenerateStage

CFG = LLMConfig(min_turn_chars=2)


def payload(*pairs):
    return json.dumps({"exchanges": [{"user": u, "assistant": a} for u, a in pairs]})


def test_valid_output_becomes_alternating_turns():
    turns = parse_conversation("```json\n" + payload(("Hi there.", "Hello!"), ("How   are you?", "Fine.")) + "\n```",
                               2, CFG, "en")
    assert [(t["role"], t["display_text"]) for t in turns] == [
        ("user", "Hi there."), ("assistant", "Hello!"), ("user", "How are you?"), ("assistant", "Fine.")]


@pytest.mark.parametrize("content, reason", [
    ("Sure! Here is a conversation: user says hi", "llm_not_json"),
    ('{"exchanges": [{"user": "hi", "assistant": ', "llm_not_json"),
    ('{"turns": []}', "llm_wrong_shape"),
    ('{"exchanges": [{"user": "hi"}]}', "llm_wrong_shape"),
    (payload(("Hi there.", "Hello!")), "llm_wrong_exchange_count"),
    (payload(("Hi there.", ""), ("a b", "c d")), "llm_turn_too_short"),
    (payload(("Hi there.", "x" * 401), ("a b", "c d")), "llm_turn_too_long"),
    (payload(("Hi\x00 there.", "Hello!"), ("a b", "c d")), "llm_control_characters"),
    (payload(("你好，今天天气怎么样？", "很好。"), ("a b", "c d")), "llm_wrong_language"),
    (payload(("123456789", "Hello there!"), ("a b", "c d")), "llm_turn_not_prose"),
    (payload(("Hi there.", "Of course, here you go ]}, {'user': 'Thanks a lot'"), ("a b", "c d")), "llm_json_in_text"),
    (payload(("Hi there.", 'Sure "assistant": fine'), ("a b", "c d")), "llm_json_in_text"),
])
def test_bad_outputs_are_rejected_with_a_reason(content, reason):
    with pytest.raises(Rejected) as err:
        parse_conversation(content, 2, CFG, "en")
    assert err.value.reason == reason


def test_prompts_render_from_files_and_schema_pins_the_exchange_count():
    prompts = PromptSet.load(REPO_ROOT / "prompts", "en")
    spec = {"topic": "baking bread", "scenario": "asking for advice", "persona": "a retired teacher",
            "num_exchanges": 3, "language": "en"}
    system, user = build_messages(prompts, spec)
    assert system["role"] == "system" and "a retired teacher" in system["content"]
    assert "baking bread" in user["content"] and "exactly 3 exchanges" in user["content"]
    fmt = response_format(3, CFG)
    assert fmt["type"] == "json_object"
    items = fmt["schema"]["properties"]["exchanges"]
    assert items["minItems"] == items["maxItems"] == 3


@pytest.mark.integration
def test_real_llama_server_generates_or_records_why_not(llm_base_url):
    """SmolLM2-135M behind llama.cpp's server on 127.0.0.1: every conversation ends with turns or a reason."""
    specs = [{"conversation_id": f"en-{i:016x}", "plan_index": i, "language": "en", "topic": topic,
              "scenario": "asking for advice", "persona": "a busy parent", "num_exchanges": 2, "seed": i}
             for i, topic in enumerate(["cooking pasta", "a rainy weekend", "learning to swim"])]
    stage = GenerateStage(LLMConfig(max_tokens=400), llm_base_url, REPO_ROOT / "prompts")
    out = stage(rows_to_table(specs)).to_pylist()
    kept = [r for r in out if r["reject_reason"] is None]
    assert kept, [r["reject_details"] for r in out]  # the grammar-constrained server returns usable JSON
    for row in out:
        assert row["llm_requests"] >= 1 and row["completion_tokens"] > 0 and row["llm_model"] == "SmolLM2-135M-Instruct"
        if row["reject_reason"] is None:
            assert [t["role"] for t in row["turns"]] == ["user", "assistant"] * 2
            assert all(t["display_text"].strip() for t in row["turns"])
        else:
            assert row["reject_stage"] == "generate" and row["reject_reason"].startswith("llm_")


def test_unreachable_server_stops_the_batch_with_a_clear_error():
    """An outage is not a property of the conversation: no rejection is recorded (a rerun retries it)."""
    spec = {"conversation_id": "en-0000000000000001", "plan_index": 0, "language": "en", "topic": "t",
            "scenario": "s", "persona": "p", "num_exchanges": 1, "seed": 0}
    stage = GenerateStage(LLMConfig(max_retries=0, timeout_s=5), "http://127.0.0.1:9/v1", REPO_ROOT / "prompts")
    with pytest.raises(LLMUnavailable) as err:
        stage(rows_to_table([spec]))
    assert "LLM server http://127.0.0.1:9/v1 unreachable after 0 retries (APIConnectionError" in str(err.value)
    assert "sk-" not in str(err.value)
