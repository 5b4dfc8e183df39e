import pytest

from pipeline.normalize.zh import normalize_zh

# written -> what a Mandarin speaker says. A line without a final mark gets "。" (a turn ends a sentence).
CASES = [
    # plain integers, 两 vs 二
    ("我有123个苹果", "我有一百二十三个苹果。"),
    ("我有2个孩子", "我有两个孩子。"),
    ("班里有12个人", "班里有十二个人。"),
    ("来了22个人", "来了二十二个人。"),
    ("体育馆能坐12000人", "体育馆能坐一万两千人。"),
    ("人口约22万", "人口约二十二万。"),
    ("一共200个", "一共两百个。"),
    ("1加2等于3", "一加二等于三。"),
    ("他上2年级", "他上二年级。"),
    ("这件衣服贵了2倍", "这件衣服贵了两倍。"),
    ("我们住2楼", "我们住二楼。"),
    ("买了2两茶叶", "买了二两茶叶。"),  # 两 is itself the measure word here
    # decimals, percentages, fractions
    ("价格涨了3.5倍", "价格涨了三点五倍。"),
    ("圆周率约等于3.14", "圆周率约等于三点一四。"),
    ("水深0.5米", "水深零点五米。"),
    ("打50%的折扣", "打百分之五十的折扣。"),
    ("我有100%的把握", "我有百分之百的把握。"),
    ("增长了20.5%", "增长了百分之二十点五。"),
    ("利率在3%-5%之间", "利率在百分之三到百分之五之间。"),
    ("有1/3的人同意", "有三分之一的人同意。"),
    # money
    ("门票¥200", "门票两百元。"),
    ("这本书200元", "这本书两百元。"),
    ("打车花了200块", "打车花了两百块。"),
    ("一杯咖啡$5", "一杯咖啡五美元。"),
    ("原价¥1,299，现价¥999", "原价一千两百九十九元，现价九百九十九元。"),
    ("找零¥12.50", "找零十二点五元。"),
    ("预算2万元", "预算两万元。"),
    ("苹果5元/斤", "苹果五元每斤。"),
    # dates and years
    ("今天是2024年3月5日", "今天是二零二四年三月五日。"),
    ("截止日期是2024-03-05", "截止日期是二零二四年三月五日。"),
    ("他是90后", "他是九零后。"),
    ("这是1990年代的歌", "这是一九九零年代的歌。"),
    ("80年代的电影", "八十年代的电影。"),
    ("2020-2024年的数据", "二零二零到二零二四年的数据。"),
    ("2月2号是我的生日", "二月二号是我的生日。"),
    ("我学了2年中文", "我学了两年中文。"),
    # times and scores
    ("会议在15:30开始", "会议在十五点三十分开始。"),
    ("早上8:05出发", "早上八点零五分出发。"),
    ("2:00见", "两点见。"),
    ("我3点到", "我三点到。"),
    ("下午2点见", "下午两点见。"),
    ("最后比分2:1", "最后比分二比一。"),
    # phone numbers and codes: digit by digit, 1 read 一
    ("我的电话是13812345678", "我的电话是一三八一二三四五六七八。"),
    ("请拨打010-12345678", "请拨打零一零一二三四五六七八。"),
    ("验证码是123456", "验证码是一二三四五六。"),
    ("我住302室", "我住三零二室。"),
    ("坐G1234次列车", "坐G一二三四次列车。"),
    # ranges
    ("需要3-5天", "需要三到五天。"),
    ("每天吃2~3个鸡蛋", "每天吃两到三个鸡蛋。"),
    ("请1-2天内回复", "请一到两天内回复。"),
    ("阅读第3-5章", "阅读第三到五章。"),
    # units
    ("他重5kg", "他重五千克。"),
    ("买了2kg苹果", "买了两千克苹果。"),
    ("每天跑10km", "每天跑十公里。"),
    ("长3cm", "长三厘米。"),
    ("喝了2L水", "喝了两升水。"),
    ("今天气温30°C", "今天气温三十摄氏度。"),
    ("夜里降到-5℃", "夜里降到零下五摄氏度。"),
    ("限速60km/h", "限速六十公里每小时。"),
    ("一套100m²的房子", "一套一百平方米的房子。"),
    # ordinals
    ("他得了第1名", "他得了第一名。"),
    ("第200名", "第二百名。"),
    ("第2024届毕业生", "第二千零二十四届毕业生。"),
    # markdown, emoji, URLs, e-mail, placeholders
    ("**注意**：明天*不要*迟到", "注意：明天不要迟到。"),
    ("# 购物清单\n- 苹果\n- 香蕉", "购物清单。苹果。香蕉。"),
    ("行程如下：\n1. 第1天：故宫\n2. 第2天：长城", "行程如下：第一天：故宫。第二天：长城。"),
    ("详情见[官网](https://example.com)。", "详情见官网。"),
    ("太棒了🎉🎉！", "太棒了！"),
    ("请访问https://www.example.com/help?q=1获取帮助。", "请访问获取帮助。"),
    ("您好，[客户姓名]，感谢您的来信。", "您好，感谢您的来信。"),
    ("亲爱的{name}：你好", "亲爱的：你好。"),
    ("北京（中国的首都）很大。", "北京，中国的首都，很大。"),
    ("他说：“好的”。", "他说：好的。"),
    ("这个……怎么说呢...", "这个……怎么说呢……"),
    # traditional -> simplified
    ("這個軟體很好用", "这个软体很好用。"),
    ("他說：「我們明天見。」", "他说：我们明天见。"),
    ("價格是NT$300", "价格是三百新台币。"),
    # full width -> half width, Chinese punctuation kept
    ("ＡＢＣ１２３", "ABC一二三。"),
    ("我有３个苹果，好吗？", "我有三个苹果，好吗？"),
    ("开会时间１５：３０", "开会时间十五点三十分。"),
    # code-switching: English stays, spaces normalised
    ("我们用 React 和 TypeScript 开发前端", "我们用React和TypeScript开发前端。"),
    ("iPhone 15的拍照很好", "iPhone十五的拍照很好。"),
    ("我说OK!我们走吧", "我说OK！我们走吧。"),
    ("OK, let's go!", "OK, let's go!"),
    ("C++很难学", "C加加很难学。"),
    ("GPT-4的回答", "GPT四的回答。"),
    ("5G网络很快", "五G网络很快。"),
    # already spoken
    ("我三点到，大概需要三到五天。", "我三点到，大概需要三到五天。"),
    ("二零二四年三月五日", "二零二四年三月五日。"),
]


@pytest.mark.parametrize("written, spoken", CASES)
def test_chinese_normalisation(written, spoken):
    assert normalize_zh(written) == spoken


def test_table_is_broad():
    assert len(CASES) >= 40


def test_normalisation_is_idempotent():
    for written, _ in CASES:
        once = normalize_zh(written)
        assert normalize_zh(once) == once, written


def test_keeps_traditional_script_when_asked():
    # number words follow the script of the text they are written into
    assert normalize_zh("我有2個蘋果，價格200元", to_simplified=False) == "我有兩個蘋果，價格兩百元。"
    assert normalize_zh("我有2个苹果", to_simplified=False) == "我有两个苹果。"


def test_nothing_left_to_say():
    assert normalize_zh("") == ""
    assert normalize_zh("🎉🎉 https://example.com") == ""


def test_no_arabic_digits_or_symbols_survive():
    text = "2024年3月5日15:30，¥1,299，打8.5折，约50%，温度-3°C，电话010-12345678，第2名，3-5天。"
    spoken = normalize_zh(text)
    assert not any(c.isdigit() and c.isascii() for c in spoken), spoken
    assert not set("¥%°:-") & set(spoken), spoken
