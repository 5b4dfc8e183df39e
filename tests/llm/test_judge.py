"""The judge's prompts, response schema and validation (the plumbing; tests with a real server are in
tests/test_judge_stage.py)."""

import json

import pytest

from pipeline.config import REPO_ROOT
from pipeline.llm.judge import (
    CRITERIA,
    JudgeAnswerError,
    JudgePrompts,
    below_threshold,
    judge_messages,
    judge_response_format,
    judge_schema,
    parse_judgement,
)

GOOD = {"speech_naturalness": 4, "coherence": 5, "helpfulness": 3, "safety": 5, "reason": "Fine."}


@pytest.mark.parametrize("content, expected", [
    (json.dumps(GOOD), {"speech_naturalness": 4, "coherence": 5, "helpfulness": 3, "safety": 5}),
    ("Here you go:\n```json\n" + json.dumps(GOOD) + "\n```", {c: GOOD[c] for c in CRITERIA}),
    (json.dumps({**GOOD, "coherence": 5.0}), {c: GOOD[c] for c in CRITERIA}),  # a whole float is a whole number
    (json.dumps({k: v for k, v in GOOD.items() if k != "reason"}), {c: GOOD[c] for c in CRITERIA}),
])
def test_valid_answers(content, expected):
    assert parse_judgement(content) == expected


@pytest.mark.parametrize("content, reason, where", [
    ("I think it is good.", "judge_not_json", ""),
    ('{"speech_naturalness": 4, "coherence": ', "judge_not_json", ""),
    (json.dumps({**GOOD, "safety": 6}), "judge_wrong_shape", "safety"),
    (json.dumps({**GOOD, "coherence": 0}), "judge_wrong_shape", "coherence"),
    (json.dumps({**GOOD, "helpfulness": "high"}), "judge_wrong_shape", "helpfulness"),
    (json.dumps({**GOOD, "helpfulness": 3.5}), "judge_wrong_shape", "helpfulness"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "coherence"}), "judge_wrong_shape", "coherence"),
    (json.dumps({**GOOD, "fluency": 4}), "judge_wrong_shape", "fluency"),
    ("[4, 5, 3, 5]", "judge_not_json", ""),
])
def test_invalid_answers_name_the_problem(content, reason, where):
    with pytest.raises(JudgeAnswerError) as err:
        parse_judgement(content)
    assert err.value.reason == reason and where in err.value.details


def test_thresholds():
    scores = {"speech_naturalness": 2, "coherence": 3, "helpfulness": 5, "safety": 3}
    limits = {"speech_naturalness": 3, "coherence": 3, "helpfulness": 3, "safety": 4}
    assert below_threshold(scores, limits) == [("speech_naturalness", 2, 3), ("safety", 3, 4)]
    assert below_threshold({c: -1 for c in CRITERIA}, limits) == []  # unscored: nothing to compare
    assert below_threshold(scores, {}) == []


@pytest.mark.parametrize("language, marker", [("en", "Assistant: "), ("zh", "助手：")])
def test_prompts_render_every_turn(language, marker):
    prompts = JudgePrompts.load(REPO_ROOT / "prompts", language)
    turns = [{"role": "user", "display_text": "first  question"}, {"role": "assistant", "display_text": "an answer"}]
    messages = judge_messages(prompts, turns, language)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert all(c in messages[0]["content"] for c in CRITERIA)
    assert "first question" in messages[1]["content"] and marker + "an answer" in messages[1]["content"]


def test_schema_and_response_formats():
    schema = judge_schema()
    assert schema["required"] == [*CRITERIA, "reason"] and schema["additionalProperties"] is False
    assert judge_response_format("json_object_schema") == {"type": "json_object", "schema": schema}
    assert judge_response_format("json_schema")["json_schema"]["strict"] is True
    assert judge_response_format("none") is None
