"""Debris the embedded model leaves in turns: JSON list seams, leading punctuation, role names as turns,
contractions without apostrophes. Repaired where the meaning is clear, rejected where it is not."""

import json

import pytest

from pipeline.config import LLMConfig
from pipeline.llm.parse import parse_conversation
from pipeline.normalize.en import fix_contractions, normalize_en
from pipeline.reasons import Rejected

CFG = LLMConfig()
FILLER = "That sounds like a good plan for the weekend."


def parse(user, assistant=FILLER, language="en", cfg=CFG):
    return parse_conversation(json.dumps({"exchanges": [{"user": user, "assistant": assistant}]}), 1, cfg, language)


@pytest.mark.parametrize("user, reason", [
    ("That sounds lovely.', 'I was wondering if there are any other stories?", "llm_json_in_text"),
    ('Thanks!", "Could you also tell me about the museum?', "llm_json_in_text"),
    ("The user.", "llm_meta_text"),
    ("Assistant", "llm_meta_text"),
    ("The user asks about the opening hours of the museum.", "llm_meta_text"),
])
def test_debris_is_rejected(user, reason):
    with pytest.raises(Rejected) as err:
        parse(user)
    assert err.value.reason == reason


@pytest.mark.parametrize("user, expected", [
    (". Can you tell me about the museum?", "Can you tell me about the museum?"),
    ("User: Can you tell me about the museum?", "Can you tell me about the museum?"),
    ("', 'Can you tell me about the museum?", "Can you tell me about the museum?"),
    ("I dont know what time it opens, its late.", "I don't know what time it opens, its late."),
    ('She said "no," then we left for the museum.', 'She said "no," then we left for the museum.'),
    ("The user interface of the museum app is slow.", "The user interface of the museum app is slow."),
])
def test_debris_is_repaired(user, expected):
    assert parse(user)[0]["display_text"] == expected


def test_chinese_role_name_and_leading_punctuation():
    with pytest.raises(Rejected, match="llm_meta_text"):
        parse("用户。", "好的，我们周末去博物馆吧，那里很安静。", language="zh", cfg=LLMConfig(min_turn_chars=2))
    turns = parse("。我想周末去博物馆看看展览。", "好的，我们周末去博物馆吧，那里很安静。", language="zh")
    assert turns[0]["display_text"] == "我想周末去博物馆看看展览。"


@pytest.mark.parametrize("text, expected", [
    ("I dont think so", "I don't think so"),
    ("Dont worry, Im here and youre fine", "Don't worry, I'm here and you're fine"),
    ("DONT", "DON'T"),
    ("its fine, we were at the well, ill and lets see", "its fine, we were at the well, ill and lets see"),
    ("lets go now", "let's go now"),
])
def test_contractions(text, expected):
    assert fix_contractions(text) == expected


def test_spoken_text_gets_the_apostrophe_asr_writes():
    assert normalize_en("I cant say, it doesnt matter.") == "I can't say, it doesn't matter."
