"""Diversity figures on small hand-made samples whose answers are known."""

import pytest
from text_data import SAME, VARIED

from pipeline.llm.prompts import Taxonomy
from pipeline.quality.diversity import coverage, distinct_n, diversity, openings, self_bleu


def test_distinct_n():
    assert distinct_n(SAME, "en", 1) == pytest.approx(10 / 40)  # 10 distinct words, 4 copies
    assert distinct_n(VARIED, "en", 2) > 0.9
    assert distinct_n([[("user", "你好你好")]], "zh", 1) == 0.5  # characters: 你 好 你 好
    assert distinct_n([], "en", 1) == 0.0


def test_self_bleu_separates_copies_from_varied_text():
    assert self_bleu(SAME, "en") == pytest.approx(100.0)
    assert self_bleu(VARIED, "en") < 20
    assert self_bleu(SAME[:1], "en") is None
    zh = [[("user", "今天天气怎么样"), ("assistant", "今天是晴天")]] * 2
    assert self_bleu(zh, "zh") == pytest.approx(100.0)


def test_openings_count_first_words():
    result = openings(VARIED, "en", words=1, top=2)
    assert result["assistant_turns"] == [["sure", 2, 0.5], ["a", 1, 0.25]]  # ties in text order
    same = openings(SAME, "en", words=3)
    assert same["user_first_turn"] == [["how do i", 4, 1.0]]
    assert same["assistant_turns"] == [["sure mix flour", 4, 1.0]]


def test_coverage_against_weights():
    weights = [("bread", 2.0), ("parking", 1.0), ("weddings", 1.0), ("herbs", 0.0)]
    result = coverage({"bread": 3, "parking": 1, "off-list": 2}, weights, top=2)
    assert result["items"] == 4 and result["conversations"] == 4 and result["outside_taxonomy"] == 2
    assert result["seen"] == 2 and result["seen_share"] == 0.5
    # by the weights, 4 draws see bread, parking and weddings with 1-(1-p)^4 each
    assert result["expected_seen"] == pytest.approx(round((1 - 0.5**4) + 2 * (1 - 0.75**4), 1))
    # shares 0.75/0.25/0/0 against 0.5/0.25/0.25/0: total variation 0.25
    assert result["total_variation"] == pytest.approx(0.25)
    assert result["most_over"][0] == ["bread", 3, 2.0] and result["most_under"][0] == ["weddings", 0, 1.0]


def test_diversity_of_one_language_with_the_real_taxonomy():
    from pipeline.config import REPO_ROOT

    taxonomy = Taxonomy.load(REPO_ROOT / "prompts" / "en" / "taxonomy.yaml")
    topic = taxonomy.topics[0][0]
    result = diversity(VARIED, "en", bleu_sample=3, opening_words=3, topics={topic: 4},
                       scenarios={taxonomy.scenarios[0][0]: 4}, taxonomy=taxonomy)
    assert result["sample_conversations"] == 4 and result["self_bleu_sample"] == 3
    assert result["topic_coverage"]["seen"] == 1 and result["topic_coverage"]["items"] == len(taxonomy.topics)
    assert result["scenario_coverage"]["conversations"] == 4
    assert 0 < result["distinct_1"] < 1 and result["self_bleu"] is not None
