from fractions import Fraction

import pytest

from pipeline.metrics import error_rate, normalize_for_scoring

# (reference the turn should say, what ASR wrote, expected character error rate)
CER_CASES = [
    ("今天天气很好", "今天天气很好", Fraction(0)),
    # numerals: ASR writes Arabic digits and symbols, the spoken text has Chinese numerals
    ("我三点到", "我3点到", Fraction(0)),
    ("打折百分之五十", "打折50%", Fraction(0)),
    ("二零二四年", "2024年", Fraction(0)),
    ("十五点三十分开会", "15:30开会", Fraction(0)),
    ("我有两个苹果", "我有2个苹果", Fraction(0)),
    ("两百元", "二百元", Fraction(0)),
    ("价格是两百元", "价格是¥200", Fraction(0)),
    ("他跑了五千克", "他跑了5kg", Fraction(0)),
    ("我有百分之百的把握", "我有100%的把握", Fraction(0)),
    ("电话一三八", "电话幺三八", Fraction(0)),
    # script, width, case, punctuation and spaces
    ("这个软件很好用", "這個軟件很好用", Fraction(0)),
    ("我们明天见", "我們明天見", Fraction(0)),
    ("今天天气很好。", "今天 天气 很好", Fraction(0)),
    ("你好，世界！", "你好世界", Fraction(0)),
    ("ABC", "ＡＢＣ", Fraction(0)),
    ("我喜欢iPhone", "我喜欢 IPHONE", Fraction(0)),
    # real errors
    ("今天天气很好", "今天天汽很好", Fraction(1, 6)),  # substitution
    ("今天天气很好", "今天的天气很好", Fraction(1, 6)),  # insertion
    ("今天天气很好", "今天气很好", Fraction(1, 6)),  # deletion
    ("我三点到", "我四点到", Fraction(1, 4)),
    ("会议在十五点三十分", "会议在15:40", Fraction(1, 9)),  # 四 for 三 after both become Chinese numerals
    ("我用Python写代码", "我用python写代马", Fraction(1, 11)),  # Latin letters count one by one
    ("你好", "你好你好", Fraction(1)),
    ("今天天气很好", "", Fraction(1)),
    # references with nothing to say
    ("。。。", "", Fraction(0)),
    ("！", "你好", Fraction(1)),
]


@pytest.mark.parametrize("reference, hypothesis, expected", CER_CASES)
def test_chinese_cer(reference, hypothesis, expected):
    assert error_rate(reference, hypothesis, "zh") == pytest.approx(float(expected), abs=1e-12)


def test_table_is_broad():
    assert len(CER_CASES) >= 20


def test_scoring_form():
    assert normalize_for_scoring("我3点到，好嗎？", "zh") == "我三点到好吗"
    assert normalize_for_scoring("Hello 世界！", "zh") == "hello世界"


def test_region_codes_score_as_chinese():
    assert error_rate("我三点到", "我3點到", "zh-cn") == 0.0


@pytest.mark.parametrize("reference, hypothesis, expected", [
    ("Hello world", "hello, world!", Fraction(0)),
    ("the cat sat on the mat", "the cat sit on the mat", Fraction(1, 6)),
])
def test_english_wer_unchanged(reference, hypothesis, expected):
    assert error_rate(reference, hypothesis, "en") == pytest.approx(float(expected), abs=1e-12)
    assert normalize_for_scoring("Hello, World!", "en") == "hello world"


def test_unknown_language_is_an_error():
    with pytest.raises(ValueError):
        normalize_for_scoring("bonjour", "fr")
