"""Personal data an LLM invents in a conversation: phone numbers, e-mail addresses, ID-card and bank-card
numbers, street addresses and full names, in English and Chinese text.

Each finding has a kind; the config's policy per kind says what happens: `replace` swaps it for a speakable
placeholder from a fixed list (the same value gets the same placeholder throughout a conversation),
`reject` drops the conversation (reason `personal_data`; the details name the kind and the turn, never the
value), `keep` only counts it. Numbers are found written with digits and spoken ("five five five, ...",
"一三八..."), because the prompts ask the model to write numbers the way they are said.

Validation uses the field's libraries: phonenumbers (Google's libphonenumber) for phone numbers it can
prove valid, python-stdnum for the Luhn check of card numbers, the Chinese resident ID checksum and date,
and US social security numbers. Formatted numbers in reserved fictional ranges (555-01xx, 07700 900xxx)
are caught by shape, since an invented number can still be somebody's.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

KINDS = ("email", "id_card", "bank_card", "phone", "address", "person_name")  # detection priority order
Policy = Literal["replace", "reject", "keep"]

# Placeholders are what TTS reads, so they are written the way they are said (the normalisers would turn
# "555-0100" into "five hundred fifty five to one hundred"), and they are obviously generic.
PLACEHOLDERS: dict[str, dict[str, tuple[str, ...]]] = {
    "en": {
        "phone": ("five five five, zero one zero zero", "five five five, zero one four two",
                  "five five five, zero one seven three", "five five five, zero one nine one"),
        "email": ("sam at example dot com", "alex at example dot org", "jo at example dot net"),
        "id_card": ("one two three, four five, six seven eight nine",),
        "bank_card": ("four one one one, one one one one, one one one one, one one one one",),
        "address": ("one Main Street", "ten High Street", "twenty Station Road", "five Park Lane"),
        "person_name": ("Alex Morgan", "Sam Taylor", "Jordan Lee", "Casey Brown", "Robin Clarke"),
    },
    "zh": {
        "phone": ("一三零，零零零零，零零零一", "一三九，零零零零，零零零二", "零一零，零零零零，零零零零"),
        "email": ("test 艾特 example 点 com", "demo 艾特 example 点 org"),
        "id_card": ("一一零一零一，一九九零零一零一，零零一一",),
        "bank_card": ("六二二二，零零零零，零零零零，零零零零",),
        "address": ("幸福路一号", "人民路十号", "和平街八号", "建设路二号"),
        "person_name": ("张三", "李四", "王五", "赵六"),
    },
}

_EN_DIGITS = {"zero": "0", "oh": "0", "o": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
              "six": "6", "seven": "7", "eight": "8", "nine": "9"}
_ZH_DIGITS = {"零": "0", "〇": "0", "一": "1", "幺": "1", "二": "2", "两": "2", "三": "3", "四": "4", "五": "5",
              "六": "6", "七": "7", "八": "8", "九": "9"}
_EN_DIGIT_WORD = r"(?:zero|oh|one|two|three|four|five|six|seven|eight|nine|double|triple)"
# seven or more spoken digits in a row ("five five five, zero one two three"): a phone or ID number
_EN_SPOKEN_DIGITS = re.compile(rf"\b{_EN_DIGIT_WORD}(?:[\s,.-]+{_EN_DIGIT_WORD}){{6,}}\b", re.I)
_ZH_SPOKEN_DIGITS = re.compile(r"[零〇一幺二两三四五六七八九](?:[，,、\s-]?[零〇一幺二两三四五六七八九]){6,}")
# ASCII look-arounds: Chinese characters are word characters, and "卡号是6222..." must still match
_DIGIT_RUN = re.compile(r"(?<![0-9A-Za-z.])\+?\d(?:[ .-]?\d){6,22}(?![0-9A-Za-z]|\.\d)"
                        r"|(?<!\d)\d{17}[\dXx](?![0-9A-Za-z])")

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_EN_SPOKEN_EMAIL = re.compile(r"\b[a-z0-9]+(?: (?:dot|underscore) [a-z0-9]+)* at [a-z0-9]+(?: dot [a-z0-9]+)*"
                              r" dot (?:com|org|net|edu|gov|io|co|uk|cn|de|fr)\b", re.I)
_ZH_SPOKEN_EMAIL = re.compile(r"[A-Za-z0-9._]+\s*(?:艾特|at)\s*[A-Za-z0-9]+\s*(?:点|dot)\s*(?:com|org|net|cn|edu)",
                              re.I)
# phone shapes that phonenumbers' validity check rejects because the range is reserved for fiction or unassigned
_PHONE_SHAPES = {
    "en": re.compile(r"(?<![\w-])(?:\+?1[ .-]?)?\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4}(?![\w-])|(?<![\w-])555-\d{4}(?![\w-])"
                     r"|(?<![\w-])(?:\+44 ?|0)\d{2,4} ?\d{3} ?\d{3,4}(?![\w-])"),
    "zh": re.compile(r"(?<!\d)1[3-9]\d{9}(?!\d)|(?<![\d-])0\d{2,3}-\d{7,8}(?![\d-])|(?<!\d)1[3-9]\d-\d{4}-\d{4}(?!\d)"),
}
_PHONE_REGIONS = {"en": ("US", "GB"), "zh": ("CN",)}
_SSN = re.compile(r"(?<![\w-])\d{3}-\d{2}-\d{4}(?![\w-])")
_NINO = re.compile(r"\b[A-CEGHJ-PR-TW-Z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b")

_EN_NUMBER_WORD = (r"(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|"
                   r"sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety|"
                   r"hundred|thousand)")
_STREET_TYPES = (r"(?:Street|St|Avenue|Ave|Road|Rd|Lane|Ln|Drive|Dr|Boulevard|Blvd|Court|Ct|Way|Place|Pl|Terrace|"
                 r"Close|Crescent|Square|Sq|Parkway|Pkwy|Highway|Hwy|Row|Gardens|Grove|Mews)")
_EN_ADDRESS = re.compile(
    rf"(?<![\w-])(?:\d{{1,5}}[A-Za-z]?|{_EN_NUMBER_WORD}(?:[\s-]+{_EN_NUMBER_WORD}){{0,4}})\s+"
    rf"(?:[A-Z][a-z]+\s+){{1,3}}{_STREET_TYPES}\b\.?(?:,?\s+(?:Apartment|Apt|Flat|Suite|Unit)\.?\s+\w+)?")
_UK_POSTCODE = re.compile(r"\b[A-Z]{1,2}\d[A-Z\d]? ?\d[ABD-HJLNP-UW-Z]{2}\b")
_ZH_NUM = "0-9零〇一二三四五六七八九十百千"
_ZH_ADDRESS = re.compile(
    rf"(?:[\u4e00-\u9fff]{{1,6}}(?:省|市|区|县|镇|乡))*[\u4e00-\u9fff]{{1,8}}(?:路|街|大道|大街|巷|胡同|弄)"
    rf"[{_ZH_NUM}]+号(?:院|楼)?(?:[{_ZH_NUM}]+(?:号楼|栋|幢|单元|室|层|楼))*")

_DATA_NAMES_EN = (
    "James John Robert Michael David Richard Joseph Thomas Charles Christopher Daniel Matthew Anthony Donald "
    "Steven Paul Andrew Joshua Kenneth Kevin Brian George Timothy Ronald Edward Jason Jeffrey Ryan Jacob Gary "
    "Nicholas Eric Jonathan Stephen Larry Justin Scott Brandon Benjamin Samuel Gregory Alexander Patrick Jack "
    "Dennis Jerry Tyler Aaron Henry Adam Nathan Peter Zachary Kyle Noah Ethan Jeremy Christian Sean Austin "
    "Oliver Harry Oscar Liam Lucas Mason Logan Elijah Owen Carter Wyatt Luke Isaac Gabriel Julian Leo Caleb "
    "Mary Patricia Jennifer Linda Elizabeth Barbara Susan Jessica Sarah Karen Lisa Nancy Betty Sandra Margaret "
    "Ashley Kimberly Emily Donna Michelle Carol Amanda Melissa Deborah Stephanie Rebecca Sharon Laura Cynthia "
    "Amy Angela Helen Anna Brenda Pamela Emma Nicole Samantha Katherine Christine Rachel Catherine Carolyn "
    "Janet Maria Heather Diane Julie Olivia Sophia Isabella Charlotte Amelia Mia Harper Evelyn Abigail Ella "
    "Chloe Lily Zoe Hannah Natalie Victoria Lucy Sophie Alice Claire Megan Lauren Kate Jane Ruth Sophie "
    "Wei Li Ming Hiroshi Yuki Priya Raj Ahmed Fatima Mohammed Carlos Maria Jose Juan Ana Luis Sofia Diego").split()
# given names that are also everyday words at the start of a sentence ("Will you ...", "May I ...") are left out
_EN_GIVEN = frozenset(_DATA_NAMES_EN)
_EN_INTRO = re.compile(r"\b(?:my name is|my name's|i'm|i am|this is|call me|named|called|ask for|speak to|"
                       r"speaking with|contact)\s+((?:[A-Z][a-z]+|[A-Z]')[A-Za-z'-]*(?:\s+[A-Z][a-z][A-Za-z'-]+)+)")
_EN_TITLED = re.compile(r"\b(?:Mr|Mrs|Ms|Miss|Dr|Doctor|Professor|Prof)\.?\s+([A-Z][a-z]+\s+[A-Z][a-z][A-Za-z'-]+)")
_EN_PAIR = re.compile(r"\b([A-Z][a-z]+)\s+([A-Z][a-z][A-Za-z'-]+)\b")
_NOT_SURNAME = frozenset("Street Road Avenue Lane Drive Park Station Airport University College School Hospital "
                         "Monday Tuesday Wednesday Thursday Friday Saturday Sunday January February March April "
                         "June July August September October November December Christmas Day".split())

_ZH_SURNAMES = (
    "欧阳 司马 诸葛 上官 东方 皇甫 令狐 慕容 王 李 张 刘 陈 杨 黄 赵 吴 "
    "周 徐 孙 马 朱 胡 郭 何 高 林 罗 郑 梁 谢 宋 唐 许 韩 冯 邓 曹 "
    "彭 曾 肖 田 董 袁 潘 于 蒋 蔡 余 杜 叶 程 苏 魏 吕 丁 任 沈 姚 "
    "卢 姜 崔 钟 谭 陆 汪 范 金 石 廖 贾 夏 韦 付 方 白 邹 孟 熊 秦 "
    "邱 江 尹 薛 闫 段 雷 侯 龙 史 陶 黎 贺 顾 毛 郝 龚 邵 万 钱 严 "
    "覃 武 戴 莫 孔 向 汤"
).split()
_ZH_NOT_GIVEN = "的了是在和与今年我你他她们说想要去就也都很吗呢吧啊呀哦个位家里这那有没从给对会能可先老小"
_ZH_GIVEN = rf"(?:(?![{_ZH_NOT_GIVEN}])[\u4e00-\u9fff]){{1,2}}"
_ZH_SURNAME = "(?:" + "|".join(_ZH_SURNAMES) + ")"
_ZH_INTRO = re.compile(rf"(?:我叫|我的名字(?:是|叫)|名字叫|名叫|叫做|姓名(?:是|：|:)?|联系人(?:是|：|:)?|"
                       rf"收件人(?:是|：|:)?|本人|我是)\s*({_ZH_SURNAME}{_ZH_GIVEN})")
_ZH_TITLED = re.compile(rf"({_ZH_SURNAME}{_ZH_GIVEN})(?:先生|女士|小姐|同学|老师|医生|经理)")
_ZH_ADDRESS_LEAD = re.compile(r"^(?:我|他|她|们|家|住在|住|地址(?:是|：|:)?|寄到|送到|搬到|就在|在|到|去|于|是)+")
_ZH_TITLE_TAIL = re.compile(r"(?:老师|先生|女士|小姐|医生|经理|同学|阿姨|叔叔|师傅|总)$")


@dataclass(frozen=True)
class Finding:
    kind: str
    start: int
    end: int
    text: str


@dataclass
class Scrubbed:
    """What `scrub` did to one conversation."""

    texts: list[str]
    found: Counter = field(default_factory=Counter)      # kind -> occurrences found
    replaced: Counter = field(default_factory=Counter)   # kind -> occurrences replaced
    rejected: tuple[int, str] | None = None              # (turn, kind) that a `reject` policy hit first


def _digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit() or c in "Xx")


def _spoken_digits(text: str, language: str) -> str:
    if language == "zh":
        return "".join(_ZH_DIGITS[c] for c in text if c in _ZH_DIGITS)
    out = []
    words = re.findall(r"[a-z]+", text.lower())
    repeat = 1
    for word in words:
        if word in ("double", "triple"):
            repeat = 2 if word == "double" else 3
        elif word in _EN_DIGITS:
            out.append(_EN_DIGITS[word] * repeat)
            repeat = 1
    return "".join(out)


def _classify_number(digits: str, language: str, formatted: str) -> str | None:
    """id_card / bank_card / phone for a run of digits, or None when it is just a number."""
    from stdnum import luhn
    from stdnum.cn import ric
    from stdnum.us import ssn

    if len(digits) == 18 and ric.is_valid(digits):
        return "id_card"
    if 13 <= len(digits) <= 19 and digits.isdigit() and luhn.is_valid(digits):
        return "bank_card"
    if language == "en" and _SSN.fullmatch(formatted.strip()) and ssn.is_valid(digits):
        return "id_card"
    return None


def _phones(text: str, language: str) -> list[tuple[int, int]]:
    import phonenumbers

    spans = [(m.start, m.end) for region in _PHONE_REGIONS.get(language, ("US",))
             for m in phonenumbers.PhoneNumberMatcher(text, region)]
    spans += [m.span() for m in _PHONE_SHAPES.get(language, _PHONE_SHAPES["en"]).finditer(text)]
    return spans


def _names(text: str, language: str) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    if language == "zh":
        for pattern in (_ZH_INTRO, _ZH_TITLED):
            for m in pattern.finditer(text):
                name = m.group(1)
                if _ZH_TITLE_TAIL.search(name) or len(name) < 2:
                    continue
                spans.append(m.span(1))
        return spans
    for pattern in (_EN_INTRO, _EN_TITLED):
        spans += [m.span(1) for m in pattern.finditer(text)]
    for m in _EN_PAIR.finditer(text):  # "First Last" where First is a common given name
        if m.group(1) in _EN_GIVEN and m.group(2) not in _NOT_SURNAME and m.group(2) not in _EN_GIVEN | {"I"}:
            spans.append(m.span())
    placeholders = set(PLACEHOLDERS["en"]["person_name"])
    return [(s, e) for s, e in spans if text[s:e] not in placeholders]


def find_personal_data(text: str, language: str) -> list[Finding]:
    """Non-overlapping findings in text order; where two overlap, the kind earlier in KINDS wins (an e-mail
    address is not also a name; an ID number is not also a phone number)."""
    candidates: list[tuple[str, int, int]] = []
    for pattern in (_EMAIL, _ZH_SPOKEN_EMAIL if language == "zh" else _EN_SPOKEN_EMAIL):
        candidates += [("email", *m.span()) for m in pattern.finditer(text)]
    for m in _DIGIT_RUN.finditer(text):
        kind = _classify_number(_digits(m.group()), language, m.group())
        if kind:
            candidates.append((kind, *m.span()))
    for m in (_ZH_SPOKEN_DIGITS if language == "zh" else _EN_SPOKEN_DIGITS).finditer(text):
        digits = _spoken_digits(m.group(), language)
        candidates.append((_classify_number(digits, language, "") or "phone", *m.span()))
    if language == "en":
        candidates += [("id_card", *m.span()) for m in _NINO.finditer(text)]
        candidates += [("address", *m.span()) for m in _EN_ADDRESS.finditer(text)]
        candidates += [("address", *m.span()) for m in _UK_POSTCODE.finditer(text)]
    else:
        for m in _ZH_ADDRESS.finditer(text):  # the pattern's leading Han characters can take in a verb: 住在北京市...
            lead = _ZH_ADDRESS_LEAD.match(m.group())
            candidates.append(("address", m.start() + (lead.end() if lead else 0), m.end()))
    candidates += [("phone", s, e) for s, e in _phones(text, language)]
    candidates += [("person_name", s, e) for s, e in _names(text, language)]
    placeholders = {p for values in PLACEHOLDERS.get(language, {}).values() for p in values}
    chosen: list[Finding] = []
    taken: list[tuple[int, int]] = []
    for kind, start, end in sorted(candidates, key=lambda c: (KINDS.index(c[0]), c[1], -(c[2] - c[1]))):
        if text[start:end] in placeholders or any(start < e and s < end for s, e in taken):
            continue
        taken.append((start, end))
        chosen.append(Finding(kind, start, end, text[start:end]))
    return sorted(chosen, key=lambda f: f.start)


def placeholder(language: str, kind: str, value: str, salt: str) -> str:
    """A fixed placeholder for this value: the same value in one conversation always gets the same one."""
    options = PLACEHOLDERS.get(language, PLACEHOLDERS["en"])[kind]
    canonical = re.sub(r"\W+", "", value.casefold())
    digest = hashlib.sha256(f"{salt}\x1f{kind}\x1f{canonical}".encode()).digest()
    return options[int.from_bytes(digest[:4], "big") % len(options)]


def scrub(texts: Sequence[str], language: str, policy: dict[str, Policy], salt: str) -> Scrubbed:
    """Find personal data in every turn and apply the policy per kind. `salt` (the conversation ID) makes the
    placeholder choice stable per conversation. A kind missing from `policy` is kept (counted only)."""
    result = Scrubbed(texts=list(texts))
    for i, text in enumerate(texts):
        findings = find_personal_data(text, language)
        pieces, last = [], 0
        for f in findings:
            result.found[f.kind] += 1
            action = policy.get(f.kind, "keep")
            if action == "reject" and result.rejected is None:
                result.rejected = (i, f.kind)
            if action == "replace":
                pieces += [text[last:f.start], placeholder(language, f.kind, f.text, salt)]
                last = f.end
                result.replaced[f.kind] += 1
        if last:
            result.texts[i] = "".join(pieces) + text[last:]
    return result
