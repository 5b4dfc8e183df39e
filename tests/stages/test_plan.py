import numpy as np
import pyarrow as pa

from pipeline.config import REPO_ROOT
from pipeline.ids import conversation_id, id_to_u64, split_for
from pipeline.llm.prompts import Taxonomy
from pipeline.stages.plan import PlanStage


def make_plan(digest="d1", done=None, seed=0):
    tax = Taxonomy.load(REPO_ROOT / "prompts/en/taxonomy.yaml")
    return PlanStage(dataset="ds", languages=["en"], exchanges={"en": (2, 4)}, seed=seed, text_digest=digest,
                     splits={"train": 0.8, "test": 0.2}, taxonomies={"en": tax},
                     done_ids=np.array(sorted(done or []), dtype=np.uint64))


def plan_rows(stage, n=50):
    return stage(pa.table({"id": list(range(n))})).to_pylist()


def test_ids_are_deterministic_and_content_addressed():
    a, b = plan_rows(make_plan()), plan_rows(make_plan())
    assert [r["conversation_id"] for r in a] == [r["conversation_id"] for r in b]
    assert [(r["topic"], r["num_exchanges"], r["seed"]) for r in a] == [(r["topic"], r["num_exchanges"], r["seed"]) for r in b]
    assert len({r["conversation_id"] for r in a}) == 50
    other = plan_rows(make_plan(digest="d2"))
    assert not {r["conversation_id"] for r in a} & {r["conversation_id"] for r in other}
    assert a[0]["conversation_id"] == conversation_id("ds", "en", 0, "d1")
    assert all("." not in r["conversation_id"] and "/" not in r["conversation_id"] for r in a)


def test_specs_respect_ranges_and_taxonomy():
    tax = Taxonomy.load(REPO_ROOT / "prompts/en/taxonomy.yaml")
    rows = plan_rows(make_plan(), 200)
    assert {r["num_exchanges"] for r in rows} == {2, 3, 4}
    assert {r["topic"] for r in rows} <= {t for t, _ in tax.topics}
    assert len({r["topic"] for r in rows}) > 20
    assert {r["split"] for r in rows} == {"train", "test"}


def test_done_ids_are_skipped():
    rows = plan_rows(make_plan())
    done = [id_to_u64(r["conversation_id"]) for r in rows[::3]]
    left = plan_rows(make_plan(done=done))
    assert [r["conversation_id"] for r in left] == [r["conversation_id"] for i, r in enumerate(rows) if i % 3]


def test_split_is_stable_and_follows_fractions():
    ids = [conversation_id("ds", "en", i, "d") for i in range(4000)]
    splits = [split_for(i, {"train": 0.9, "validation": 0.05, "test": 0.05}) for i in ids]
    assert splits == [split_for(i, {"train": 0.9, "validation": 0.05, "test": 0.05}) for i in ids]
    share = splits.count("train") / len(splits)
    assert 0.87 < share < 0.93


def test_weights_shape_the_sample_and_domains_are_carried(tmp_path):
    tax_file = tmp_path / "taxonomy.yaml"
    tax_file.write_text("topics:\n  - {name: a, domain: d1, weight: 3}\n  - {name: b, domain: d2}\n"
                        "scenarios: [s]\npersonas: [p]\n")
    tax = Taxonomy.load(tax_file)
    stage = PlanStage(dataset="ds", languages=["en"], exchanges={"en": (1, 1)}, seed=0, text_digest="d",
                      splits={"train": 1.0}, taxonomies={"en": tax})
    rows = plan_rows(stage, 4000)
    share_a = sum(r["topic"] == "a" for r in rows) / len(rows)
    assert 0.72 < share_a < 0.78  # weight 3 vs 1
    assert {(r["topic"], r["domain"]) for r in rows} == {("a", "d1"), ("b", "d2")}


def test_shipped_taxonomies_are_rich_enough():
    for lang in ("en", "zh"):
        tax = Taxonomy.load(REPO_ROOT / f"prompts/{lang}/taxonomy.yaml")
        assert len(tax.topics) >= 150 and len(set(t for t, _ in tax.topics)) == len(tax.topics)
        assert len(set(tax.domains.values())) >= 15 and len(tax.scenarios) >= 7 and len(tax.personas) >= 6


def test_a_different_seed_plans_different_specs():
    a, b = plan_rows(make_plan(seed=0)), plan_rows(make_plan(seed=1))
    assert [r["conversation_id"] for r in a] == [r["conversation_id"] for r in b]  # IDs: dataset/lang/index/digest
    differ = sum((x["topic"], x["scenario"], x["persona"], x["num_exchanges"]) != (y["topic"], y["scenario"], y["persona"], y["num_exchanges"])
                 for x, y in zip(a, b))
    assert differ >= 45  # of 50
