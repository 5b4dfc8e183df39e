"""Personal data in generated text: what is found (and what is not), the placeholders, the policy per kind."""

import pytest

from pipeline.normalize.en import normalize_en
from pipeline.normalize.zh import normalize_zh
from pipeline.quality.personal_data import PLACEHOLDERS, find_personal_data, scrub


@pytest.mark.parametrize("language, text, expected", [
    ("en", "Hi, my name is Sarah Johnson, call me on (415) 555-2671.", [("person_name", "Sarah Johnson"),
                                                                        ("phone", "(415) 555-2671")]),
    ("en", "Write to sarah.j@gmail.com or john dot smith at gmail dot com.",
     [("email", "sarah.j@gmail.com"), ("email", "john dot smith at gmail dot com")]),
    ("en", "My card is 4111 1111 1111 1111, my SSN 536-90-4399.", [("bank_card", "4111 1111 1111 1111"),
                                                                  ("id_card", "536-90-4399")]),
    ("en", "A card 4111 1111 1111 1112 fails the Luhn check.", []),
    ("en", "I live at 221 Baker Street, London NW1 6XE.", [("address", "221 Baker Street"), ("address", "NW1 6XE")]),
    ("en", "Ring me on five five five, zero one two three four.",
     [("phone", "five five five, zero one two three four")]),
    ("en", "My number is 07700 900123.", [("phone", "07700 900123")]),
    ("en", "Dr. Emily Watson said the 2024 budget was 12,500 dollars.", [("person_name", "Emily Watson")]),
    ("en", "Will you help me? In May I walked 10000 steps on Main Road. Thank You, Kevin.", []),
    ("en", "Take the Northern Line to King's Cross, it is about three stops.", []),
    ("zh", "你好，我叫张伟，手机号是13812345678。", [("person_name", "张伟"), ("phone", "13812345678")]),
    ("zh", "我的身份证号是11010519491231002X。", [("id_card", "11010519491231002X")]),
    ("zh", "身份证号110105194912310021不对，校验位错了。", []),
    ("zh", "我家住在北京市朝阳区建国路八十八号。", [("address", "北京市朝阳区建国路八十八号")]),
    ("zh", "他的电话是一三八一二三四五六七八。", [("phone", "一三八一二三四五六七八")]),
    ("zh", "卡号是6222 0000 0000 0009，邮箱zhangwei@163.com。", [("bank_card", "6222 0000 0000 0009"),
                                                        ("email", "zhangwei@163.com")]),
    ("zh", "王先生和李老师今年去了长安街，一共花了一千二百元。", []),
])
def test_what_is_found(language, text, expected):
    assert [(f.kind, f.text) for f in find_personal_data(text, language)] == expected


def test_replace_uses_speakable_placeholders_consistently():
    turns = ["Hi, I'm Sarah Johnson. My number is (415) 555-2671.",
             "Thanks, Sarah Johnson. I'll call (415) 555-2671 back today."]
    result = scrub(turns, "en", {"person_name": "replace", "phone": "replace"}, salt="en-0000000000000001")
    assert result.found == {"person_name": 2, "phone": 2} and result.replaced == result.found
    assert result.rejected is None
    name = next(p for p in PLACEHOLDERS["en"]["person_name"] if p in result.texts[0])
    phone = next(p for p in PLACEHOLDERS["en"]["phone"] if p in result.texts[0])
    assert name in result.texts[1] and phone in result.texts[1]  # the same value: the same placeholder
    assert "Sarah" not in " ".join(result.texts) and "2671" not in " ".join(result.texts)
    # a placeholder is already spoken form: the normaliser leaves it as it is, and it is not found again
    assert phone in normalize_en(result.texts[0])
    assert find_personal_data(result.texts[0], "en") == []


def test_zh_placeholders_survive_normalisation():
    result = scrub(["我叫张伟，电话13812345678，住在北京市朝阳区建国路八十八号。"], "zh",
                   {k: "replace" for k in ("person_name", "phone", "address")}, salt="zh-0000000000000001")
    spoken = normalize_zh(result.texts[0])
    assert "张伟" not in spoken and "138" not in spoken and "建国路" not in spoken
    assert any(p in spoken for p in PLACEHOLDERS["zh"]["address"])
    assert find_personal_data(result.texts[0], "zh") == []


def test_reject_and_keep_policies():
    turns = ["What is your name?", "I'm Dr. Emily Watson, my card is 4111 1111 1111 1111."]
    rejected = scrub(turns, "en", {"bank_card": "reject", "person_name": "keep"}, salt="x")
    assert rejected.rejected == (1, "bank_card")
    assert rejected.texts == turns and rejected.found == {"bank_card": 1, "person_name": 1}
    kept = scrub(turns, "en", {}, salt="x")  # kinds missing from the policy are only counted
    assert kept.texts == turns and kept.rejected is None and not kept.replaced
