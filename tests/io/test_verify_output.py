"""verify-output on a real written dataset folder, then on copies damaged in one specific way each: every kind
of problem verify-output knows (pipeline/io/verify_output.py) has its own damaged folder, and each asserts the
exact message, and that it is the only problem found. Where a tar's content is damaged, the manifest's sha256
and offsets are brought in line with the new tar first, so that the check under test, not the checksum, finds it.
The folder holds a duplex subset too (the duplex stage's real rendering of the test rows; on these short turns,
with the energy pause detector, it loads no model), and the duplex checks have damaged folders of their own."""

import io
import json
import re
import shutil
import sys
import tarfile

import pyarrow.parquet as pq
import pytest
import soundfile as sf
from proc import run as run_proc
from rows import shard_conversation as conversation

from pipeline.audio import decode_audio, encode_flac
from pipeline.config import REPO_ROOT, DuplexConfig
from pipeline.io.layout import Layout, file_sha256
from pipeline.io.shard_writer import member_offsets
from pipeline.io.verify_output import verify_output
from pipeline.schema import DUPLEX_MANIFEST_SCHEMA, MANIFEST_SCHEMA, REJECTS_SCHEMA, rows_to_table
from pipeline.stages.duplex import DuplexStage
from pipeline.stages.shard import ShardStage

K1, K2, K3 = (f"en-{1:016x}_000", f"en-{1:016x}_001", f"en-{2:016x}_000")  # the first shard's samples
C1, C2, C4 = (f"en-{i:016x}" for i in (1, 2, 4))  # the first duplex shard's conversations; the rejected one


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("sound") / "ds"
    duplex = DuplexStage(DuplexConfig(enabled=True, pause_detector="energy"))  # silero-vad would be a model
    stage = ShardStage(root, "rv", ["t"])
    stage(duplex(rows_to_table([conversation(1, 2), conversation(2, 1)])))
    stage(duplex(rows_to_table([conversation(3, 3), conversation(4, 1, rejected=True)])))
    return root


def cli(folder):
    return run_proc([sys.executable, "pipeline/main.py", "verify-output", str(folder)], cwd=REPO_ROOT,
                    capture_output=True, text=True, timeout=120)


def test_a_sound_folder_passes_and_the_cli_says_ok(dataset):
    assert verify_output(dataset) == []
    layout = Layout(dataset)
    assert len(layout.duplex_shards()) == len(layout.duplex_manifest_parts()) == 2  # the duplex subset is checked too
    res = cli(dataset)  # counts the main shards only
    assert res.returncode == 0 and "OK (2 shards, 6 samples, 1 rejects parts)" in res.stdout


# --- damage -------------------------------------------------------------------------------------------


def first_shard(layout):
    """The tar holding K1 and its manifest part (tar names are hashes, so find it by content)."""
    for part in layout.manifest_parts():
        rows = pq.read_table(part).to_pylist()
        if K1 in {r["key"] for r in rows}:
            return layout.root / rows[0]["shard"], part
    raise AssertionError("no shard holds " + K1)


def duplex_shard(layout, tar, part):
    """The duplex tar and part of the same shard (the same name under data/en/duplex/train/, manifest/duplex/)."""
    return layout.duplex_dir("en", "train") / tar.name, layout.duplex_manifest / part.name


def read_members(tar_path):
    with tarfile.open(tar_path) as tf:
        return [(m.name, tf.extractfile(m).read()) for m in tf]


