"""The near-duplicate stage on batches (no Ray): first seen wins with the copied ID in the rejects row, repeated
turns, the signatures the shard stage keeps under state/ preloaded by the next run, and the source-record check
inside the sequential read (the 30-record files of tests/text_data.py)."""

import numpy as np
import pytest
from text_data import BREAD, HOUSEPLANT, conversation, records, write_jsonl

from pipeline.config import DedupConfig
from pipeline.io.layout import Layout, write_parquet_atomic
from pipeline.io.near_dup_state import read_signatures, signature_parts
from pipeline.schema import REJECTS_SCHEMA, rejects_rows, rows_to_table
from pipeline.stages.near_dup import NearDupStage
from pipeline.stages.shard import ShardStage
from pipeline.stages.source import SourcePlanStage


def run_stage(stage, rows):
    return {r["conversation_id"]: r for r in stage(rows_to_table(rows)).to_pylist()}


def test_first_seen_wins_and_the_copy_names_it():
    stage = NearDupStage(DedupConfig())
    # the copy arrives first in the batch but has the later plan index: rows are checked in plan order
    copy = conversation(3, [HOUSEPLANT[0].replace("dark", "gloomy"), HOUSEPLANT[1]])
    out = run_stage(stage, [copy, conversation(1, HOUSEPLANT), conversation(2, BREAD)])
    assert out["en-0000000000000003"]["reject_reason"] == "near_duplicate"
    assert out["en-0000000000000003"]["reject_duplicate_of"] == "en-0000000000000001"
    assert out["en-0000000000000001"]["reject_reason"] is None and out["en-0000000000000002"]["reject_reason"] is None
    assert len(out["en-0000000000000001"]["near_dup_signature"]) == 128  # kept: its signature rides to the shard
    row = rejects_rows([out["en-0000000000000003"]])[0]
    assert (row["stage"], row["reason"], row["duplicate_of"]) == ("near_dup", "near_duplicate", "en-0000000000000001")
    # a later batch: a case-and-punctuation edit of the bread conversation is caught across batches
    later = run_stage(stage, [conversation(9, [t.upper().replace(",", "") for t in BREAD])])
    assert later["en-0000000000000009"]["reject_duplicate_of"] == "en-0000000000000002"


def test_a_repeated_exchange_is_a_repeated_turn():
    stage = NearDupStage(DedupConfig())
    looping = conversation(4, [*BREAD, "Thanks.", "You're welcome.", BREAD[0].lower(), "Anything else?"])
    short_repeat = conversation(5, [*HOUSEPLANT, "Thank you.", "You're welcome.", "Thank you!", "Bye now."])
    out = run_stage(stage, [looping, short_repeat])
    assert out["en-0000000000000004"]["reject_reason"] == "repeated_turn"
    assert out["en-0000000000000004"]["reject_failures"][0]["turn"] == 4
    assert out["en-0000000000000004"]["reject_failures"][0]["value"] == 0  # it repeats turn 0
    assert out["en-0000000000000005"]["reject_reason"] is None  # "Thank you." is under dedup.repeat_min_tokens


def test_the_next_run_starts_from_what_this_one_kept(tmp_path):
    """Run 1's shard stage writes the kept signatures under state/near_dup; run 2's stage preloads them: a near-copy
    of a kept conversation is rejected with that ID, the same conversation coming through again is not a copy of
    itself, and a conversation rejected since is not in the index."""
    layout = Layout(tmp_path)
    layout.make_dirs()
    first = NearDupStage(DedupConfig(), tmp_path)
    kept = [r for r in run_stage(first, [conversation(1, HOUSEPLANT), conversation(2, BREAD)]).values()]
    shard = ShardStage(tmp_path, "r1", [], write_samples=False, signature_settings=first.settings.tag())
    shard(rows_to_table(kept))  # a text-only run: no tars, but the signatures
    assert len(signature_parts(layout)) == 1
    ids, sigs = read_signatures(layout, first.settings.tag())
    assert ids == ["en-0000000000000001", "en-0000000000000002"] and sigs.shape == (2, 128)
    assert read_signatures(layout, "another-setting")[0] == []  # other settings: not comparable, not loaded

    second = NearDupStage(DedupConfig(), tmp_path)
    out = run_stage(second, [conversation(7, [HOUSEPLANT[0], HOUSEPLANT[1].replace("few", "three")]),
                             conversation(1, HOUSEPLANT)])
    assert second.preloaded == 2
    assert out["en-0000000000000007"]["reject_duplicate_of"] == "en-0000000000000001"
    assert out["en-0000000000000001"]["reject_reason"] is None  # itself, again (a crashed run's leftover)

    # the bread conversation is rejected later (say by the ASR check): a third run no longer holds it
    gone = dict(kept[1], reject_stage="verify", reject_reason="asr_error_rate_above_threshold", reject_details="")
    write_parquet_atomic(layout.rejects / "part-r1-0000000000aa.parquet", rows_to_table(rejects_rows([gone]), REJECTS_SCHEMA))
    third = NearDupStage(DedupConfig(), tmp_path)
    out = run_stage(third, [conversation(8, [t.upper() for t in BREAD])])
    assert third.preloaded == 1 and out["en-0000000000000008"]["reject_reason"] is None


@pytest.mark.parametrize("language", ["en", "zh"])
def test_source_records_are_checked_in_the_sequential_read(tmp_path, language):
    rows, edits, copies = records(language)
    path = write_jsonl(tmp_path / f"{language}.jsonl", rows)
    stage = SourcePlanStage(dataset="ds", language=language, source_name=path.name, text_digest="d",
                            splits={"train": 1.0}, fmt="auto", max_exchanges=4, max_answer_chars=2000,
                            done_ids=np.empty(0, dtype=np.uint64), path=path, block_rows=4, near_dup=DedupConfig())
    [task] = stage.read_tasks(parallelism=8)  # one read: the records in file order
    out = [r for block in task.read() for r in stage(block).to_pylist()]
    assert len(out) == 30
    rejected = {r["plan_index"]: r for r in out if r["reject_reason"]}
    assert sorted(rejected) == edits
    for i, r in rejected.items():
        assert (r["reject_stage"], r["reject_reason"]) == ("near_dup", "near_duplicate")
        assert r["reject_duplicate_of"] == stage.conversation_id(copies[i])
    # off: nothing is rejected
    stage.near_dup = None
    [task] = stage.read_tasks(parallelism=1)
    assert not [r for block in task.read() for r in stage(block).to_pylist() if r["reject_reason"]]
