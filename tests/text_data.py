"""Source records for the near-duplicate tests: 20 distinct instruction/answer pairs per language, and 10 light
edits of 10 of them (one changed word, punctuation, case), placed after their originals in a 30-record file;
conversation rows for the stage tests; samples for the diversity figures."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.schema import empty_turn

EN = [
    ("How long should I boil an egg for a soft yolk?",
     "About six minutes in gently boiling water, then cool it in cold water for a minute."),
    ("What is a good way to fall asleep faster?",
     "Keep the same bedtime every night, dim the lights an hour before, and leave your phone in another room."),
    ("How often should I water a snake plant?",
     "Every two to three weeks is plenty; let the soil dry out completely between waterings."),
    ("Can you suggest a quick vegetarian dinner?",
     "Try a chickpea curry with spinach: it takes twenty minutes and needs only one pan."),
    ("How do I get red wine out of a carpet?",
     "Blot it, do not rub, then dab on cold water and a little washing-up liquid and blot again."),
    ("What should I pack for a weekend hiking trip?",
     "Take layers, a waterproof jacket, a map, snacks, plenty of water and a small first aid kit."),
    ("How can I save money on my weekly shopping?",
     "Plan your meals before you go, make a list, and buy the shop's own brands of the basics."),
    ("Why does my bread come out so dense?",
     "Usually the dough did not rise long enough, or the yeast was old; give it a warm spot and more time."),
    ("How do I stop my glasses from fogging up?",
     "Wash the lenses with a drop of washing-up liquid and let them air dry; it leaves a thin film."),
    ("What is a polite way to decline an invitation?",
     "Thank them warmly, say you cannot make it this time, and suggest meeting another day."),
    ("How can I keep my cat off the kitchen counter?",
     "Give her a tall cat tree near the kitchen and never leave food out on the counter."),
    ("How do I start running if I have never run before?",
     "Begin with walking and running in short turns, three times a week, and build up slowly."),
    ("What can I do with leftover rice?",
     "Make fried rice the next day with an egg, frozen peas and a splash of soy sauce."),
    ("How do I tell if an avocado is ripe?",
     "Press it gently near the stem; it should give a little without feeling mushy."),
    ("How should I prepare for a job interview?",
     "Read about the company, practise answers to common questions out loud, and plan your journey."),
    ("What is the best way to learn new words in a language?",
     "Review a few words every day with flashcards and use each new word in a sentence."),
    ("How do I keep fresh herbs from wilting?",
     "Trim the stems and stand them in a glass of water in the fridge, loosely covered."),
    ("How can I make my small flat feel bigger?",
     "Use light colours, a large mirror opposite the window, and furniture that stands on legs."),
    ("What should I do if I get locked out of my flat?",
     "Call your landlord or a spare key holder first; a locksmith is the last resort."),
    ("How do I clean a burnt saucepan?",
     "Cover the bottom with water and baking soda, bring it to the boil, then scrub once it cools."),
]
ZH = [
    ("鸡蛋煮多久蛋黄是溏心的？",
     "水开以后煮六分钟左右，捞出来放冷水里泡一分钟就可以了。"),
    ("晚上总是睡不着，有什么办法吗？",
     "每天固定时间上床，睡前一小时把灯调暗，手机放到别的房间去。"),
    ("虎皮兰多久浇一次水比较好？",
     "两三个星期浇一次就够了，等土完全干透了再浇。"),
    ("能推荐一个快手的素菜晚饭吗？",
     "可以做个菠菜炒鸡蛋，十分钟就好，一个锅就够了。"),
    ("地毯上洒了红酒怎么弄干净？",
     "先用纸巾按着吸，别来回擦，再蘸点冷水和洗洁精轻轻按压。"),
    ("周末去爬山要带些什么东西？",
     "多带几件衣服，一件防雨外套，地图，零食，足够的水和一个小急救包。"),
    ("每周买菜怎么才能省点钱？",
     "出门前先想好一周吃什么，列个清单，基本的东西买超市自己的牌子。"),
    ("为什么我烤的面包总是很硬？",
     "多半是面团发得不够，或者酵母放久了，找个暖和的地方多发一会儿。"),
    ("眼镜老是起雾怎么办？",
     "用一滴洗洁精洗一下镜片，让它自然晾干，会留下一层薄膜。"),
    ("怎么礼貌地拒绝别人的邀请？",
     "先真诚地谢谢对方，说这次去不了，再约个别的时间见面。"),
    ("怎么让猫不上厨房的台面？",
     "在厨房旁边放一个高一点的猫爬架，台面上别留吃的。"),
    ("从来没跑过步，应该怎么开始？",
     "先走路和慢跑交替着来，一周三次，慢慢增加跑的时间。"),
    ("剩米饭可以做点什么？",
     "第二天可以做蛋炒饭，加个鸡蛋，一把青豆，再放点酱油。"),
    ("怎么看牛油果熟没熟？",
     "在靠近果蒂的地方轻轻按一下，稍微有点软但不烂就是熟了。"),
    ("面试之前应该怎么准备？",
     "先了解一下这家公司，把常见问题的回答大声练几遍，再把路线查好。"),
    ("学外语怎么记单词最有效？",
     "每天用卡片复习几个单词，每个新词都自己造一个句子。"),
    ("新鲜的香菜怎么保存不容易蔫？",
     "把根剪一下，插在装水的杯子里放进冰箱，上面松松地盖一下。"),
    ("房子很小，怎么让它看起来大一点？",
     "墙面用浅色，窗户对面挂一面大镜子，家具选带腿的。"),
    ("把自己锁在门外了应该怎么办？",
     "先给房东或者有备用钥匙的人打电话，实在不行再找开锁师傅。"),
    ("锅烧糊了怎么清洗？",
     "锅底倒点水和小苏打，烧开以后放凉，再用刷子刷一刷。"),
]


def edit(text: str, language: str, how: int) -> str:
    """A light edit: a changed word (0), punctuation (1) or case (2); the first variant that changes the text."""
    if language == "zh":
        variants = [[text.replace("一下", "一点", 1), text.replace("可以", "能", 1), text.replace("，", "，那", 1),
                     "请问" + text],
                    [text.replace("，", "。", 1), text.replace("？", "呢？"), text[:-1] + "！"],
                    [text.replace("吗", "呀", 1), text[:-1] + "吧。"]][how]
    else:
        variants = [[text.replace(" the ", " a ", 1), text.replace(" a ", " one ", 1), text.replace(" I ", " we ", 1)],
                    [text.replace(",", "", 1).replace("?", "??").replace(".", "!")],
                    [text.upper()]][how]
    changed = [v for v in variants if v != text]
    assert changed, (text, how)
    return changed[0]


def records(language: str) -> tuple[list[dict], list[int], dict[int, int]]:
    """30 alpaca records: the 20 distinct ones, then edits of originals 0, 2, ..., 18 placed at 20-29.
    Returns (records, indices of the edits, {edit index: original index})."""
    pairs = EN if language == "en" else ZH
    out = [{"instruction": q, "input": "", "output": a} for q, a in pairs]
    copies: dict[int, int] = {}
    for k, original in enumerate(range(0, 20, 2)):
        q, a = pairs[original]
        # edit the question or the answer, alternately, never both: a light edit
        out.append({"instruction": edit(q, language, k % 3) if k % 2 == 0 else q, "input": "",
                    "output": a if k % 2 == 0 else edit(a, language, k % 3)})
        copies[20 + k] = original
    return out, sorted(copies), copies


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


# two unrelated conversations for the stage and run tests
HOUSEPLANT = ["I would like a houseplant that survives a dark flat, what do you suggest?",
              "A snake plant copes with little light and needs water only every few weeks."]
BREAD = ["My bread keeps coming out dense and heavy, what am I doing wrong?",
         "The dough probably did not rise long enough; give it a warm spot and more time."]


def conversation(n: int, texts: list[str], language: str = "en") -> dict:
    turns = [empty_turn("user" if i % 2 == 0 else "assistant", t) for i, t in enumerate(texts)]
    for t in turns:
        t["spoken_text"] = t["display_text"]
    return {"conversation_id": f"{language}-{n:016x}", "plan_index": n, "language": language, "split": "train",
            "topic": "t", "domain": "d", "scenario": "s", "persona": "p", "num_exchanges": len(turns) // 2,
            "seed": n, "text_digest": "x", "dataset": "ds", "turns": turns}


# diversity samples whose figures are known: one exchange four times, and four different ones
SAME = [[("user", "How do I bake bread?"), ("assistant", "Sure! Mix flour, water and yeast.")]] * 4
VARIED = [
    [("user", "How do I bake bread?"), ("assistant", "Sure! Mix flour, water and yeast.")],
    [("user", "Where can I park near the market?"), ("assistant", "Sure! Try the car park behind the church.")],
    [("user", "What should I wear to a wedding?"), ("assistant", "A light suit or a summer dress works well.")],
    [("user", "How do I keep herbs fresh?"), ("assistant", "Stand them in a glass of water in the fridge.")],
]
