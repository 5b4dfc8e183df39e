"""The bad-input catalogue, hostile part (issue 22): what a careless or hostile user, LLM, dataset, speaker corpus
or output folder can do, each case ending in its exact message or outcome. The case numbers are the issue's.

Servers: the LLM is `tests/hostile_llm.py`, a scripted OpenAI-compatible stand-in on 127.0.0.1 (not a model:
it answers what a case needs - a refused key, an HTML page, a trickle); the client, retries, validation and
rejections are the real code. Two cases run the pipeline on the session's local Ray. The property-based tests
at the end (hypothesis) feed random LLM outputs, configs and speaker manifests, bounded in examples.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import signal
import stat
import subprocess
import sys
import tarfile
import time
import tracemalloc
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hostile_llm import HostileLLM, Reply, content_reply, conversation_text, exchanges_asked
from proc import kill_tree, popen
from test_bad_input import clip_problem, config_error, pool_error, speaker

from pipeline.config import REPO_ROOT, ConfigError, LLMConfig, dump_resolved, load_config
from pipeline.io.layout import Layout, atomic_write
from pipeline.io.verify_output import verify_output
from pipeline.llm.base import LLMUnavailable
from pipeline.llm.parse import parse_conversation
from pipeline.main import main
from pipeline.reasons import REASONS, Rejected
from pipeline.schema import rows_to_table
from pipeline.stages.generate import GenerateStage
from pipeline.stages.text import TextStage

# the output-folder builders of the publish and shard tests (pytest puts only this file's folder on sys.path)
sys.path[:0] = [str(Path(__file__).parent / "publish"), str(Path(__file__).parent / "stages")]
from test_card import build_output  # noqa: E402

SMOKE = str(REPO_ROOT / "configs/smoke.yaml")


def cli(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def spec(i=0, exchanges=1, language="en"):
    return {"conversation_id": f"{language}-{i:016x}", "plan_index": i, "language": language, "topic": "baking bread",
            "scenario": "asking for advice", "persona": "a retired teacher", "num_exchanges": exchanges, "seed": 7 + i}


def generate(base_url, rows, **cfg):
    """The generate stage (real openai client, retries, validation) against `base_url`; the rows it returns."""
    stage = GenerateStage(LLMConfig(**{"timeout_s": 10, "max_retries": 1, **cfg}), base_url, REPO_ROOT / "prompts")
    return stage(rows_to_table(rows)).to_pylist()


def good_answer(body, path):
    return content_reply(conversation_text(exchanges_asked(body)))


# --- 1. outputs that are not ours to replace --------------------------------------------------------------


def special_files(tmp_path) -> list[Path]:
    """A named pipe, and (where the test may make device nodes, as root) a character device like /dev/full."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    found = [fifo]
    try:
        os.mknod(tmp_path / "full", stat.S_IFCHR | 0o666, os.makedev(1, 7))
        found.append(tmp_path / "full")
    except PermissionError:
        pass
    return found


def test_1_plan_never_replaces_a_device_or_a_pipe(tmp_path, capsys):
    for target in special_files(tmp_path):
        kind = "a named pipe" if stat.S_ISFIFO(os.stat(target).st_mode) else "a character device"
        rc, out, err = cli(capsys, "plan", "-c", SMOKE, "--out", target)
        assert rc == 2 and out == ""
        assert (f"speechchat: plan --out {target}: exists and is {kind}, not a regular file; refusing to replace "
                "it") in err
        assert not stat.S_ISREG(os.stat(target).st_mode)  # still the pipe / the device
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


def test_1_an_output_folder_that_is_a_pipe_is_refused_before_anything_starts(tmp_path, capsys):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    rc, _, err = cli(capsys, "check-config", "-c", SMOKE, "--out", fifo)
    assert rc == 2 and f"output folder {fifo}: exists and is a named pipe, not a folder" in err


