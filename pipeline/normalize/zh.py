"""Chinese written-to-spoken normalisation for TTS input.

Numbers become the words a Mandarin speaker says (cn2an for the cardinal itself, rules here for how a
number is read in its context: years and phone numbers digit by digit, 两 before measure words, times,
money, percentages, units, ranges); traditional characters become simplified (OpenCC t2s); markup,
emoji, URLs and placeholders go (shared with English via `strip_markup`). Chinese punctuation stays
Chinese, English words in code-switched text stay as they are. Idempotent on already-spoken text.

Choices a reader may ask about:
- 1 is read 一, never 幺, even in phone numbers: both are correct, and 一 is what ASR writes back.
- 两 is used for a bare 2 before a measure word or unit (两个, 两千克, 两点) and for a 2 that leads a
  百/千/万/亿 group (两百, 一万两千, 两亿); 二 everywhere else (十二, 二十二万, 第二, 二零二四, 二点五).
- A four-digit number before 年 is a year, read digit by digit, unless it is a round thousand
  (2000年 -> 两千年, which is right both for the year and for "two thousand years").
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from cn2an import an2cn

from pipeline.normalize.en import strip_markup

_HAN = "\u3007\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_ZH_PUNCT = "，。！？；：、…"
_DIGITS = "零一二三四五六七八九"

# Full-width forms of ASCII become ASCII, except the punctuation Chinese text is written with.
_KEEP_FULL_WIDTH = set("！（），：；？")
_WIDTH = {c: chr(c - 0xFEE0) for c in range(0xFF01, 0xFF5F) if chr(c) not in _KEEP_FULL_WIDTH}
_WIDTH.update({0x3000: " ", 0xFFE5: "¥", 0xFFE0: "¢", 0xFFE1: "£"})
# squared unit signs are one code point each; spell them so the unit rule below sees them
_COMPAT = {"㎏": "kg", "㎞": "km", "㎝": "cm", "㎜": "mm", "㎎": "mg", "㎖": "ml", "㎡": "m²", "㎥": "m³",
           "℃": "°C", "℉": "°F"}
# the degree sign is a Unicode symbol (So) that strip_markup drops with the emoji, so say it first
_DEGREES = [("°C", "摄氏度"), ("°F", "华氏度"), ("°", "度")]
# strip_markup's URL and e-mail patterns start at a word boundary, and Chinese characters are word
# characters: "访问https://x.cn了解" has none. These stop at the first non-ASCII character instead, end
# before trailing punctuation, and leave markdown link targets to strip_markup ([官网](url) -> 官网).
_URL = re.compile(r"(?<!\]\()(?:https?://|www\.)[A-Za-z0-9\-._~:/?#@!$&'*+,;=%]*[A-Za-z0-9/#=_%-]", re.I)
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")

_UNITS = {"km/h": "公里每小时", "m/s": "米每秒", "km²": "平方公里", "m²": "平方米", "cm²": "平方厘米",
          "m³": "立方米", "km": "公里", "kg": "千克", "cm": "厘米", "mm": "毫米", "mg": "毫克", "ml": "毫升",
          "mL": "毫升", "L": "升", "l": "升", "m": "米", "g": "克", "kcal": "千卡", "mAh": "毫安时",
          "h": "小时", "min": "分钟", "s": "秒", "ms": "毫秒", "Hz": "赫兹"}
_UNIT = re.compile(r"(?<=\d)\s*(" + "|".join(sorted(map(re.escape, _UNITS), key=len, reverse=True)) + r")(?![A-Za-z])")
_CURRENCY = {"¥": "元", "$": "美元", "US$": "美元", "NT$": "新台币", "HK$": "港币", "€": "欧元", "£": "英镑"}

# Words after which a bare 2 is 两 (simplified and traditional forms).
_MEASURES = (
    "个 個 位 只 隻 条 條 张 張 本 件 次 天 周 週 年 小时 小時 分钟 分鐘 秒 秒钟 秒鐘 岁 歲 块 塊 元 角 毛 人 种 種 台 臺 "
    "辆 輛 家 间 間 座 颗 顆 粒 片 根 把 支 匹 头 頭 棵 朵 份 名 户 戶 场 場 门 門 节 節 杯 碗 瓶 双 雙 对 對 套 首 部 篇 "
    "句 步 遍 趟 倍 成 斤 公斤 千克 克 毫克 吨 噸 公里 千米 米 厘米 釐米 毫米 升 毫升 度 摄氏度 攝氏度 华氏度 華氏度 "
    "点 點 万 萬 千 百 亿 億 项 項 款 盒 包 袋 箱 顿 頓 声 聲 页 頁 类 類 样 樣 批 组 組 队 隊 餐 口 轮 輪 圈 下 "
    "美元 欧元 歐元 英镑 英鎊 日元 港币 港幣 平方米 平方公里 立方米 星期 礼拜 禮拜 晚 夜 英里 磅 千卡 毫安时"
).split()
_NOT_MEASURES = ("年级", "年級", "年代")  # 二年级 is the second grade, not two years
_MEASURE = re.compile(r"\s*(?:" + "|".join(sorted(map(re.escape, _MEASURES), key=len, reverse=True)) + ")")
# a 2 that leads a 百/千/万/亿 group: 二百 -> 两百, 一万二千 -> 一万两千, but 十二万 and 零二万 keep 二
_LIANG = re.compile(r"(?<![^万亿千])二(?=[百千万亿])")

_NUM = r"\d+(?:\.\d+)?"
_DASH = r"\s*[-~–—]\s*"
_THOUSANDS = re.compile(r"(?<![\d.,])\d{1,3}(?:,\d{3})+(?![\d,]|\.\d)")
_ISO_DATE = re.compile(r"(?<![\d.])(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?!\d|\.\d)(?:\s*[日号])?")
_YEAR = re.compile(r"(?<![\d.])(\d{4})(?=\s*(?:年|届))")
_YEAR_RANGE = re.compile(r"(?<![\d.])(\d{4})" + _DASH + r"(\d{4})(?=\s*年)")
_GENERATION = re.compile(r"(?<![\d.])(\d0)(?=后)")  # 90后 -> 九零后, 00后 -> 零零后
_TIME = re.compile(r"(?<![\d:.])([01]?\d|2[0-4])[:：]([0-5]\d)(?:[:：]([0-5]\d))?(?![\d:])")
_SCORE = re.compile(r"(?<![\d:.])(\d+)[:：](\d+)(?![\d:])")  # 3:2, 16:9 -> 三比二, 十六比九
_PHONE = re.compile(r"(?<![\d-])(?:\d{3,4}-\d{7,8}|\d{3}-\d{3,4}-\d{4})(?![\d-])")
_ID_AFTER = re.compile(r"((?:电话|手机|号码|编号|尾号|账号|卡号|单号|验证码|邮编|房间|工号|学号|密码|车次|航班|QQ|qq|微信)"
                       r"号?码?(?:是|为|：|:)?\s*)(\d{3,})")
_ID_BEFORE = re.compile(r"(?<![\d.])(\d{3,})(?=室|房间|号房)")
_LONG_DIGITS = re.compile(r"(?<![\d.])(?<!\d,)(?:\d{11,}|0\d+)(?![\d,]|\.\d)")
_AFTER_LATIN = re.compile(r"(?<=[A-Za-z])\d{3,}")  # model and train numbers: A380, G1234
_MONEY = re.compile(r"(NT\$|HK\$|US\$|[¥$€£])\s?(" + _NUM + r")(?:" + _DASH + r"(" + _NUM + r"))?(\s*[万亿])?\s*(元|块)?")
_PERCENT_RANGE = re.compile(r"(" + _NUM + r")%?" + _DASH + r"(" + _NUM + r")\s*%")
_PERCENT = re.compile(r"(" + _NUM + r")\s*([%‰])")
_FRACTION = re.compile(r"(?<![\d/.])(\d+)/(\d+)(?![\d/]|\.\d)")
_RANGE = re.compile(r"(?<![\d.])(" + _NUM + r")" + _DASH + r"(" + _NUM + r")(?!\d|\.\d)")
_NEGATIVE = re.compile(r"(?<![A-Za-z0-9.])[-−](" + _NUM + r")(\s*(?:摄氏度|华氏度|度))?")
_ORDINAL = re.compile(r"第\s*(\d+)(?:" + _DASH + r"(\d+))?(?!\d|\.\d)")  # 第3-5章 -> 第三到五章
_VERSION = re.compile(r"(?<![\d.])\d+(?:\.\d+){2,}(?!\d|\.\d)")
_DECIMAL = re.compile(r"(?<![\d.])(\d+)\.(\d+)(?!\d|\.\d)")
_INTEGER = re.compile(r"\d+")

_ASCII_PUNCT = {",": "，", ".": "。", "!": "！", "?": "？", ";": "；", ":": "："}
_SYMBOLS = {"+": "加", "=": "等于", "&": "和", "×": "乘", "÷": "除以", "≈": "约等于", ">": "大于", "<": "小于"}
# generated number words, for text kept in traditional script
_TO_TRADITIONAL = str.maketrans("两万亿点负摄华时钟币欧镑兹约", "兩萬億點負攝華時鐘幣歐鎊茲約")


@lru_cache(maxsize=1)
def _t2s():
    import opencc

    try:
        return opencc.OpenCC("t2s")
    except Exception:  # opencc-python-reimplemented and older builds name the config file
        return opencc.OpenCC("t2s.json")


def simplify(text: str) -> str:
    """Traditional -> simplified characters (OpenCC t2s: character by character, no vocabulary swaps)."""
    return _t2s().convert(text)


def _digits(s: str) -> str:
    return "".join(_DIGITS[int(c)] for c in s if c.isdigit())


def _plain(s: str) -> str:
    """Cardinal with 二 throughout: ordinals (第二百), scores, fractions."""
    s = s.lstrip("0") or "0"
    return an2cn(s) if len(s) <= 16 else _digits(s)


def _cardinal(s: str, measure: bool = False) -> str:
    if len(s.lstrip("0") or "0") > 16:  # beyond 亿亿 nobody reads it as a quantity
        return _digits(s)
    spoken = _LIANG.sub("两", _plain(s))
    return "两" if measure and spoken == "二" else spoken


def _number(s: str, measure: bool = False) -> str:
    if "." in s:
        whole, frac = s.split(".")
        return f"{_cardinal(whole)}点{_digits(frac)}"
    return _cardinal(s, measure)


def _measure_follows(text: str, pos: int) -> bool:
    rest = text[pos:pos + 8].lstrip()
    return not rest.startswith(_NOT_MEASURES) and bool(_MEASURE.match(text, pos))


def _iso_date(m: re.Match) -> str:
    year, month, day = m.group(1), int(m.group(2)), int(m.group(3))
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return m.group(0)
    return f"{_digits(year)}年{_plain(str(month))}月{_plain(str(day))}日"


def _year(s: str) -> str:
    return _cardinal(s) if s.endswith("000") else _digits(s)


def _time(m: re.Match) -> str:
    hour, minute, second = m.group(1), m.group(2), m.group(3)
    spoken = f"{_cardinal(hour, measure=True)}点"
    if minute != "00" or (second and second != "00"):
        spoken += f"{'零' if minute[0] == '0' and minute != '00' else ''}{_plain(minute)}分"
    if second and second != "00":
        spoken += f"{'零' if second[0] == '0' else ''}{_plain(second)}秒"
    return spoken


def _money(m: re.Match) -> str:
    symbol, low, high, scale, word = m.groups()
    amount = _number(low.rstrip("0").rstrip(".") if "." in low else low, measure=True)
    if high:
        amount += "到" + _number(high.rstrip("0").rstrip(".") if "." in high else high, measure=True)
    currency = word if symbol == "¥" and word else _CURRENCY[symbol]
    return f"{amount}{(scale or '').strip()}{currency}"


def _percent(s: str, sign: str = "%") -> str:
    if sign == "%" and s in ("100", "100.0"):
        return "百分之百"  # the idiom; 百分之一百 is what a calculator says
    return ("百分之" if sign == "%" else "千分之") + _number(s)


def _range(m: re.Match, text: str) -> str:
    measure = _measure_follows(text, m.end())
    return f"{_number(m.group(1), measure)}到{_number(m.group(2), measure)}"


def _sub_with_context(pattern: re.Pattern, func, text: str) -> str:
    """Like pattern.sub, but func also sees the text, to look at what follows the match."""
    return pattern.sub(lambda m: func(m, text), text)


def _numbers(text: str) -> str:
    # ordinals first: 第2024届 is the 2024th, not the year 2024; ordinals keep 二 (第二百名)
    text = _ORDINAL.sub(lambda m: "第" + "到".join(_plain(n) for n in m.groups() if n), text)
    text = _ISO_DATE.sub(_iso_date, text)
    text = _YEAR_RANGE.sub(lambda m: f"{_year(m.group(1))}到{_year(m.group(2))}", text)
    text = _YEAR.sub(lambda m: _year(m.group(1)), text)
    text = _GENERATION.sub(lambda m: _digits(m.group(1)), text)
    text = _TIME.sub(_time, text)
    text = _SCORE.sub(lambda m: f"{_plain(m.group(1))}比{_plain(m.group(2))}", text)
    # numbers that are names, not quantities: read digit by digit
    text = _PHONE.sub(lambda m: _digits(m.group(0)), text)
    text = _ID_AFTER.sub(lambda m: m.group(1) + _digits(m.group(2)), text)
    text = _ID_BEFORE.sub(lambda m: _digits(m.group(1)), text)
    text = _AFTER_LATIN.sub(lambda m: _digits(m.group(0)), text)
    text = _LONG_DIGITS.sub(lambda m: _digits(m.group(0)), text)
    text = re.sub(r"(?<=[A-Za-z])-(?=\d)", "", text)  # GPT-4, COVID-19: the hyphen is not said
    text = _THOUSANDS.sub(lambda m: m.group(0).replace(",", ""), text)
    text = _MONEY.sub(_money, text)
    text = _PERCENT_RANGE.sub(lambda m: f"{_percent(m.group(1))}到{_percent(m.group(2))}", text)
    text = _PERCENT.sub(lambda m: _percent(m.group(1), m.group(2)), text)
    text = _UNIT.sub(lambda m: _UNITS[m.group(1)], text)
    text = _FRACTION.sub(lambda m: f"{_plain(m.group(2))}分之{_plain(m.group(1))}"
                         if 0 < int(m.group(1)) < int(m.group(2)) else m.group(0), text)
    text = _sub_with_context(_RANGE, _range, text)
    text = _NEGATIVE.sub(lambda m: f"零下{_number(m.group(1), True)}{m.group(2).strip()}" if m.group(2)
                         else f"负{_number(m.group(1))}", text)
    text = _VERSION.sub(lambda m: "点".join(_plain(part) for part in m.group(0).split(".")), text)
    text = _DECIMAL.sub(lambda m: _number(m.group(0)), text)
    return _sub_with_context(_INTEGER, lambda m, t: _cardinal(m.group(0), _measure_follows(t, m.end())), text)


def _chinese_punctuation(text: str) -> str:
    """ASCII punctuation touching Chinese becomes Chinese; brackets and dashes become pauses."""
    text = re.sub(r"\.{3,}|。{3,}", "……", text)
    text = re.sub(r"[“”„‟\"「」『』《》〈〉]|(?<![A-Za-z])['‘’]|['‘’](?![A-Za-z])", "", text)
    text = re.sub(r"[()（）【】\[\]]", "，", text)
    text = re.sub(r"——+|—|\s+[-–]\s+", "，", text)
    chinese = re.compile(f"[{_HAN}{_ZH_PUNCT}]")

    def convert(m: re.Match) -> str:  # a run at a time: "你好?." is Chinese context for both marks
        before, after = text[:m.start()].rstrip()[-1:], text[m.end():].lstrip()[:1]
        if chinese.match(before) or chinese.match(after):
            return "".join(_ASCII_PUNCT[c] for c in m.group(0) if c in _ASCII_PUNCT)
        return m.group(0)

    return re.sub(r"[,.!?;:](?:\s*[,.!?;:])*", convert, text)


def _symbols(text: str) -> str:
    text = re.sub(r"(?<=[元块角毛])\s*/", "每", text)  # 5元/斤 -> 五元每斤
    for sym, spoken in _SYMBOLS.items():
        text = text.replace(sym, spoken)
    return re.sub(r"[#@$¥€£%‰^_\\|~/·•{}`]", " ", text)


def _tidy(text: str) -> str:
    """Spaces and the punctuation left by removals and by strip_markup's added full stops."""
    text = re.sub(r"\s+", " ", text)
    text = re.sub(f"(?<=[{_HAN}{_ZH_PUNCT}])\\s+|\\s+(?=[{_HAN}{_ZH_PUNCT}])", "", text)  # Chinese has no spaces
    text = re.sub(r"\s+([,.!?;:])", r"\1", text)
    # a run of marks keeps its first unless that is a mere comma: 你好！。 -> 你好！; 如下：。 -> 如下：;
    # 北京（首都）。 -> 北京，首都，。 -> 北京，首都。
    text = re.sub(r"[，。！？；：、]{2,}", lambda m: m.group(0)[0] if m.group(0)[0] not in "，、" else
                  next((c for c in m.group(0) if c in "。！？；："), m.group(0)[0]), text)
    text = re.sub(r"(?<=…)[，。；：、]+", "", text)
    text = re.sub(r"(?:\.{3,}|…)+", "……", text)
    text = text.strip().lstrip("，。！？；：、,.;:!?-–— ")
    # a turn ends with a full stop, not a comma: strip_markup would add one on the next pass otherwise
    body = text.rstrip("，、；：,;: ")
    if body != text and body:
        last = body[-1]
        text = body if last in "。！？…!?." else body + ("。" if re.match(f"[{_HAN}]", last) else ".")
    return text if body else ""


def normalize_zh(text: str, to_simplified: bool = True) -> str:
    """Written Chinese (possibly with English in it) -> what a Mandarin speaker says."""
    # number words are generated in simplified form; text kept traditional gets traditional ones
    traditional = not to_simplified and simplify(text) != text
    text = text.translate(_WIDTH)
    # digits of other scripts (٣, ३) become ASCII so that every number rule and cn2an see one kind
    text = re.sub(r"\d", lambda m: str(unicodedata.decimal(m.group(0))), text)
    for sign, spelled in _COMPAT.items():
        text = text.replace(sign, spelled)
    if to_simplified:
        text = _t2s().convert(text)
    for sign, spoken in _DEGREES:
        text = text.replace(sign, spoken)
    text = _URL.sub(" ", text)
    text = _EMAIL.sub(" ", text)
    text = strip_markup(text)
    text = _numbers(text)
    text = _symbols(text)
    text = _chinese_punctuation(text)
    text = _tidy(text)
    return text.translate(_TO_TRADITIONAL) if traditional else text
