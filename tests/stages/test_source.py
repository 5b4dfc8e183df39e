"""Source "dataset": reading JSONL / JSON / Parquet / saved HF datasets, shapes, suitability, rewriting."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.io.source_reader import SourceError, count_records, iter_records, source_files
from pipeline.reasons import Rejected
from pipeline.stages.source import SourcePlanStage, exchanges_of, to_messages, unsuitable_for_speech

ALPACA = {"instruction": "Give me a tip for sleeping better.", "input": "", "output": "Keep a regular bedtime and avoid screens late."}
SHAREGPT = {"conversations": [{"from": "system", "value": "be nice"}, {"from": "human", "value": "Hi, what is a good houseplant?"},
                              {"from": "gpt", "value": "A snake plant is hard to kill."}, {"from": "human", "value": "Why?"},
                              {"from": "gpt", "value": "It needs little water and little light."}]}
MESSAGES = {"messages": [{"role": "user", "content": "How do I boil an egg?"},
                         {"role": "assistant", "content": "Put it in boiling water for about eight minutes."}]}
CODE = {"instruction": "Write a Python loop", "output": "```python\nfor i in range(3):\n    print(i)\n```"}


def test_shapes_become_user_assistant_messages():
    assert to_messages(ALPACA) == [{"role": "user", "content": ALPACA["instruction"]},
                                   {"role": "assistant", "content": ALPACA["output"]}]
    sharegpt = to_messages(SHAREGPT)
    assert [m["role"] for m in sharegpt] == ["user", "assistant", "user", "assistant"]  # system dropped
    assert to_messages(MESSAGES)[1]["content"].startswith("Put it in")
    assert len(exchanges_of(sharegpt, max_exchanges=1)) == 2


@pytest.mark.parametrize("record, reason", [
    ({"text": "just text"}, "source_bad_shape"),
    (["not", "an", "object"], "source_bad_shape"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "source_bad_shape"),
    ({"messages": "nope"}, "source_bad_shape"),
])
def test_bad_shapes_are_rejected(record, reason):
    with pytest.raises(Rejected) as err:
        to_messages(record)
    assert err.value.reason == reason


@pytest.mark.parametrize("answer, reason", [
    ("```python\nprint(1)\n```", "source_has_code"),
    ("def f(x):\n    return x", "source_has_code"),
    ("| a | b |\n|---|---|\n| 1 | 2 |", "source_has_table"),
    ("The area is $\\pi r^2$.", "source_has_math"),
    ("Use \\frac{1}{2} of it.", "source_has_math"),
    ("x" * 3000, "source_answer_too_long"),
    ("", "source_empty_turn"),
    ("Keep a regular bedtime; avoid screens late.", None),
])
def test_suitability_for_speech(answer, reason):
    problem = unsuitable_for_speech([{"role": "user", "content": "Tell me."}, {"role": "assistant", "content": answer}], 2000)
    assert (problem[0] if problem else None) == reason


def test_readers_stream_every_format(tmp_path):
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in (ALPACA, MESSAGES)) + "\n{broken\n")
    (tmp_path / "b.json").write_text(json.dumps({"data": [SHAREGPT, CODE]}))
    pq.write_table(pa.Table.from_pylist([{"instruction": "Say hi", "input": "", "output": "Hi there!"}]), tmp_path / "c.parquet")
    records = list(iter_records(tmp_path))
    assert [i for i, _ in records] == list(range(6))
    assert isinstance(records[2][1], SourceError) and "a.jsonl line 3" in str(records[2][1])
    assert records[3][1] == SHAREGPT and records[5][1]["output"] == "Hi there!"
    assert count_records(tmp_path, limit=4) == 4
    with pytest.raises(SourceError, match="does not exist"):
        source_files(tmp_path / "missing")


def test_saved_hf_dataset_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list([ALPACA, ALPACA]).save_to_disk(str(tmp_path / "hf"))
    assert [r["instruction"] for _, r in iter_records(tmp_path / "hf")] == [ALPACA["instruction"]] * 2


def test_source_plan_stage_makes_specs_and_rejections():
    stage = SourcePlanStage(dataset="ds", language="en", source_name="src.jsonl", text_digest="d", splits={"train": 1.0},
                            fmt="auto", max_exchanges=4, max_answer_chars=2000, done_ids=np.empty(0, dtype=np.uint64))
    records = [json.dumps(r) for r in (ALPACA, SHAREGPT, CODE)] + ["!src.jsonl line 9: not JSON"]
    out = stage(pa.table({"source_index": [0, 1, 2, 3], "record": records})).to_pylist()
    assert [r["num_exchanges"] for r in out[:2]] == [1, 2]
    assert out[1]["source_messages"][0]["content"] == "Hi, what is a good houseplant?"
    assert [(r["reject_stage"], r["reject_reason"]) for r in out[2:]] == [("source", "source_has_code"),
                                                                          ("source", "source_not_json")]
    again = stage(pa.table({"source_index": [0], "record": records[:1]})).to_pylist()
    assert again[0]["conversation_id"] == out[0]["conversation_id"]  # content-addressed by source position


@pytest.mark.integration
def test_dataset_source_is_rewritten_by_the_real_llm(tmp_path, ray_session, llm_base_url):
    from conftest import small_config

    from pipeline.run.runner import run
    from pipeline.run.selection import StageSelection

    src = tmp_path / "instructions.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in (ALPACA, MESSAGES, CODE)) + "\nnot json\n")
    cfg = small_config(tmp_path / "out", "source.kind=dataset", f"source.path={src}", f"llm.base_url={llm_base_url}",
                       "llm.max_tokens=300")
    last = run(cfg, StageSelection.parse("generate"))["last_run"]
    assert last["planned"] == 4 and last["text_only"] + last["rejected"] == 4
    assert last["rejected_by_reason"].get("source/source_has_code") == 1
    assert last["rejected_by_reason"].get("source/source_not_json") == 1
    assert last["llm_requests"] >= 2  # both usable records went to the LLM (plus any repairs)
    cached = [r for p in sorted((tmp_path / "out/text").glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    for row in cached:  # what the LLM wrote replaced the source text, one exchange per source exchange
        assert row["num_exchanges"] == 1 and [t["role"] for t in row["turns"]] == ["user", "assistant"]
        assert row["domain"] == "source" and row["topic"] in (ALPACA["instruction"], MESSAGES["messages"][0]["content"])