def test_1_atomic_writes_never_replace_a_non_regular_file_nor_write_through_a_planted_temp_link(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(FileExistsError, match="refusing to replace a named pipe with a file"):
        atomic_write(fifo, lambda fh: fh.write(b"x"))
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and not (tmp_path / "pipe.tmp").exists()
    victim = tmp_path / "victim.txt"
    victim.write_text("someone else's file\n")
    (tmp_path / "config.yaml.tmp").symlink_to(victim)  # planted where the pipeline writes its temp file
    atomic_write(tmp_path / "config.yaml", lambda fh: fh.write(b"dataset: x\n"))
    assert victim.read_text() == "someone else's file\n" and (tmp_path / "config.yaml").read_text() == "dataset: x\n"


# --- 2, 3. output ownership (issue 18's owned outputs add the marker; these are the minimal guards) ------------


def test_2_cleanup_removes_only_the_pipelines_own_temp_files(tmp_path):
    layout = Layout(tmp_path / "out")
    layout.make_dirs()
    own = ["config.yaml.tmp", "stats.json.tmp", "manifest/shard-r1-0123456789ab.parquet.tmp",
           "data/en/train/shard-r1-0123456789ab.tar.tmp", "rejects/part-r1-0123456789ab.parquet.tmp"]
    mine = ["notes/draft.tmp", "draft.tmp", "data/en/train/draft.tmp", "manifest/notes.parquet.tmp"]
    for rel in own + mine:
        (layout.root / rel).parent.mkdir(parents=True, exist_ok=True)
        (layout.root / rel).write_bytes(b"partial")
    removed = layout.clean_unfinished()  # what `run` does first in an existing output
    assert sorted(p.relative_to(layout.root).as_posix() for p in removed) == sorted(own)
    assert all((layout.root / rel).read_bytes() == b"partial" for rel in mine)


def test_3_an_empty_out_is_an_error_not_the_current_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for command in ("check-config", "run"):
        rc, _, err = cli(capsys, command, "-c", SMOKE, "--out", "")
        assert rc == 2
        assert "command line (--out): out_dir: Value error, out_dir is empty (an unset shell variable in --out?)" in err
    assert list(tmp_path.iterdir()) == []


# --- 4. credentials in URLs -----------------------------------------------------------------------------------


def test_4_credentials_are_split_off_the_url_on_load_and_never_saved_or_printed(tmp_path):
    cfg = load_config(SMOKE, ["llm.base_url=http://user:s3cret-pw@127.0.0.1:9/v1"], tmp_path / "out")
    assert cfg.llm.base_url == "http://127.0.0.1:9/v1" and cfg.llm.url_credentials == "user:s3cret-pw"
    assert "s3cret-pw" not in dump_resolved(cfg) and "s3cret-pw" not in repr(cfg)
    assert "s3cret-pw" not in json.dumps(cfg.model_dump(mode="json"))
    # a config that fails to validate never echoes them either
    message = config_error(tmp_path, overrides=["llm.concurrency=http://u:s3cret-pw@h/v1"])
    assert "(got 'http://***@h/v1')" in message and "s3cret-pw" not in message


def test_4_the_client_still_sends_the_credentials_as_basic_auth(tmp_path):
    with HostileLLM(good_answer) as llm:
        url = llm.base_url.replace("http://", "http://user:s3cret-pw@")
        cfg = load_config(SMOKE, [f"llm.base_url={url}"], tmp_path / "out")
        stage = GenerateStage(cfg.llm, cfg.llm.base_url, REPO_ROOT / "prompts")
        [row] = stage(rows_to_table([spec()])).to_pylist()
    assert row["reject_reason"] is None and len(row["turns"]) == 2
    assert llm.seen[0]["authorization"] == "Basic " + base64.b64encode(b"user:s3cret-pw").decode()


def test_4_publish_refuses_a_file_holding_a_url_with_credentials(tmp_path, capsys):
    root = tmp_path / "speechchat-smoke"
    build_output(root, languages=("en",))
    (root / "config.yaml").write_text("llm:\n  base_url: http://user:s3cret-pw@llm.example/v1\n")
    rc, _, err = cli(capsys, "publish", "-c", SMOKE, "--out", root, "--repo", "acme/x", "--dry-run")
    assert rc == 1
    assert "config.yaml: holds a URL with credentials (scheme://user:password@host); remove them" in err
    assert "s3cret-pw" not in err


@pytest.mark.integration
def test_4_6_a_refused_key_stops_the_run_records_nothing_and_leaks_no_credentials(tmp_path, ray_session, capsys):
    """Case 6 (every request HTTP 401 -> exit 3, nothing rejected, the rerun with the key fixed generates them)
    and case 4 (the URL's password in no saved file, console message or Ray log)."""
    key_ok = {"value": False}

    def answer(body, path):
        if not key_ok["value"]:
            return Reply(status=401, body=b'{"error": {"message": "invalid api key"}}')
        return good_answer(body, path)

    out = tmp_path / "out"
    with HostileLLM(answer) as llm:
        url = llm.base_url.replace("http://", "http://user:s3cret-pw@")
        argv = ["run", "-c", SMOKE, "--out", out, "--stages", "generate", f"llm.base_url={url}",
                "plan.num_conversations=3", "llm.batch_size=3", "plan.exchanges.en.min=1", "plan.exchanges.en.max=1"]
        rc, _, err = cli(capsys, *argv)
        assert rc == 3
        assert (f"speechchat: stopped: LLM server {llm.base_url} unusable: every request is refused with HTTP 401 "
                "(unauthorized); check the key in $OPENAI_API_KEY (set)") in err
        assert Layout(out).reject_parts() == [] and not list((out / "text").glob("*.parquet"))
        saved = [out / "config.yaml", out / "config.en.yaml", out / "state/runs.jsonl"]
        assert all(p.is_file() for p in saved)
        logs = Path(ray_session._private.worker._global_node.get_logs_dir_path())
        for path in [*saved, *(p for p in logs.rglob("*") if p.is_file())]:
            assert b"s3cret-pw" not in path.read_bytes(), path
        assert "s3cret-pw" not in err
        key_ok["value"] = True
        rc, _, err = cli(capsys, *argv)
    assert rc == 0, err
    assert sum(pq.ParquetFile(p).metadata.num_rows for p in (out / "text").glob("*.parquet")) == 3


# --- 5. a server that trickles its answer ---------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_5_a_trickling_server_ends_as_llm_timeout(tmp_path):
    def answer(body, path):  # a whole answer, one byte a second (about 5 minutes of it)
        return Reply(body=content_reply(conversation_text(1)).body, trickle_s=1.0)

    with HostileLLM(answer) as llm:
        started = time.monotonic()
        [row] = generate(llm.base_url, [spec()], timeout_s=2, max_retries=1)
    assert row["reject_reason"] == "llm_timeout"
    assert row["reject_details"] == "no answer within 2.0s (in all, per attempt) after 1 retries"
    assert time.monotonic() - started < 20


# --- 6. systematic failures stop; conversation-specific ones are rejections -----------------------------------


def test_6_an_html_login_page_for_every_request_stops_the_run():
    page = Reply(body=b"<html><body>Please log in</body></html>", content_type="text/html")
    with HostileLLM(lambda body, path: page, models_reply=page) as llm, pytest.raises(LLMUnavailable) as err:
        generate(llm.base_url, [spec(i) for i in range(3)])
    assert str(err.value).startswith(f"LLM server {llm.base_url} unusable: not a chat completion: "
                                     "'<html><body>Please log in</body></html>', and GET /models does not answer "
                                     "with a model list")


def test_6_empty_bodies_on_every_request_stop_the_run_even_when_models_answers():
    with HostileLLM(lambda body, path: Reply(body=b"")) as llm, pytest.raises(LLMUnavailable) as err:
        generate(llm.base_url, [spec(i) for i in range(6)], concurrency=1)
    assert "unusable: the last 5 requests all failed, with no good answer between them" in str(err.value)


def test_6_a_failure_of_one_conversation_while_the_server_works_is_a_rejection():
    def answer(body, path):
        return Reply(status=500, body=b'{"error": "boom"}') if body.get("seed") == 8 else good_answer(body, path)

    with HostileLLM(answer) as llm:
        rows = generate(llm.base_url, [spec(0), spec(1), spec(2)], max_retries=1)
    assert [r["reject_reason"] for r in rows] == [None, "llm_http_error", None]
    assert rows[1]["reject_details"] == "HTTP 500 after 1 retries"


# --- 7. resources beyond the cluster ----------------------------------------------------------------------------


def test_7_an_actor_asking_more_than_any_node_has_is_named_with_the_numbers():
    from pipeline.executor.ray_data import resource_problems
    from pipeline.stages.base import Resources

    class Asking:
        name = "generate"
        resources = Resources(num_cpus=64, actors=1)

    assert resource_problems([Asking()], [{"CPU": 2.0}, {"CPU": 1.0}]) == [
        "llm.num_cpus=64: one generate actor asks for 64 CPUs, but the largest Ray node has 2 (the cluster: 3 CPUs "
        "on 2 node(s)); lower llm.num_cpus"]


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_7_llm_num_cpus_64_stops_before_ray_work_starts(tmp_path, ray_session, capsys):
    cpus = ray_session.cluster_resources()["CPU"]
    with HostileLLM(good_answer) as llm:
        rc, _, err = cli(capsys, "run", "-c", SMOKE, "--out", tmp_path / "out", "--stages", "generate",
                         f"llm.base_url={llm.base_url}", "llm.num_cpus=64", "plan.num_conversations=1")
    assert rc == 2
    assert f"llm.num_cpus=64: one generate actor asks for 64 CPUs, but the largest Ray node has {cpus:g}" in err
    assert llm.seen == []  # no request was made


# --- 8. YAML alias bombs ----------------------------------------------------------------------------------------


def test_8_a_yaml_alias_bomb_is_refused(tmp_path):
    lines = ["a: &a [" + ", ".join(["lol"] * 9) + "]"]
    lines += [f"{n}: &{n} [" + ", ".join([f"*{p}"] * 9) + "]" for p, n in zip("abcdefg", "bcdefgh")]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    assert bomb.stat().st_size < 500
    with pytest.raises(ConfigError) as err:
        load_config(bomb)
    assert str(err.value).endswith("bomb.yaml: expands to more than 20000 values (nested YAML aliases?); a config "
                                   "is a few hundred")


def test_8_many_aliases_and_huge_configs_are_refused(tmp_path):
    many = tmp_path / "many.yaml"
    many.write_text("a: &a [x]\n" + "".join(f"k{i}: *a\n" for i in range(150)))
    with pytest.raises(ConfigError, match=r"many.yaml: more than 100 YAML aliases \(\*name\): refusing what may be an "
                                          "alias bomb"):
        load_config(many)
    huge = tmp_path / "huge.yaml"
    huge.write_text("# " + "x" * (2 << 20) + "\n")
    with pytest.raises(ConfigError, match="huge.yaml: larger than 1 MiB; a config is a few KB"):
        load_config(huge)
    with pytest.raises(ConfigError, match="override tts: more than 100 YAML aliases"):
        load_config(SMOKE, ["tts=" + "{a: &a [1], " + ", ".join(f"k{i}: *a" for i in range(150)) + "}"])


# --- 9. bidirectional overrides, invisible and C1 control characters in LLM output ---------------------------------


def llm_turns(user):
    answer = {"exchanges": [{"user": user, "assistant": "That sounds like a lovely plan."}]}
    return parse_conversation(json.dumps(answer), 1, LLMConfig(), "en")


@pytest.mark.parametrize("char, name", [("\u202e", "U+202E RIGHT-TO-LEFT OVERRIDE"),
                                        ("\u2066", "U+2066 LEFT-TO-RIGHT ISOLATE"),
                                        ("\u009b", "U+009B control character"),
                                        ("\u200f", "U+200F RIGHT-TO-LEFT MARK")])
def test_9_bidi_and_c1_characters_in_llm_output_are_rejected_with_the_character_named(char, name):
    with pytest.raises(Rejected) as err:
        llm_turns(f"Could you help me plan {char}a picnic for Saturday?")
    assert (err.value.reason, err.value.details) == ("llm_control_characters", f"exchange 0 user: {name}")
    assert err.value.failures[0].turn == 0 and err.value.failures[0].role == "user"


def test_9_invisible_characters_are_stripped_and_never_reach_the_spoken_text():
    turns = llm_turns("Could\u200b you help me\ufeff plan a pic\u00adnic for Satur\u2060day?")
    assert turns[0]["display_text"] == "Could you help me plan a picnic for Saturday?"
    row = {"conversation_id": "en-1", "language": "en", "num_exchanges": 1, "turns": turns}
    [out] = TextStage(load_config(SMOKE).text)(rows_to_table([row])).to_pylist()
    assert out["reject_reason"] is None
    assert out["turns"][0]["spoken_text"] == "Could you help me plan a picnic for Saturday?"


def test_9_a_cached_turn_from_another_folder_with_an_override_is_rejected_in_the_text_stage():
    turns = [{"role": "user", "display_text": "Hello \u202eyou there, friend."},
             {"role": "assistant", "display_text": "Hello to you as well."}]
    row = {"conversation_id": "en-1", "language": "en", "num_exchanges": 1, "turns": turns}
    [out] = TextStage(load_config(SMOKE).text)(rows_to_table([row])).to_pylist()
    assert (out["reject_reason"], out["reject_details"]) == ("text_control_characters",
                                                             "turn 0: U+202E RIGHT-TO-LEFT OVERRIDE")


# --- 10, 11. hostile dataset folders: links, truncated parts, oversized members ---------------------------------


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "speechchat-smoke"
    build_output(root, languages=("en",))
    return root


def rewrite_tar(tar_path: Path, extra: list[tarfile.TarInfo]) -> None:
    members = []
    with tarfile.open(tar_path) as tf:
        for m in tf:
            members.append((m, tf.extractfile(m).read()))
    with tarfile.open(tar_path, "w") as tf:
        for m, data in members:
            tf.addfile(m, io.BytesIO(data))
        for info in extra:
            tf.addfile(info)


def test_10_symlink_and_hard_link_members_are_listed_problems_not_a_crash(dataset, capsys):
    tar = Layout(dataset).shards()[0]
    key = pq.read_table(Layout(dataset).manifest_parts()[0]).column("key")[0].as_py()
    link = tarfile.TarInfo(f"{key}.extra")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    hard = tarfile.TarInfo(f"{key}.more")
    hard.type, hard.linkname = tarfile.LNKTYPE, "nowhere"
    rewrite_tar(tar, [link, hard])
    rc, _, err = cli(capsys, "verify-output", dataset)
    assert rc == 1
    assert f"{tar.name}: member '{key}.extra' is a symbolic link, not a regular file" in err
    assert f"{tar.name}: member '{key}.more' is a hard link, not a regular file" in err
    rc, _, err = cli(capsys, "publish", "-c", SMOKE, "--out", dataset, "--repo", "acme/x", "--dry-run")
    assert rc == 1 and "fails verify-output, refusing to publish" in err and "is a symbolic link" in err


def test_10_a_truncated_manifest_part_is_a_listed_problem(dataset, capsys):
    part = Layout(dataset).manifest_parts()[0]
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    rc, _, err = cli(capsys, "verify-output", dataset)
    assert rc == 1 and f"manifest/{part.name}: does not open as Parquet (" in err
    rc, _, err = cli(capsys, "publish", "-c", SMOKE, "--out", dataset, "--repo", "acme/x", "--dry-run")
    assert rc == 1 and f"manifest/{part.name}: does not open as Parquet" in err
    # a run resuming into such a folder stops with the file named, before anything is started
    with pytest.raises(ConfigError, match=f"{part}: damaged Parquet part"):
        Layout(dataset).done_ids()


@pytest.mark.timeout(120)
def test_11_a_member_declaring_2_gb_is_a_problem_read_in_bounded_memory(dataset):
    tar = Layout(dataset).shards()[0]
    key = pq.read_table(Layout(dataset).manifest_parts()[0]).column("key")[0].as_py()
    size = 2 << 30
    info = tarfile.TarInfo(f"{key}.user.flac")
    info.size = size
    with tarfile.open(tar) as tf:
        tf.getmembers()
        end = tf.offset  # where the zero blocks that end the archive start
    with open(tar, "r+b") as fh:  # a sparse member after the others: 2 GB declared, no disk used
        fh.truncate(end)
        fh.seek(end)
        fh.write(info.tobuf(format=tarfile.GNU_FORMAT))
        fh.seek(size, 1)
        fh.write(b"\0" * 1024)
    tracemalloc.start()
    try:
        problems = verify_output(dataset)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert f"{tar.name}: sample {key} user.flac declares 2,147,483,648 bytes (more than 67,108,864)" in problems
    assert peak < 64 << 20


def test_11_a_flac_turn_declaring_eleven_minutes_is_a_problem(dataset, capsys):
    layout = Layout(dataset)
    tar = layout.shards()[0]
    with tarfile.open(tar) as tf:
        member = next(m for m in tf if m.name.endswith(".user.flac"))
    data = bytearray(tar.read_bytes())
    header = member.offset_data
    packed = int.from_bytes(data[header + 18: header + 26], "big")
    rate = packed >> 44
    packed = (packed & ~((1 << 36) - 1)) | (rate * 660)  # STREAMINFO's total samples: 11 minutes
    data[header + 18: header + 26] = packed.to_bytes(8, "big")
    tar.write_bytes(bytes(data))
    rc, _, err = cli(capsys, "verify-output", dataset)
    assert rc == 1
    assert f"{tar.name}: sample {member.name.split('.')[0]} user.flac lasts 660 s (more than 600 s)" in err


# --- 12. speaker pools: clip paths that leave the pool folder, NUL bytes, too-long paths ---------------------------


def test_12_an_absolute_clip_path_outside_the_pool_folder_is_dropped(tmp_path):
    assert clip_problem(tmp_path, "/etc/passwd") == "bad: /etc/passwd: absolute path outside the pool folder"


def test_12_an_absolute_clip_path_inside_the_pool_folder_is_kept(tmp_path):
    from test_bad_input import clip_pool

    from pipeline.voices.pool import check_references, load_pool

    pool_file = clip_pool(tmp_path, str(tmp_path / "pool" / "good.wav"))
    kept, dropped = check_references(load_pool(pool_file), pool_file)
    assert [s.speaker_id for s in kept] == ["piper-en_US-joe-medium", "bad"] and dropped == []


def test_12_nul_bytes_and_too_long_paths_drop_the_speaker_with_the_reason(tmp_path):
    assert clip_problem(tmp_path / "a", "clips/a\x00b.wav") == "bad: clips/a\x00b.wav: path holds a NUL byte"
    long = "x/" * 1000 + "a.wav"
    assert clip_problem(tmp_path / "b", long) == f"bad: {long}: path of {len(long)} characters (more than 1024)"
    name = "n" * 300 + ".wav"  # under 1024 characters, over the filesystem's 255 per name
    assert clip_problem(tmp_path / "c", name) == f"bad: {name}: not usable (File name too long)"


# --- 13. names with a trailing newline --------------------------------------------------------------------------


def test_13_names_with_a_trailing_newline_are_refused(tmp_path):
    assert "dataset name 'abc\\n' must match" in config_error(tmp_path, 'dataset: "abc\\n"\n')
    assert "split name 'train\\n' must match" in config_error(tmp_path, 'shard: {splits: {"train\\n": 1.0}}\n')
    assert "split name 'test\\n' must match" in config_error(tmp_path, 'voices: {test_split: "test\\n"}\n')
    assert "line 1: bad speaker record" in pool_error(tmp_path, speaker(speaker_id="ok\n"))


# --- 14. clear errors instead of tracebacks ---------------------------------------------------------------------


def test_14_a_negative_seed_and_an_infinite_factor_are_config_errors(tmp_path, capsys):
    rc, _, err = cli(capsys, "plan", "-c", SMOKE, "--out", tmp_path / "p.parquet", "plan.seed=-1")
    assert rc == 2 and "command line: plan.seed: Input should be greater than or equal to 0 (got -1)" in err
    rc, _, err = cli(capsys, "run", "-c", SMOKE, "--out", tmp_path / "o", "plan.seed=-1")
    assert rc == 2 and "plan.seed: Input should be greater than or equal to 0 (got -1)" in err
    rc, _, err = cli(capsys, "check-config", "-c", SMOKE, "target.conversations=3", "target.max_plan_factor=.inf")
    assert rc == 2 and "command line: target.max_plan_factor: Input should be a finite number (got inf)" in err


def test_14_a_base_that_is_a_binary_file_is_a_config_error(tmp_path):
    (tmp_path / "binary.yaml").write_bytes(bytes(range(256)))
    (tmp_path / "c.yaml").write_text("base: binary.yaml\n")
    with pytest.raises(ConfigError, match=r"binary.yaml: not a UTF-8 text file \(byte 128\); a config is YAML text"):
        load_config(tmp_path / "c.yaml")


def test_14_plan_into_a_folder_and_a_run_into_a_file_are_clear_errors(tmp_path, capsys):
    rc, _, err = cli(capsys, "plan", "-c", SMOKE, "--out", tmp_path)
    assert rc == 2
    assert f"plan --out {tmp_path}: is a folder; give a file name in it, e.g. {tmp_path}/specs.parquet" in err
    afile = tmp_path / "afile"
    afile.write_text("mine\n")
    rc, _, err = cli(capsys, "plan", "-c", SMOKE, "--out", afile / "specs.parquet")
    assert rc == 2 and f"plan --out {afile}/specs.parquet: {afile} is a file, not a folder" in err
    rc, _, err = cli(capsys, "run", "-c", SMOKE, "--out", afile)
    assert rc == 2 and f"output folder {afile}: exists and is a file, not a folder" in err
    assert afile.read_text() == "mine\n"


# --- 15. a dotted override of a mapping -------------------------------------------------------------------------


def test_15_a_mapping_given_on_the_command_line_replaces_the_configured_one(tmp_path):
    cfg = load_config(SMOKE, ["shard.splits={dev: 0.5, eval: 0.5}"], tmp_path)
    assert cfg.shard.splits == {"dev": 0.5, "eval": 0.5}
    cfg = load_config(SMOKE, ["shard.splits.dev=0.0"], tmp_path)  # one key named: merged
    assert cfg.shard.splits == {"train": 1.0, "dev": 0.0}
    cfg = load_config(SMOKE, ["tts={max_actors: 2}"], tmp_path)  # a section: merged key by key
    assert cfg.tts.max_actors == 2 and cfg.tts.backend == "piper"


def test_15_a_mapping_merged_across_config_files_says_so(tmp_path):
    message = config_error(tmp_path, "shard: {splits: {dev: 0.5, eval: 0.5}}\n")
    assert re.search(r"shard\.splits: Value error, split fractions sum to 2\.0, need 1\.0 \(merged key by key from "
                     r"\S*configs/base\.yaml and \S*c\.yaml: a base's keys stay unless set again; on the command "
                     r"line a mapping replaces the configured one\)", message), message


# --- 16. a huge plan: estimate, disk cap, progress, no temp file left on any exit -----------------------------------


def test_16_a_trillion_conversation_plan_is_estimated_and_refused_when_it_cannot_fit(tmp_path, capsys):
    out = tmp_path / "specs.parquet"
    rc, _, err = cli(capsys, "plan", "-c", SMOKE, "--out", out, "plan.num_conversations=1000000000000")
    assert rc == 2
    assert f"planning 1,000,000,000,000 conversation specs -> {out}: about " in err
    assert " TB and " in err and " days (estimated from the first 4,096; " in err
    assert "the plan does not fit on the disk; lower plan.num_conversations or choose another --out" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 128 + signal.SIGTERM), (signal.SIGINT, 130)])
