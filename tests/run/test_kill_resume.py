"""Kill -9 the whole job at nine points, rerun, and check that nothing is lost, duplicated, rewritten or paid twice.

Each interrupted run is a real `python pipeline/main.py run` process (its own local Ray, Piper, faster-whisper);
pipeline/faults.py makes it stop and wait at the chosen point, then the test SIGKILLs it with every child
process. The LLM is the replay stub (tests/llm_stub.py: recorded SmolLM2 answers, counted per request): the
claim here is about resume, not about the LLM.

The oracle does not assume that anything is reproducible across runs. What the killed run had committed is
snapshotted, and the resumed output must keep it and complete it:
- every finished shard (tar + manifest part) is byte-identical afterwards, its manifest rows unchanged, and
  every rejects row written before the kill is still there, unchanged;
- every conversation that was in the text cache is spoken from the cache: no LLM request for it in the
  resumed run, and the kept sample says the cached text;
- every planned ID ends kept or rejected exactly once, and no rejection is an infrastructure error.
"""

import json
import os
import subprocess
import sys
import tarfile
import time

import pyarrow
import pyarrow.parquet as pq
import pytest
from conftest import small_config
from proc import kill_tree, popen

from pipeline.config import REPO_ROOT
from pipeline.io.layout import TMP_SUFFIX, Layout, file_sha256
from pipeline.io.text_cache import cached_parts
from pipeline.io.verify_output import verify_output
from pipeline.run.runner import run

pytestmark = pytest.mark.integration

POINTS = [  # (checkpoint, passes before the kill, what the kill must have left on disk)
    ("generate", 1, None),                        # during generation, one conversation already generated
    ("text_cache.mid_part", 0, "text"),           # half of a text-cache part written
    ("tts", 1, None),                             # during synthesis
    ("verify", 1, None),                          # during ASR verification
    ("shard.mid_tar", 0, "data"),                 # half of a tar written (a torn .tar.tmp)
    ("shard.between_tar_and_manifest", 0, "torn"),  # tar renamed into place, manifest part not yet
    ("shard.mid_rejects_part", 0, "rejects"),     # half of a rejects part written
    ("shard.after_manifest", 0, None),            # between shards: the first shard finished, more to come
    ("duplex.after_manifest", 0, "duplex"),       # a duplex tar and part committed, the main shard not yet written
]
CONVERSATIONS = 3
INFRASTRUCTURE_REASONS = {"llm_unreachable", "llm_timeout", "llm_http_error", "llm_connection_error", "generate_error",
                          "tts_error", "verify_error", "text_error", "voices_error"}


def overrides(base_url):
    return [f"plan.num_conversations={CONVERSATIONS}", f"llm.base_url={base_url}", "llm.max_tokens=200",
            "llm.batch_size=1", "plan.exchanges.en.min=1", "plan.exchanges.en.max=1", "tts.piper_noise_scale=0",
            "tts.piper_noise_w_scale=0", "tts.batch_size=1",
            "verify.batch_size=1", "verify.max_actors=1",  # one process counts the passes before a kill point
            "shard.conversations_per_shard=1",
            "duplex.enabled=true"]  # the duplex subset rides along: its commits are killed through too


def read_rows(paths):
    return [r for p in paths for r in pq.read_table(p).to_pylist()]


def duplex_ids(out):
    return [r["conversation_id"] for p in Layout(out).duplex_manifest_parts() for r in pq.read_table(p).to_pylist()]


def kept_ids(out):
    return [r["conversation_id"] for p in Layout(out).manifest_parts() for r in pq.read_table(p).to_pylist()
            if r["exchange_index"] == 0]


def rejected_ids(out):
    return [r["conversation_id"] for p in Layout(out).reject_parts() for r in pq.read_table(p).to_pylist()]


