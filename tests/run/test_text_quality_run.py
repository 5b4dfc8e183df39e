"""The text checks in whole runs on a local Ray with real parts: near-copies in a source dataset caught before the
LLM is paid (real llama.cpp server behind a counting proxy), a second run into the same output rejecting a
near-copy of what the first kept, and personal data, the judge (the real server, answering garbage once) and the
diversity report in one pipeline run with Piper. Exact-count end to end is in test_target_e2e.py."""

import json

import pyarrow.parquet as pq
import pytest
import webdataset as wds
from conftest import small_config
from fault_proxy import FaultProxy
from text_data import BREAD, HOUSEPLANT, records, write_jsonl

from pipeline.config import REPO_ROOT
from pipeline.ids import conversation_id
from pipeline.io.layout import Layout
from pipeline.io.text_cache import write_part
from pipeline.io.verify_output import verify_output
from pipeline.llm.prompts import Taxonomy
from pipeline.quality.personal_data import PLACEHOLDERS
from pipeline.run.runner import run
from pipeline.run.selection import StageSelection

pytestmark = pytest.mark.integration

# Piper without sampling noise, one conversation per batch and shard; verify off: these runs are about the text
AUDIO = ["tts.piper_noise_scale=0", "tts.piper_noise_w_scale=0", "tts.batch_size=1", "shard.conversations_per_shard=1",
         "verify.enabled=false"]


def rejects(out):
    return {r["conversation_id"]: r for p in Layout(out).reject_parts() for r in pq.read_table(p).to_pylist()}


def samples(out):
    return {s["__key__"]: json.loads(s["json"]) for tar in Layout(out).shards()
            for s in wds.WebDataset(str(tar), shardshuffle=False)}


def manifest(out):
    return [r for p in Layout(out).manifest_parts() for r in pq.read_table(p).to_pylist()]


@pytest.mark.parametrize("language", ["en", "zh"])
def test_near_copies_in_a_source_are_rejected_before_any_llm_call(tmp_path, ray_session, llm_stub_url, language):
    """30 records, 10 of them light edits of others (a changed word, punctuation, case): exactly those 10 are
    rejected as near_duplicate naming their originals, and the LLM is asked to rewrite only the other 20.

    What is checked is which requests reach the LLM's address, not what it answers: a recording proxy forwards
    them to the replay stub, so no model time is spent on answers that this test does not read (the rewrite path
    with the real server: tests/stages/test_source.py). (Every request failing would now stop the run: five
    failures in a row mean a broken server, not bad conversations.)"""
    rows, edits, copies = records(language)
    src = write_jsonl(tmp_path / "src.jsonl", rows)
    with FaultProxy(llm_stub_url, []) as proxy:  # records every request, forwards it to the stub
        cfg = small_config(tmp_path / "ds", f"source.path={src}", f"source.language={language}",
                           f"llm.base_url={proxy.base_url}", "llm.max_retries=0", "llm.repair_attempts=0",
                           config="configs/rewrite_en.yaml")
        stats = run(cfg, StageSelection.parse("generate"))

    def cid(i):
        return conversation_id(cfg.dataset, language, f"src.jsonl:{i}", cfg.text_digest())

    found = {cid_: r for cid_, r in rejects(tmp_path / "ds").items() if r["reason"] == "near_duplicate"}
    # the edits, before any LLM call; beyond them only rewrites the LLM was asked for (the stub's recorded answers
    # repeat, so two rewrites may nearly copy each other: the same check, after generation)
    assert {cid(i) for i in edits} <= set(found)
    assert set(found) - {cid(i) for i in edits} <= {cid(i) for i in range(len(rows)) if i not in edits}
    for i in edits:
        assert (found[cid(i)]["stage"], found[cid(i)]["duplicate_of"]) == ("near_dup", cid(copies[i]))
    # the LLM was asked once for each of the 20 others and never for an edit
    asked = [r["messages"][-1]["content"] for r in proxy.requests if "messages" in r]
    assert len(asked) == 20 and proxy.seen == ["pass"] * 20
    others = [r for r in rejects(tmp_path / "ds").values() if r["reason"] != "near_duplicate"]
    assert stats["last_run"]["rejected"] == len(found) + len(others)  # stub answers may be rejected on their own

    def quoted(text):
        return json.dumps(text, ensure_ascii=False)[1:-1]

    for i, record in enumerate(rows):
        times = sum(quoted(record["instruction"]) in a and quoted(record["output"]) in a for a in asked)
        assert times == (0 if i in edits else 1), (i, record)


def plant(folder, conversations):
    """A text cache as a generate run leaves it (the text of the runs below, fixed instead of generated)."""
    tax = Taxonomy.load(REPO_ROOT / "prompts/en/taxonomy.yaml")
    rows = []
    for n, (conv_id, texts) in enumerate(conversations):
        topic = tax.topics[n % 3][0]
        rows.append({"conversation_id": conv_id, "plan_index": n, "dataset": "speechchat-smoke", "language": "en",
                     "domain": tax.domains.get(topic, ""), "topic": topic, "scenario": tax.scenarios[0][0],
                     "persona": tax.personas[0][0], "num_exchanges": len(texts) // 2, "seed": n, "text_digest": "t",
                     "llm_model": "planted", "turns": [{"role": "user" if i % 2 == 0 else "assistant",
                                                       "display_text": t} for i, t in enumerate(texts)]})
    write_part(folder, "r0", rows)
    return folder


