import re

import pytest

from pipeline.normalize.split import XTTS_CHAR_LIMITS, char_limit, split_for_tts


def squeeze(text: str) -> str:
    return re.sub(r"\s+", "", text)


def check(text: str, language: str, limit: int) -> list[str]:
    pieces = split_for_tts(text, language, limit)
    assert squeeze("".join(pieces)) == squeeze(text)  # nothing lost, nothing repeated, order kept
    assert all(piece and piece == piece.strip() and len(piece) <= limit for piece in pieces), pieces
    return pieces


def test_short_text_is_one_piece():
    assert split_for_tts("你好。今天天气很好！", "zh", 82) == ["你好。今天天气很好！"]
    assert split_for_tts("Hello there. How are you?", "en", 250) == ["Hello there. How are you?"]
    assert split_for_tts("", "zh", 82) == []
    assert split_for_tts("   ", "en", 250) == []


def test_chinese_sentences_merge_greedily_up_to_the_limit():
    sentence = "今天天气很好，我们去公园散步吧。"  # 16 characters
    pieces = check(sentence * 10, "zh", 82)
    assert pieces == [sentence * 5, sentence * 5]


def test_chinese_breaks_at_every_sentence_mark():
    text = "真的吗？太好了！我们明天见；不见不散……好的。"
    assert check(text, "zh", 8) == ["真的吗？太好了！", "我们明天见；", "不见不散……", "好的。"]


def test_long_chinese_sentence_breaks_at_commas():
    clause = "这是一个很长的分句，"  # 10 characters
    text = clause * 12 + "最后才结束。"
    pieces = check(text, "zh", 82)
    assert len(pieces) == 2
    assert pieces[0] == clause * 8
    assert all(piece.endswith(("，", "。")) for piece in pieces)


def test_chinese_hard_split_without_punctuation_keeps_english_words_whole():
    text = "我" * 78 + "Python" + "好" * 30
    pieces = check(text, "zh", 82)
    assert pieces == ["我" * 78, "Python" + "好" * 30]


def test_english_uses_its_limit_and_sentence_ends():
    sentence = "The quick brown fox jumps over the lazy dog near the river bank. "  # 65 characters with space
    text = sentence * 10
    pieces = check(text, "en", 250)
    assert [len(p) for p in pieces] == [194, 194, 194, 64]
    assert all(p.endswith(".") for p in pieces)


def test_english_decimal_points_and_abbreviations_do_not_end_sentences():
    text = "It costs 3.5 dollars at example.com today. Really."
    assert check(text, "en", 42) == ["It costs 3.5 dollars at example.com today.", "Really."]


def test_long_english_sentence_is_cut_between_words_only():
    words = [f"word{i}" for i in range(120)]
    text = " ".join(words) + "."
    pieces = check(text, "en", 50)
    assert len(pieces) > 1
    assert [w for p in pieces for w in p.split()] == words[:-1] + [words[-1] + "."]


def test_a_single_word_longer_than_the_limit_is_the_only_cut_inside_a_word():
    assert check("Supercalifragilisticexpialidocious", "en", 10) == ["Supercalif", "ragilistic", "expialidoc", "ious"]


def test_code_switched_sentence_end_before_chinese():
    assert check("OK!我们走吧。好的", "zh", 6) == ["OK!", "我们走吧。", "好的"]


def test_default_limits_are_xtts():
    assert char_limit("zh") == char_limit("zh-cn") == 82
    assert char_limit("en") == 250
    text = "今天天气很好，我们去公园散步吧。" * 20
    assert all(len(p) <= XTTS_CHAR_LIMITS["zh"] for p in split_for_tts(text, "zh-cn"))


@pytest.mark.parametrize("language, limit", [("zh", 82), ("en", 250), ("zh", 7), ("en", 12)])
def test_join_property_on_mixed_text(language, limit):
    text = ("我们用Python写了一个工具。It works well, and it is fast!  然而，文档还不够完整，需要补充……"
            "下一步：写测试、修复问题；最后发布。 Then we celebrate.") * 3
    check(text, language, limit)


def test_bad_limit():
    with pytest.raises(ValueError):
        split_for_tts("你好", "zh", 0)