def planned(cfg, tmp_path):
    """Every spec the config plans (what `speechchat plan` writes): ID -> seed."""
    from pipeline.run.plan_file import write_plan

    write_plan(cfg, tmp_path / "plan.parquet")
    return {r["conversation_id"]: r["seed"] for r in pq.read_table(tmp_path / "plan.parquet").to_pylist()}


def snapshot(out):
    """What the killed run had committed: finished shards (tar and manifest part both in place), rejects rows,
    the text cache."""
    layout = Layout(out)
    tars = {t.stem: t for t in layout.shards()}
    finished = [p for p in layout.manifest_parts() if p.stem in tars]
    return {
        "tars": {str(tars[p.stem].relative_to(out)): file_sha256(tars[p.stem]) for p in finished},
        "manifest": {r["key"]: r for r in read_rows(finished)},
        "rejects": {r["conversation_id"]: r for r in read_rows(layout.reject_parts())},
        "cache": {r["conversation_id"]: r for r in read_rows(cached_parts(out))},
        "tmp": sorted(str(p.relative_to(out)) for p in out.rglob(f"*{TMP_SUFFIX}") if str(p.relative_to(out)) not in FOREIGN),
    }


def sample_texts(out, keys):
    """key -> (user display text, assistant display text) read from the samples' JSON inside the tars."""
    texts = {}
    for tar_path in Layout(out).shards():
        with tarfile.open(tar_path) as tf:
            for m in tf:
                if m.name.endswith(".json"):
                    meta = json.loads(tf.extractfile(m).read())
                    if meta["key"] in keys:
                        texts[meta["key"]] = (meta["user"]["display_text"], meta["assistant"]["display_text"])
    return texts


# a user's own files in the output folder, one in every folder the pipeline writes (nothing may delete, rewrite
# or read as data what it did not write: restart cleanup included)
FOREIGN = {"data/en/train/holiday-photos.tar": b"not a shard", "manifest/notes.parquet": b"not a manifest part",
           "rejects/mine.parquet": b"mine", "text/draft.parquet": b"draft", "state/todo.txt": b"todo",
           "data/en/duplex/train/other.tar": b"other", "manifest/duplex/x.parquet": b"x", "notes/draft.tmp": b"tmp"}


def plant_foreign(out):
    for rel, data in FOREIGN.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)


def assert_foreign_untouched(out):
    assert {rel: (out / rel).read_bytes() if (out / rel).is_file() else None for rel in FOREIGN} == FOREIGN


def test_the_stub_gives_this_plan_what_the_kill_points_need(llm_stub, tmp_path):
    """The kill points need two conversations that reach TTS and one rejected (a rejects part). The stub's
    answers for this plan are fixed, so this holds on every machine, or fails here and not as a timeout."""
    from pipeline.schema import rows_to_table
    from pipeline.stages.generate import GenerateStage

    cfg = small_config(tmp_path / "ds", *overrides(llm_stub.base_url))
    assert len(planned(cfg, tmp_path)) == CONVERSATIONS
    specs = pq.read_table(tmp_path / "plan.parquet").to_pylist()
    rows = GenerateStage(cfg.llm, llm_stub.base_url, REPO_ROOT / "prompts")(rows_to_table(specs)).to_pylist()
    outcome = [(r["conversation_id"], r["reject_stage"], r["reject_reason"]) for r in rows]
    assert 2 <= sum(r["reject_reason"] is None for r in rows) < CONVERSATIONS, outcome
    assert all(stage in (None, "generate") for _, stage, _ in outcome), outcome


