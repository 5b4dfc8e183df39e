"""The report's diversity section: figures from the real diversity functions, drawn, and rendered by a real browser."""

import base64
import re
import shutil

import numpy as np
from test_report import chromium, images
from text_data import SAME, VARIED

from pipeline.config import REPO_ROOT
from pipeline.llm.prompts import Taxonomy
from pipeline.publish.diversity_report import diversity_section
from pipeline.publish.report import CSS
from pipeline.quality.diversity import diversity

ZH = [[("user", "周末去哪里玩比较好？"), ("assistant", "可以去公园散步，天气好的话还能野餐。")],
      [("user", "晚饭吃什么好呢？"), ("assistant", "做个番茄炒蛋吧，简单又下饭。")],
      [("user", "周末去哪里玩比较好？"), ("assistant", "可以去博物馆看看展览。")]]


def stats_diversity():
    out = {}
    for lang, convs in (("en", VARIED + SAME), ("zh", ZH)):
        tax = Taxonomy.load(REPO_ROOT / "prompts" / lang / "taxonomy.yaml")
        topics = {tax.topics[0][0]: 5, tax.topics[1][0]: 2, "a topic outside the taxonomy": 1}
        out[lang] = diversity(convs, lang, bleu_sample=50, opening_words=3 if lang == "en" else 4, topics=topics,
                              scenarios={tax.scenarios[0][0]: len(convs)}, taxonomy=tax)
    return out


def test_section_has_its_table_and_plots():
    html = diversity_section(stats_diversity())
    assert '<h2 id="diversity">Diversity</h2>' in html
    pngs = images(html)
    assert len(pngs) == 5  # lexical variety, topics, scenarios, openings per language
    assert all(base64.b64decode(p).startswith(b"\x89PNG") for p in pngs)
    assert "sure mix flour" in html and re.search(r"<td>en</td><td class=\"n\">8</td>", html)
    assert "No diversity figures yet" in diversity_section({})


def test_section_renders_in_headless_chromium(tmp_path):
    from PIL import Image

    page = tmp_path / "diversity.html"
    page.write_text(f'<!DOCTYPE html><html><head><meta charset="utf-8"><style>{CSS}</style></head><body>'
                    f"{diversity_section(stats_diversity())}</body></html>", encoding="utf-8")
    shot = tmp_path / "diversity.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,1800", page.resolve().as_uri())
    assert shot.is_file(), "chromium wrote no screenshot"
    shutil.copy(shot, tmp_path / "diversity-section.png")
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    non_white = (pixels < 245).any(axis=2).mean()
    assert non_white > 0.05 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 200