KEPT = "en-00000000000000a1"
PHONE = "en-00000000000000a2"
CARD = "en-00000000000000a3"
LOOP = "en-00000000000000a4"
COPY = "en-00000000000000b1"
NEW = "en-00000000000000b2"


def test_text_checks_in_a_pipeline_run_and_a_second_run_into_the_same_output(tmp_path, ray_session, llm_base_url):
    out = tmp_path / "ds"
    first = plant(tmp_path / "first", [
        (KEPT, HOUSEPLANT),
        (PHONE, ["Hi, I'm Sarah Johnson, please call me back on (415) 555-2671.",
                 "Of course, Sarah Johnson, I will call you back this afternoon."]),
        (CARD, ["Can you check my card 4111 1111 1111 1111 for me?", "I am sorry, I cannot check cards."]),
        (LOOP, [*BREAD, "Thanks, that helps a lot.", "You are welcome.", BREAD[0], "Anything else?"]),
    ])
    judge = ["judge.enabled=true", "judge.concurrency=1", "judge.repair_attempts=1", "judge.max_tokens=80",
             "judge.min_scores={speech_naturalness: 1, coherence: 1, helpfulness: 1, safety: 1}"]
    with FaultProxy(llm_base_url, ["bad_json", "bad_json"]) as proxy:  # the first judged conversation: garbage twice
        stats = run(small_config(out, *AUDIO, *judge, f"judge.base_url={proxy.base_url}",
                                 "personal_data.policy.bank_card=reject"),
                    StageSelection.parse("tts,verify,shard"), text_from=first)
    assert proxy.seen[:2] == ["bad_json", "bad_json"] and len(proxy.seen) == 3  # 2 judged, once repaired

    rejected = rejects(out)
    assert {k: (r["stage"], r["reason"]) for k, r in rejected.items()} == {
        CARD: ("personal_data", "personal_data"), LOOP: ("near_dup", "repeated_turn")}
    assert rejected[CARD]["metric"] == "bank_card" and "4111" not in rejected[CARD]["details"]
    assert (rejected[LOOP]["turn"], rejected[LOOP]["value"]) == (4, 0)

    by_id = {m["conversation_id"]: m for m in samples(out).values()}
    assert set(by_id) == {KEPT, PHONE}
    phone = by_id[PHONE]
    assert phone["schema_version"] == 3 and phone["personal_data_replaced"] == ["person_name", "phone"]
    said = phone["user"]["display_text"] + phone["assistant"]["display_text"]
    assert "Sarah" not in said and "2671" not in said
    assert any(p in phone["user"]["spoken_text"] for p in PLACEHOLDERS["en"]["phone"])  # what Piper read
    # one judged conversation got garbage twice and is kept unscored; the other was scored 1-5
    judged = sorted((m["judge"] for m in by_id.values()), key=lambda j: j["coherence"])
    assert judged[0] == dict.fromkeys(judged[0], -1)
    assert all(1 <= s <= 5 for s in judged[1].values())
    assert all(m["models"]["judge"] == "SmolLM2-135M-Instruct" for m in by_id.values())
    for row in manifest(out):  # the manifest carries the same scores and the personal data per kind
        assert {c: row[f"judge_{c}"] for c in judged[0]} == by_id[row["conversation_id"]]["judge"]
        if row["conversation_id"] == PHONE:
            assert {p["kind"]: p["replaced"] for p in row["personal_data"]} == {"person_name": 2, "phone": 1}

    saved = json.loads((out / "stats.json").read_text())
    assert saved["diversity"]["en"]["distinct_2"] == stats["diversity"]["en"]["distinct_2"]
    assert saved["personal_data"]["found_in_kept"] == {"person_name": 2, "phone": 1}
    assert saved["personal_data"]["rejected_conversations"] == {"bank_card": 1}
    assert (saved["judge"]["en"]["scored"], saved["judge"]["en"]["not_scored"]) == (1, 1)
    div = saved["diversity"]["en"]
    assert div["sample_conversations"] == div["kept_conversations"] == 2 and 0 < div["distinct_1"] <= 1
    assert div["topic_coverage"]["conversations"] == 2 and div["openings"]["user_first_turn"]
    report = (out / "report.html").read_text()
    assert 'id="diversity"' in report and 'id="text-checks"' in report and "bank_card" in report

    # a second run into the same output: a near-copy of a conversation the first one kept is rejected with its ID
    second = plant(tmp_path / "second", [(COPY, [HOUSEPLANT[0].replace("dark", "gloomy"), HOUSEPLANT[1]]),
                                         (NEW, BREAD)])
    run(small_config(out, *AUDIO), StageSelection.parse("tts,verify,shard"), text_from=second)
    rejected = rejects(out)
    assert (rejected[COPY]["stage"], rejected[COPY]["reason"], rejected[COPY]["duplicate_of"]) == (
        "near_dup", "near_duplicate", KEPT)
    assert {m["conversation_id"] for m in samples(out).values()} == {KEPT, PHONE, NEW}
    assert verify_output(out) == []