@pytest.mark.parametrize("point, after, left", POINTS, ids=[p[0] for p in POINTS])
def test_kill_at_a_point_then_resume(point, after, left, tmp_path, ray_session, llm_stub):
    out, marker = tmp_path / "ds", tmp_path / "killed-here"
    cfg = small_config(out, *overrides(llm_stub.base_url))
    seed_of = planned(cfg, tmp_path)
    id_of = {seed: cid for cid, seed in seed_of.items()}
    plant_foreign(out)
    env = {**os.environ, "SPEECHCHAT_FAULT_AT": point, "SPEECHCHAT_FAULT_AFTER": str(after),
           "SPEECHCHAT_FAULT_MARKER": str(marker), "SPEECHCHAT_FAULT_WAIT_S": "300"}
    env.pop("RAY_ADDRESS", None)
    llm_stub.reset_counts()
    with open(tmp_path / "killed.err", "wb") as err:
        # the user's files make the folder non-empty and unmarked: the first run adopts it explicitly
        proc = popen([sys.executable, "pipeline/main.py", "run", "--config", "configs/smoke.yaml", "--out", str(out),
                      "--adopt-output", *overrides(llm_stub.base_url)], cwd=REPO_ROOT, env=env,
                     stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 300
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert marker.exists(), (f"the job never reached {point} (exit code {proc.poll()}):\n"
                                 + (tmp_path / "killed.err").read_text(errors="replace")[-3000:])
    finally:
        kill_tree(proc.pid)
    before = snapshot(out)
    layout = Layout(out)
    if left == "duplex":  # a duplex part whose main shard was never written
        assert {p.stem for p in layout.duplex_manifest_parts()} - {p.stem for p in layout.manifest_parts()}
    elif left == "torn":
        assert len(layout.shards()) > len(layout.manifest_parts())  # the kill left a tar without its manifest part
    elif left is not None:  # the kill left a half-written temp file in that folder
        assert [t for t in before["tmp"] if t.startswith(left + "/")], before["tmp"]
    if left in ("data", "text", "rejects"):
        # each writer process stops at its own fault point: two tasks writing at once leave two torn files
        torn_files = [out / t for t in before["tmp"] if t.startswith(left + "/")]
        for torn in torn_files:
            assert 0 < torn.stat().st_size  # really half a file: it does not read back
            with pytest.raises((tarfile.TarError, pyarrow.ArrowInvalid)):
                if left == "data":
                    with tarfile.open(torn) as tf:
                        tf.getmembers()
                else:
                    pq.read_table(torn)

    llm_stub.reset_counts()
    stats = run(cfg)  # resume
    resumed_requests = llm_stub.counts_by_seed()

    assert verify_output(out) == []
    assert_foreign_untouched(out)  # through the kill and the restart cleanup
    after_snap = snapshot(out)
    # 1. what was committed stays, byte for byte
    for rel, digest in before["tars"].items():
        assert after_snap["tars"].get(rel) == digest, f"{rel} was rewritten or removed by the resume"
    for key, row in before["manifest"].items():
        assert after_snap["manifest"].get(key) == row, f"manifest row {key} changed"
    for cid, row in before["rejects"].items():
        assert after_snap["rejects"].get(cid) == row, f"rejects row {cid} changed"
    # 2. every planned ID ends kept or rejected, exactly once
    kept = [r["conversation_id"] for r in after_snap["manifest"].values() if r["exchange_index"] == 0]
    manifest_kept = [r["conversation_id"] for r in read_rows(layout.manifest_parts()) if r["exchange_index"] == 0]
    rejected = [r["conversation_id"] for r in read_rows(layout.reject_parts())]
    assert len(manifest_kept) == len(set(manifest_kept)) and len(rejected) == len(set(rejected)), (manifest_kept, rejected)
    assert not set(kept) & set(rejected)
    assert set(kept) | set(rejected) == set(seed_of), "a planned conversation was lost (or an unplanned one appeared)"
    assert stats["totals"]["conversations_kept"] == len(kept)
    assert sorted(duplex_ids(out)) == sorted(manifest_kept)  # one timeline per kept conversation, none left over
    infra = {r["conversation_id"]: r["reason"] for r in after_snap["rejects"].values()
             if r["reason"] in INFRASTRUCTURE_REASONS}
    assert not infra, f"the crash was recorded as a property of conversations: {infra}"
    # 3. the LLM is never paid twice for a cached conversation; the rest are generated once in the resume
    done_before = set(before["rejects"]) | {r["conversation_id"] for r in before["manifest"].values()}
    for cid in set(before["cache"]) - done_before:
        assert resumed_requests.get(seed_of[cid], 0) == 0, f"{cid} was in the text cache but was generated again"
    for cid in set(seed_of) - set(before["cache"]) - done_before:
        assert 1 <= resumed_requests.get(seed_of[cid], 0) <= 1 + cfg.llm.repair_attempts, (cid, resumed_requests)
    assert set(resumed_requests) <= set(id_of), "the resume asked the LLM about something it did not plan"
    # 4. a cached conversation that ended kept says exactly the cached text
    keys = {f"{cid}_000": cid for cid in before["cache"] if cid in kept}
    for key, (user, assistant) in sample_texts(out, set(keys)).items():
        cached = before["cache"][keys[key]]["turns"]
        assert (user, assistant) == (cached[0]["display_text"], cached[1]["display_text"])


# --- in the middle of a re-synthesis round -------------------------------------------------------------------
# DECLARED FAULT INJECTION: the TTS fault hook (pipeline/tts/faults.py) makes every turn's first synthesis speak
# another text, so every turn fails verification once and is re-synthesised (with Piper's noise off the second
# synthesis is the right text, and the outcome is as deterministic as the points above). The job is killed in
# the first TTS batch of a re-synthesis round. The hook must reach the Ray workers, so the reference run, the
# killed run and the resume are all separate processes started with it in their environment.
RESYNTH_FAULT = '{"mode": "wrong_text", "fraction": 1.0, "attempts": 1}'


def cli(out, base_url, **env_extra):
    env = {**os.environ, "SPEECHCHAT_TTS_FAULT": RESYNTH_FAULT, **env_extra}
    env.pop("RAY_ADDRESS", None)
    log = open(f"{out}.log", "ab")  # the child writes it; read back when a run fails
    return subprocess.Popen([sys.executable, "pipeline/main.py", "run", "--config", "configs/smoke.yaml", "--out", str(out),
                             *overrides(base_url), "verify.resynthesis_rounds=1"], cwd=REPO_ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def finished(proc, out) -> bool:
    code = proc.wait(timeout=600)
    assert code == 0, open(f"{out}.log", errors="replace").read()[-3000:]
    return True


def test_kill_in_the_middle_of_a_resynthesis_round_then_resume(tmp_path, llm_stub_url):
    ref = tmp_path / "reference"
    assert finished(cli(ref, llm_stub_url), ref)
    reference = set(kept_ids(ref)), set(rejected_ids(ref))
    assert reference[0], "the reference run keeps nothing: the test would prove nothing"
    attempts = [r["user_synthesis_attempts"] for p in Layout(ref).manifest_parts() for r in pq.read_table(p).to_pylist()]
    assert attempts and all(a == 2 for a in attempts)  # every kept turn was re-synthesised once
    out, marker = tmp_path / "ds", tmp_path / "killed-here"
    proc = cli(out, llm_stub_url, SPEECHCHAT_FAULT_AT="tts.resynthesis", SPEECHCHAT_FAULT_AFTER="0",
               SPEECHCHAT_FAULT_MARKER=str(marker), SPEECHCHAT_FAULT_WAIT_S="300")
    try:
        deadline = time.monotonic() + 300
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert marker.exists(), f"the job never reached a re-synthesis round (exit code {proc.poll()})"
    finally:
        kill_tree(proc.pid)
    assert finished(cli(out, llm_stub_url), out)  # resume
    assert verify_output(out) == []
    kept, rejected = kept_ids(out), rejected_ids(out)
    assert len(kept) == len(set(kept)) and len(rejected) == len(set(rejected))  # no duplicates
    assert (set(kept), set(rejected)) == reference  # nothing lost, same outcome as an uninterrupted run