@pytest.mark.timeout(180)
def test_16_a_killed_plan_shows_its_estimate_and_leaves_no_temp_file(tmp_path, sig, code):
    out = tmp_path / "specs.parquet"
    # SIGINT back to its default in the child: a suite started in the background (nohup, `&`) inherits it ignored,
    # and Python then never turns it into KeyboardInterrupt
    proc = popen([sys.executable, "-m", "pipeline", "plan", "-c", SMOKE, "--out", str(out),
                  "plan.num_conversations=100000000"], cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True,
                 preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = proc.stderr.readline()  # the estimate, after the first block
        assert line.startswith(f"planning 100,000,000 conversation specs -> {out}: about "), line
        assert (tmp_path / "specs.parquet.tmp").exists()
        proc.send_signal(sig)
        rest = proc.communicate(timeout=60)[1]
    finally:
        kill_tree(proc.pid)
    assert proc.returncode == code, rest
    assert list(tmp_path.iterdir()) == []


def test_16_progress_is_reported(tmp_path, monkeypatch):
    from pipeline.run import plan_file

    monkeypatch.setattr(plan_file, "PROGRESS_EVERY_S", 0.0)
    lines: list[str] = []
    plan_file.write_plan(load_config(SMOKE), tmp_path / "s.parquet", total=9000, block_rows=4096, report=lines.append)
    assert lines[0].startswith(f"planning 9,000 conversation specs -> {tmp_path / 's.parquet'}: about ")
    assert lines[1].startswith("planned 8,192 / 9,000 (91.0%), ") and lines[2].startswith("planned 9,000 / 9,000")


# --- 17. one rule for relative out_dir --------------------------------------------------------------------------


def test_17_out_dir_in_a_config_is_relative_to_the_repository_root_and_out_to_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text(f"base: {SMOKE}\nout_dir: relout\n")
    assert load_config(tmp_path / "c.yaml").output_dir() == REPO_ROOT / "relout"
    assert load_config(tmp_path / "c.yaml", [], "here").output_dir() == tmp_path / "here"
    assert load_config(SMOKE, ["out_dir=relout"]).output_dir() == REPO_ROOT / "relout"  # a config key, wherever set


def test_every_reason_the_hostile_cases_record_is_registered():
    for code in ("llm_control_characters", "text_control_characters", "llm_bad_response", "llm_timeout",
                 "llm_http_error"):
        assert code in REASONS


# --- property-based: random LLM outputs, configs and speaker manifests ---------------------------------------------
# The strategies are mostly valid input with hostile ingredients mixed in, so that examples get past the first
# check and reach the code that must hold (a random string is rejected as not JSON and proves little).

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pipeline.normalize.chars import hostile_character  # noqa: E402

# bounded: a few dozen examples each, no example database written into the repository
PROPERTY = settings(max_examples=40, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
HOSTILE = ["\u202e", "\u2066", "\u200b", "\ufeff", "\u009b", "\x00", "\x07", "\ud800", "\u00ad", "\U000f0000",
           "\u200f", "\u2028", "\n", '"}', '{"user": ', "as an AI language model", "<script>alert(1)</script>",
           "http://u:p@h/", "１２３", "汉字"]
SENTENCES = ["Could you tell me how to bake a simple loaf of bread at home?",
             "Sure, mix flour, water, salt and yeast, let it rise, then bake it for forty minutes.",
             "What is the best way to keep basil fresh in the kitchen?",
             "Keep the stems in a glass of water on the counter, away from direct sun."]


@st.composite
def turn_text(draw):
    """An English sentence, sometimes with hostile pieces put in at random places, sometimes anything."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=60))
    text = draw(st.sampled_from(SENTENCES))
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(HOSTILE)) + text[at:]
    return text


exchange = st.fixed_dictionaries({"user": turn_text(), "assistant": turn_text()})
json_value = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | turn_text(),
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(turn_text(), inner, max_size=3),
                          max_leaves=8)
llm_output = st.one_of(
    st.lists(exchange, min_size=1, max_size=2).map(lambda ex: json.dumps({"exchanges": ex})),  # the right shape
    st.lists(exchange, min_size=1, max_size=2).map(
        lambda ex: "Sure!\n```json\n" + json.dumps({"exchanges": ex}, ensure_ascii=False) + "\n```"),
    turn_text(),                                                             # prose
    json_value.map(json.dumps),                                              # some other JSON
)


@pytest.fixture(scope="module")
def scripted_llm():
    current = {"content": ""}
    with HostileLLM(lambda body, path: content_reply(current["content"])) as llm:
        yield llm, current


@PROPERTY
@given(content=llm_output)
def test_property_random_llm_output_ends_kept_or_rejected_with_a_registered_reason(scripted_llm, content):
    llm, current = scripted_llm
    current["content"] = content
    rows = generate(llm.base_url, [spec(0, 1), spec(1, 2)], repair_attempts=0)
    rows = TextStage(load_config(SMOKE).text)(rows_to_table(rows)).to_pylist()
    for row in rows:
        if row["reject_reason"] is not None:
            assert row["reject_reason"] in REASONS, row["reject_reason"]
            continue
        assert len(row["turns"]) == 2 * row["num_exchanges"]
        for turn in row["turns"]:
            assert turn["spoken_text"] and hostile_character(turn["spoken_text"]) is None, turn
            assert hostile_character(turn["display_text"]) is None, turn


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(root)): (p.lstat().st_mode, p.read_bytes() if p.is_file() and not p.is_symlink() else b"")
            for p in sorted(root.rglob("*"))}


# (dotted key, value) pairs: the catalogue's hostile settings, ordinary ones, and random values for some keys
HOSTILE_SETTINGS = [("plan.seed", -1), ("plan.seed", 2**70), ("target.max_plan_factor", float("inf")),
                    ("target.conversations", 3), ("dataset", "abc\n"), ("shard.splits", {"train\n": 1.0}),
                    ("shard.splits", {"dev": 0.5, "eval": 0.5}), ("voices.test_split", "test\n"),
                    ("plan.prompts_dir", "nope"), ("plan.prompts_dir", "configs"), ("llm.base_url", "http://u:pw@h/v1"),
                    ("llm.timeout_s", float("nan")), ("plan.languages", ["zh"]), ("plan.exchanges", {"en": None}),
                    ("voices.pool", "nope.jsonl"), ("tts.max_actors", "auto"), ("verify.max_wer", 2),
                    ("plan.num_conversations", 0), ("plan.num_conversations", 7), ("nonsense", 1), ("tts", [1])]
RANDOM_KEYS = ["dataset", "plan.seed", "plan.exchanges.en.min", "shard.splits.train", "llm.concurrency", "out_dir"]
random_value = st.one_of(st.none(), st.booleans(), st.integers(-5, 60), st.floats(), st.text(max_size=12),
                         st.lists(st.integers(0, 3), max_size=2))
setting = st.one_of(st.sampled_from(HOSTILE_SETTINGS), st.tuples(st.sampled_from(RANDOM_KEYS), random_value))


def _config_text(pairs: list[tuple[str, object]]) -> str:
    import yaml

    nested: dict = {}
    for dotted, value in pairs:
        node = nested
        *parents, last = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {}) if isinstance(node.get(key, {}), dict) else {}
        node[last] = value
    return yaml.safe_dump(nested, allow_unicode=True)


@PROPERTY
@given(file_settings=st.lists(setting, max_size=3), overrides=st.lists(setting, max_size=2),
       command=st.sampled_from(["check-config", "plan"]), out=st.sampled_from(["out", "", "pipe", "mine.txt/x"]))
def test_property_random_configs_end_in_exit_0_or_a_clear_error_and_touch_only_the_output(
        tmp_path_factory, capsys, monkeypatch, file_settings, overrides, command, out):
    import yaml

    sandbox = tmp_path_factory.mktemp("sandbox")
    (sandbox / "mine.txt").write_text("the user's file\n")
    os.mkfifo(sandbox / "pipe")
    monkeypatch.chdir(sandbox)  # a run writing into the current folder would show in the snapshot
    cfg = sandbox / "c.yaml"
    cfg.write_text(f"base: {SMOKE}\n" + _config_text(file_settings))
    target = "" if out == "" else sandbox / out / ("specs.parquet" if command == "plan" and out == "out" else "")
    argv = [command, "-c", cfg, "--out", target]
    for key, value in overrides:
        argv.append(f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}")
    before, repo_before = snapshot(sandbox), snapshot(REPO_ROOT / "configs")
    rc = main([str(a) for a in argv])  # an exception here is a traceback escaping the CLI
    err = capsys.readouterr().err
    assert rc in (0, 2), err
    if rc == 2:
        assert err.startswith("speechchat: ") and "Traceback" not in err
    after = snapshot(sandbox)
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert all(k == "out" or k.startswith("out/") for k in changed), changed
    assert snapshot(REPO_ROOT / "configs") == repo_before


# OUTSIDE and INSIDE stand for absolute paths of real audio files outside and inside the pool folder
clip_path = st.one_of(st.sampled_from(["good.wav", "OUTSIDE", "INSIDE", "/etc/passwd", "../../etc/passwd",
                                       "clips/none.wav", "a\x00b.wav", "x/" * 600 + "a.wav", "n" * 300 + ".wav", "",
                                       ".", "/", "\u202e.wav", "good.wav\n"]), st.text(max_size=30))
speaker_record = st.fixed_dictionaries(
    {"speaker_id": st.sampled_from(["s", "s", "s", "ok\n", "../x"]), "language": st.sampled_from(["en", "en", "zh"]),
     "source": st.just("s"), "license": st.just("cc0"), "backend": st.sampled_from(["xtts", "xtts", "piper"]),
     "references": st.lists(st.fixed_dictionaries({"path": clip_path, "duration_s": st.just(1.0),
                                                   "sample_rate": st.just(16000)}), min_size=1, max_size=2)})
manifest_line = st.one_of(speaker_record, speaker_record, st.text(max_size=30))


@PROPERTY
@given(lines=st.lists(manifest_line, max_size=4))
def test_property_random_speaker_manifests_load_drop_or_fail_with_a_reason(tmp_path_factory, lines):
    from test_bad_input import write_clip

    from pipeline.run.preflight import preflight
    from pipeline.voices.pool import reference_path

    base = tmp_path_factory.mktemp("pools")
    folder = base / "pool"
    write_clip(folder / "good.wav")
    write_clip(base / "outside.wav")
    stand_for = {"OUTSIDE": str(base / "outside.wav"), "INSIDE": str(folder / "good.wav")}
    text = [json.dumps(speaker(speaker_id="piper-en_US-joe-medium"))]
    for i, line in enumerate(lines):
        if isinstance(line, dict):
            line = {**line, "speaker_id": f"s{i}" if line["speaker_id"] == "s" else line["speaker_id"],
                    "references": [{**r, "path": stand_for.get(r["path"], r["path"])} for r in line["references"]]}
            line = json.dumps(line)
        text.append(line)
    pool_file = folder / "pool.jsonl"
    pool_file.write_text("\n".join(text) + "\n")
    before = snapshot(base)
    try:
        ctx = preflight(load_config(SMOKE, [f"voices.pool={pool_file}"], folder / "out"))
    except ConfigError as exc:
        assert str(exc).startswith("cannot start:\n  ")
    else:
        for s in ctx.pool:  # every kept speaker's clips are files inside the pool folder
            assert all(folder.resolve() in reference_path(pool_file, c).parents for c in s.references), s
        assert all(d["problem"] and d["speaker_id"] for d in ctx.dropped_speakers)
    assert snapshot(base) == before