def write_members(tar_path, members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    tar_path.write_bytes(buf.getvalue())


def rewrite_manifest(part, edit=None, resync_tar=None, schema=MANIFEST_SCHEMA):
    """Rewrite a manifest part: `edit(rows)` changes rows; `resync_tar` brings sha256 and offsets in line with it."""
    rows = pq.read_table(part).to_pylist()
    if resync_tar is not None:
        digest = file_sha256(resync_tar)
        try:
            offsets = member_offsets(resync_tar)
        except tarfile.TarError:
            offsets = {}
        for r in rows:
            r["shard_sha256"] = digest
            r["offset"] = offsets.get(r["key"], r["offset"])
    if edit is not None:
        rows = edit(rows)
    pq.write_table(rows_to_table(rows, schema), part)


def edit_tar(tar, part, change, schema=MANIFEST_SCHEMA):
    write_members(tar, change(read_members(tar)))
    rewrite_manifest(part, resync_tar=tar, schema=schema)


def edit_member(tar, part, member, change):
    """Replace one member of a duplex tar by `change(its bytes)`, manifest in line."""
    edit_tar(tar, part, lambda ms: [(n, change(d) if n == member else d) for n, d in ms], DUPLEX_MANIFEST_SCHEMA)


def edit_json(change):
    def edit(data):
        meta = json.loads(data)
        change(meta)
        return json.dumps(meta).encode()
    return edit


def damage(root, how):
    """Damage the folder `root` in one way; returns the exact message verify-output must print (a pattern where
    it quotes libsndfile, whose message names an object's address)."""
    layout = Layout(root)
    tar, part = first_shard(layout)
    rel, name = str(tar.relative_to(root)), tar.name
    dtar, dpart = duplex_shard(layout, tar, part)
    drel, dname, dmanifest = str(dtar.relative_to(root)), dtar.name, f"manifest/duplex/{dpart.name}"
    if how == "not_an_output":
        shutil.rmtree(root / "data")
        shutil.rmtree(root / "manifest")
        return f"{root}: not a speechchat output folder (no data/ or manifest/)"
    if how == "temp_file":
        (root / "manifest" / "shard-rx-000000000000.parquet.tmp").write_bytes(b"x")
        (root / "manifest" / "notes.parquet.tmp").write_bytes(b"x")  # not a name of the pipeline's: not its problem
        return "leftover temp file manifest/shard-rx-000000000000.parquet.tmp"
    if how == "orphan_tar":
        (tar.parent / "shard-rx-000000000000.tar").write_bytes(tar.read_bytes())
        return f"{tar.parent.relative_to(root)}/shard-rx-000000000000.tar: no manifest part (unfinished shard)"
    if how == "empty_manifest_part":
        pq.write_table(MANIFEST_SCHEMA.empty_table(), root / "manifest" / "shard-rv-0000000000e0.parquet")
        return "manifest/shard-rv-0000000000e0.parquet: empty manifest part"
    if how == "path_escapes_the_output":
        def escape(rows):
            return [{**r, "shard": "../../outside/" + name} for r in rows]
        rewrite_manifest(part, escape)
        return f"manifest/{part.name}: shard path '../../outside/{name}' points outside the output"
    if how == "missing_tar":
        tar.unlink()
        return f"manifest/{part.name}: shard {rel} is missing"
    if how == "flipped_byte":
        data = bytearray(tar.read_bytes())
        data[-2000] ^= 0xFF
        tar.write_bytes(bytes(data))
        return f"{name}: sha256 differs from the manifest"
    if how == "not_a_tar":
        tar.write_bytes(b"this is not a tar archive at all\n" * 64)
        rewrite_manifest(part, resync_tar=tar)
        return f"{name}: does not open as a tar (invalid header)"
    if how == "extra_sample":
        extra = f"en-{9:016x}_000"
        edit_tar(tar, part, lambda ms: ms + [(f"{extra}.{ext}", data) for n, data in ms if n.startswith(K1)
                                             for ext in [n.split(".", 1)[1]]])
        return f"{name}: sample {extra} is not in the manifest"
    if how == "missing_sample":
        edit_tar(tar, part, lambda ms: [(n, d) for n, d in ms if not n.startswith(K2)])
        return f"{name}: manifest sample {K2} is missing from the tar"
    if how == "wrong_member_set":
        edit_tar(tar, part, lambda ms: [(n, d) for n, d in ms if n != f"{K2}.assistant.flac"])
        return f"{name}: sample {K2} has parts ['json', 'user.flac'], expected ['assistant.flac', 'json', 'user.flac']"
    if how == "json_names_another_key":
        def rename(ms):
            return [(n, json.dumps({**json.loads(d), "key": K3}).encode() if n == f"{K2}.json" else d) for n, d in ms]
        edit_tar(tar, part, rename)
        return f"{name}: sample {K2} JSON names key '{K3}'"
    if how == "json_does_not_parse":
        edit_tar(tar, part, lambda ms: [(n, b"{not json" if n == f"{K2}.json" else d) for n, d in ms])
        return f"{name}: sample {K2} JSON does not parse"
    if how == "audio_not_flac":
        wav = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(200)
        edit_tar(tar, part, lambda ms: [(n, wav if n == f"{K2}.user.flac" else d) for n, d in ms])
        return f"{name}: sample {K2} user.flac is not FLAC"
    if how == "offset_mismatch":
        rows = {r["key"]: r for r in pq.read_table(part).to_pylist()}
        true = rows[K2]["offset"]

        def shift(rows):
            return [{**r, "offset": r["offset"] + 512} if r["key"] == K2 else r for r in rows]
        rewrite_manifest(part, shift)
        return f"{name}: sample {K2} offset {true + 512} in the manifest, {true} in the tar"
    if how == "duplicate_key":
        shutil.copy(part, part.with_name("shard-rv-00000000d0b1.parquet"))
        return f"key {K1} appears 2 times"  # every key of the part appears twice; the first is named
    if how == "rejected_twice":
        [rejects] = layout.reject_parts()
        shutil.copy(rejects, rejects.with_name("part-rv-00000000a9a1.parquet"))
        return f"conversation en-{4:016x} is rejected 2 times"
    if how == "member_is_a_link":  # an audio member replaced by a symbolic link of the same name
        members = read_members(tar)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
            for n, data in members:
                info = tarfile.TarInfo(n)
                if n == f"{K2}.assistant.flac":
                    info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                    tf.addfile(info)
                else:
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
        tar.write_bytes(buf.getvalue())
        rewrite_manifest(part, resync_tar=tar)
        return f"{name}: member '{K2}.assistant.flac' is a symbolic link, not a regular file"
    if how == "manifest_part_not_parquet":
        part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
        dtar.unlink()  # the shard's duplex half goes too: its conversations are no longer kept ones
        dpart.unlink()
        return re.compile(re.escape(f"manifest/{part.name}: does not open as Parquet (") + ".*"
                          + re.escape("Parquet magic bytes not found in footer.") + r".*\)")
    if how == "manifest_lacks_columns":
        table = pq.read_table(part)
        pq.write_table(table.drop_columns(["shard_sha256"]), part)
        dtar.unlink()
        dpart.unlink()
        return f"manifest/{part.name}: lacks the column(s) shard_sha256"
    if how == "manifest_row_without_key":
        def blank(rows):
            return [{**r, "key": None} if r["key"] == K2 else r for r in rows]
        rewrite_manifest(part, blank)
        return [f"manifest/{part.name}: 1 row(s) without a key, conversation_id or shard (first: row 1)",
                f"{name}: sample {K2} is not in the manifest"]  # the row is left out, so its sample is unlisted
    if how == "kept_and_rejected":
        [rejects] = layout.reject_parts()
        table = pq.read_table(rejects).to_pylist()
        table[0]["conversation_id"] = f"en-{1:016x}"
        pq.write_table(rows_to_table(table, REJECTS_SCHEMA), rejects)
        return f"conversation en-{1:016x} is both kept and rejected"
    # --- the duplex subset (one sample per conversation, keyed by its ID) ---
    if how == "duplex_orphan_tar":
        (dtar.parent / "shard-rx-000000000000.tar").write_bytes(dtar.read_bytes())
        return f"{dtar.parent.relative_to(root)}/shard-rx-000000000000.tar: no duplex manifest part (unfinished shard)"
    if how == "duplex_part_without_main_part":  # a duplex tar and part whose main shard never got its part
        moved = dtar.with_name("shard-rx-000000000000.tar")
        dtar.rename(moved)
        rewrite_manifest(dpart, lambda rows: [{**r, "shard": str(moved.relative_to(root))} for r in rows],
                         schema=DUPLEX_MANIFEST_SCHEMA)
        dpart.rename(dpart.with_name("shard-rx-000000000000.parquet"))
        return "manifest/duplex/shard-rx-000000000000.parquet: duplex part without the main manifest part of its shard"
    if how == "duplex_path_escapes_the_output":
        rewrite_manifest(dpart, lambda rows: [{**r, "shard": "../../outside/" + dname} for r in rows],
                         schema=DUPLEX_MANIFEST_SCHEMA)
        return f"{dmanifest}: shard path '../../outside/{dname}' points outside the output"
    if how == "duplex_missing_tar":
        dtar.unlink()
        return f"{dmanifest}: duplex shard {drel} is missing"
    if how == "duplex_wrong_member_set":
        edit_tar(dtar, dpart, lambda ms: [(n, d) for n, d in ms if n != f"{C2}.duplex.flac"], DUPLEX_MANIFEST_SCHEMA)
        return f"{dname}: sample {C2} has parts ['json'], expected ['duplex.flac', 'json']"
    if how == "duplex_json_names_another_conversation":
        edit_member(dtar, dpart, f"{C2}.json", edit_json(lambda meta: meta.update(conversation_id=C1)))
        return f"{dname}: sample {C2} JSON names conversation '{C1}'"
    if how == "duplex_audio_does_not_decode":  # FLAC's magic, then nothing libsndfile can read
        edit_member(dtar, dpart, f"{C2}.duplex.flac", lambda d: b"fLaC" + bytes(300))
        return re.compile(re.escape(f"{dname}: sample {C2} duplex.flac does not decode (Error opening ")
                          + r"<_io\.BytesIO object at 0x[0-9a-f]+>: File contains data in an unimplemented format\.\)")
    if how == "duplex_audio_not_stereo_16k":  # the user channel alone, as long as the recording
        edit_member(dtar, dpart, f"{C2}.duplex.flac", lambda d: encode_flac(decode_audio(d)[0], 16000))
        return f"{dname}: sample {C2} duplex.flac is 1 channel(s) at 16000 Hz, expected 2 at 16000"
    if how == "duplex_segment_outside_the_recording":
        [flac] = [d for n, d in read_members(dtar) if n == f"{C2}.duplex.flac"]
        length = sf.info(io.BytesIO(flac)).frames / 16000
        late = {}

        def past_the_end(meta):
            meta["segments"][-1]["end"] = length + 1.0
            late.update(meta["segments"][-1])
        edit_member(dtar, dpart, f"{C2}.json", edit_json(past_the_end))
        return f"{dname}: sample {C2} segment {late} lies outside the {length:.2f}-s recording"
    if how == "duplex_conversation_twice":  # C1's sample also in the other duplex shard
        [(otar, opart)] = [(layout.root / pq.read_table(p).column("shard")[0].as_py(), p)
                           for p in layout.duplex_manifest_parts() if p != dpart]
        [row] = [r for r in pq.read_table(dpart).to_pylist() if r["key"] == C1]
        write_members(otar, read_members(otar) + [(n, d) for n, d in read_members(dtar) if n.startswith(C1)])
        rewrite_manifest(opart, lambda rows: rows + [{**row, "shard": str(otar.relative_to(root))}],
                         schema=DUPLEX_MANIFEST_SCHEMA)
        rewrite_manifest(opart, resync_tar=otar, schema=DUPLEX_MANIFEST_SCHEMA)
        return f"duplex conversation {C1} appears 2 times"
    if how == "duplex_not_a_kept_conversation":  # C2's sample passed off as the rejected conversation's
        def relabel(ms):
            return [(n.replace(C2, C4), edit_json(lambda m: m.update(conversation_id=C4))(d) if n == f"{C2}.json" else d)
                    for n, d in ms]
        write_members(dtar, relabel(read_members(dtar)))
        rewrite_manifest(dpart, lambda rows: [{**r, "key": C4, "conversation_id": C4} if r["key"] == C2 else r
                                              for r in rows], schema=DUPLEX_MANIFEST_SCHEMA)
        rewrite_manifest(dpart, resync_tar=dtar, schema=DUPLEX_MANIFEST_SCHEMA)
        return f"duplex conversation {C4} is not a kept conversation"
    raise AssertionError(how)


KINDS = ["not_an_output", "temp_file", "orphan_tar", "empty_manifest_part", "path_escapes_the_output", "missing_tar",
         "flipped_byte", "not_a_tar", "extra_sample", "missing_sample", "wrong_member_set", "json_names_another_key",
         "json_does_not_parse", "audio_not_flac", "offset_mismatch", "duplicate_key", "rejected_twice",
         "kept_and_rejected", "duplex_orphan_tar", "duplex_part_without_main_part", "duplex_path_escapes_the_output",
         "duplex_missing_tar", "duplex_wrong_member_set", "duplex_json_names_another_conversation",
         "duplex_audio_does_not_decode", "duplex_audio_not_stereo_16k", "duplex_segment_outside_the_recording",
         "duplex_conversation_twice", "duplex_not_a_kept_conversation", "member_is_a_link",
         "manifest_part_not_parquet", "manifest_lacks_columns", "manifest_row_without_key"]


@pytest.mark.parametrize("how", KINDS)
def test_each_kind_of_damage_is_reported_with_its_own_message(dataset, tmp_path, how):
    copy = tmp_path / "ds"
    shutil.copytree(dataset, copy)
    expected = damage(copy, how)
    problems = verify_output(copy)
    if how == "duplicate_key":  # each key of the copied part appears twice, and nothing else is wrong
        assert expected in problems and all(p.endswith("appears 2 times") for p in problems), problems
    elif isinstance(expected, list):  # a damage with a consequence, both named
        assert problems == expected
    elif isinstance(expected, re.Pattern):
        assert len(problems) == 1 and expected.fullmatch(problems[0]), (expected.pattern, problems)
    else:
        assert problems == [expected]


@pytest.mark.parametrize("how", ["not_a_tar", "wrong_member_set", "path_escapes_the_output",
                                 "duplex_segment_outside_the_recording"])
def test_the_cli_prints_the_problem_and_fails(dataset, tmp_path, how):
    copy = tmp_path / "ds"
    shutil.copytree(dataset, copy)
    expected = damage(copy, how)
    res = cli(copy)
    assert res.returncode == 1 and f"{copy}: 1 problem(s)\n  {expected}\n" in res.stderr, res.stderr


def test_the_catalogue_covers_every_message_verify_output_can_print():
    """Every problem string in verify_output.py has a damaged folder above (a new check needs a new case); a
    template the main and the duplex subset share has a case for each."""
    source = (REPO_ROOT / "pipeline/io/verify_output.py").read_text()
    templates = re.findall(r'(?:problems\.append\(|problems \+= \[|return \[)f"([^"]+)"', source)
    assert len(templates) >= 27, templates
    covered = {
        "not a speechchat output folder": "not_an_output", "leftover temp file": "temp_file",
        "no manifest part (unfinished shard)": "orphan_tar", "empty manifest part": "empty_manifest_part",
        "points outside the output": ("path_escapes_the_output", "duplex_path_escapes_the_output"),
        "is missing": "missing_tar",
        "sha256 differs": "flipped_byte", "does not open as a tar": "not_a_tar",
        "is not in the manifest": "extra_sample", "is missing from the tar": "missing_sample",
        "has parts": ("wrong_member_set", "duplex_wrong_member_set"),
        "JSON names ": ("json_names_another_key", "duplex_json_names_another_conversation"),
        "JSON does not parse": "json_does_not_parse", "is not FLAC": "audio_not_flac",
        "in the manifest, ": "offset_mismatch", "appears": "duplicate_key", "is rejected": "rejected_twice",
        "is both kept and rejected": "kept_and_rejected",
        "no duplex manifest part (unfinished shard)": "duplex_orphan_tar",
        "duplex part without the main manifest part": "duplex_part_without_main_part",
        "shard {shard} is missing": ("missing_tar", "duplex_missing_tar"),
        "duplex.flac does not decode": "duplex_audio_does_not_decode",
        "duplex.flac is {info.channels} channel(s)": "duplex_audio_not_stereo_16k",
        "lies outside the": "duplex_segment_outside_the_recording",
        "duplex conversation {c} appears": "duplex_conversation_twice",
        "is not a kept conversation": "duplex_not_a_kept_conversation",
        "not a regular file": "member_is_a_link", "does not open as Parquet": "manifest_part_not_parquet",
        "lacks the column(s)": "manifest_lacks_columns", "without a key, conversation_id or": "manifest_row_without_key",
    }
    # checks that need gigabytes or hours of audio to trip: their exact messages are tested in the hostile catalogue
    hostile = (REPO_ROOT / "tests/test_bad_input_hostile.py").read_text()
    elsewhere = {"declares {m.size:,} bytes": "test_11_a_member_declaring_2_gb_is_a_problem_read_in_bounded_memory",
                 "lasts {seconds:,.0f} s": "test_11_a_flac_turn_declaring_eleven_minutes_is_a_problem"}
    assert all(f"def {name}(" in hostile for name in elsewhere.values())
    # object storage only (a multipart upload a killed writer never completed): tested against the S3 stand-in
    storage = (REPO_ROOT / "tests/io/test_storage.py").read_text()
    s3_only = {"upload started and never completed":
               "test_a_killed_writer_s_upload_is_aborted_on_restart_and_a_foreign_one_is_not"}
    assert all(f"def {name}(" in storage for name in s3_only.values())
    templates = [t for t in templates if not any(phrase in t for phrase in [*elsewhere, *s3_only])]
    for template in templates:
        matched = [kind for phrase, kinds in covered.items() if phrase in template
                   for kind in ([kinds] if isinstance(kinds, str) else kinds)]
        assert matched and all(k in KINDS for k in matched), f"no damaged folder for: {template}"
