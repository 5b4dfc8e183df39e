"""Speaker-pool importers on tiny synthetic trees shaped like each corpus.

Audio is real: Piper (en_US joe) speech, written as WAV/FLAC/MP3 with soundfile, plus tones; bad clips are
random bytes, digital silence, hard-clipped speech and a 1 s clip. DNSMOS (real ONNX models) runs where a
test asserts on scores; elsewhere it is switched off to keep the tests short.
"""

import json

import numpy as np
import pytest
import soundfile as sf

from pipeline.audio import resample
from pipeline.config import REPO_ROOT, SAFE_NAME
from pipeline.main import main
from pipeline.voices.importers.clips import ClipRules, load_clip
from pipeline.voices.importers.importer import import_pool
from pipeline.voices.importers.writer import report_path
from pipeline.voices.pool import load_pool, reference_path

SENTENCES = ["The old lighthouse keeper climbed the stairs every evening to light the lamp.",
             "We walked along the river until the sun went down behind the hills.",
             "Please remember to bring your umbrella, because it will rain this afternoon."]


@pytest.fixture(scope="module")
def speech():
    from pipeline.tts.piper import PiperBackend

    pool = load_pool(REPO_ROOT / "speakers/piper_en.jsonl")
    backend = PiperBackend(None, noise_scale=0.0, noise_w_scale=0.0)
    clips = [backend.synthesize(t, pool[0]) for t in SENTENCES]
    assert all(3.0 < len(x) / r < 10 for x, r in clips)
    return clips


def tone(seconds=4.0, rate=16000, freq=220.0, amp=0.3):
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate


def write(path, samples, rate, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, samples, rate, format=fmt)


def corrupt(path, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(seed).bytes(5000))


def clipped(samples):
    return np.clip(samples * 30, -1, 1)


def reasons(report):
    return {r["file"]: r["reason"] for r in report["rejections"]}


def test_clip_rules_name_the_reason(tmp_path, speech):
    x, r = speech[0]
    cases = {"corrupt.wav": None, "silent.wav": (np.zeros(4 * r, np.float32), r), "clip.wav": (clipped(x), r),
             "short.wav": (x[: r], r), "long.wav": (np.tile(x, 12)[: 31 * r], r)}
    for name, audio in cases.items():
        if audio is None:
            corrupt(tmp_path / name)
        else:
            write(tmp_path / name, *audio)
    got = {}
    for name in cases:
        with pytest.raises(Exception) as exc:
            load_clip(tmp_path / name, ClipRules())
        got[name] = exc.value.reason
    assert got == {"corrupt.wav": "unreadable", "silent.wav": "silent", "clip.wav": "clipped",
                   "short.wav": "too_short", "long.wav": "too_long"}
    stereo = np.stack([x, x * 0.5], axis=1)
    write(tmp_path / "stereo.flac", stereo, r)
    out, duration = load_clip(tmp_path / "stereo.flac", ClipRules(sample_rate=24000))
    assert out.ndim == 1 and duration == pytest.approx(len(x) / r, abs=1e-3) and out.size == round(len(x) * 24000 / r)


def test_vctk_import_through_the_cli(tmp_path, speech, capsys):
    (x, r), (y, _), _ = speech
    src = tmp_path / "VCTK-Corpus-0.92"
    wavs = src / "wav48_silence_trimmed"
    write(wavs / "p225/p225_001_mic1.flac", x, r)
    write(wavs / "p225/p225_001_mic2.flac", x, r)          # second microphone: ignored
    corrupt(wavs / "p225/p225_002_mic1.flac")
    write(wavs / "p225/p225_003_mic1.flac", np.zeros(4 * r, np.float32), r)
    write(wavs / "p226/p226_001_mic1.flac", clipped(y), r)
    write(wavs / "p226/p226_002_mic1.flac", y[: r // 2], r)
    y48 = resample(y, r, 48000)
    write(wavs / "p227/p227_001_mic1.flac", np.stack([y48, y48], axis=1), 48000)  # stereo at 48 kHz, downmixed
    (src / "txt/p225").mkdir(parents=True)
    (src / "txt/p225/p225_001.txt").write_text(SENTENCES[0] + "\n")
    (src / "speaker-info.txt").write_text("ID  AGE  GENDER  ACCENTS  REGION COMMENTS\n"
                                          "p225  23  F    English    Southern  England\np227  38  M  English  Surrey\n")
    out = tmp_path / "pools/vctk.jsonl"
    assert main(["speakers", "import", "--format", "vctk", "--src", str(src), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "2 kept" in printed and "rejected      1  clipped" in printed

    pool = load_pool(out)
    assert [s.speaker_id for s in pool] == ["vctk-p225", "vctk-p227"]
    p225, p227 = pool
    assert (p225.gender, p227.gender, p225.language, p225.license, p225.backend) == ("female", "male", "en", "CC-BY-4.0", "xtts")
    assert len(p225.references) == 1 and p225.references[0].text == SENTENCES[0]
    assert p225.references[0].path == "vctk/vctk-p225/p225_001_mic1.flac"
    for spk, (audio, rate) in ((p225, (x, r)), (p227, (y48, 48000))):
        clip = spk.references[0]
        info = sf.info(reference_path(out, clip))
        assert (info.samplerate, info.channels, clip.sample_rate) == (24000, 1, 24000)
        assert clip.duration_s == pytest.approx(len(audio) / rate, abs=2e-3) == pytest.approx(info.duration, abs=2e-3)
    assert p225.references[0].dnsmos_ovrl > 2.5 and p225.dnsmos_ovrl == p225.references[0].dnsmos_ovrl

    report = json.loads(report_path(out).read_text())
    assert reasons(report) == {"wav48_silence_trimmed/p225/p225_002_mic1.flac": "unreadable",
                               "wav48_silence_trimmed/p225/p225_003_mic1.flac": "silent",
                               "wav48_silence_trimmed/p226/p226_001_mic1.flac": "clipped",
                               "wav48_silence_trimmed/p226/p226_002_mic1.flac": "too_short"}
    assert (report["clips_seen"], report["clips_kept"], report["clips_rejected"]) == (6, 2, 4)
    assert report["speakers_dropped"] == {"vctk-p226": "no_valid_clips"}
    assert not (tmp_path / "pools/vctk.importing").exists()
    assert sorted(p.name for p in (tmp_path / "pools/vctk").rglob("*.flac")) == ["p225_001_mic1.flac", "p227_001_mic1.flac"]


def test_libritts_r_layout_gender_and_clip_limit(tmp_path, speech):
    (x, r), (y, _), (z, _) = speech
    split = tmp_path / "LibriTTS_R/train-clean-100"
    for utt, audio in (("000001_000000", x), ("000002_000000", y), ("000003_000000", z)):
        write(split / f"19/198/19_198_{utt}.wav", audio, r)
        (split / f"19/198/19_198_{utt}.normalized.txt").write_text("text of " + utt)
    write(split / "103/1240/103_1240_000000_000001.wav", np.tile(x, 10)[: 31 * r], r)  # too long
    write(split / "103/1240/103_1240_000000_000002.wav", *tone())                      # a tone is a valid signal
    (tmp_path / "LibriTTS_R/speakers.tsv").write_text("READER\tGENDER\tSUBSET\tNAME\n19\tF\ttrain-clean-100\tKara\n"
                                                     "103\tM\ttrain-clean-100\tJohn\n")
    out = tmp_path / "libritts.jsonl"
    report = import_pool("libritts-r", split, out, max_clips_per_speaker=2, dnsmos=False, progress=False)
    pool = load_pool(out)
    assert [(s.speaker_id, s.gender, len(s.references)) for s in pool] == [("librittsr-19", "female", 2), ("librittsr-103", "male", 1)]
    assert [c.text for c in pool[0].references] == ["text of 000001_000000", "text of 000002_000000"]
    assert pool[1].references[0].duration_s == pytest.approx(4.0, abs=1e-3) and pool[1].references[0].dnsmos_ovrl is None
    assert reasons(report) == {"103/1240/103_1240_000000_000001.wav": "too_long"}
    assert report["clips_seen"] == 4  # the third clip of speaker 19 is never opened (limit of 2 reached)


def test_aishell3_defaults_to_chinese_and_apache(tmp_path, speech):
    (x, r), (y, _), _ = speech
    root = tmp_path / "data_aishell3"
    write(root / "train/wav/SSB0005/SSB00050001.wav", x, r)
    good = (root / "train/wav/SSB0005/SSB00050001.wav").read_bytes()
    (root / "train/wav/SSB0005/SSB00050002.wav").write_bytes(good[:20])  # cut inside the RIFF header
    write(root / "test/wav/SSB0009/SSB00090001.wav", y, r)
    (root / "spk-info.txt").write_text("# 说话人ID\t年龄段\t性别\t口音\nSSB0005\tA\tfemale\tnorth\nSSB0009\tB\tmale\tsouth\n",
                                       encoding="utf-8")
    (root / "train/content.txt").write_text("SSB00050001.wav\t广 guang3 州 zhou1 女 nv3\n", encoding="utf-8")
    out = tmp_path / "aishell3.jsonl"
    report = import_pool("aishell3", root, out, dnsmos=False, progress=False, limit_speakers=5)
    pool = load_pool(out)
    assert [(s.speaker_id, s.gender, s.language, s.license) for s in pool] == [
        ("aishell3-SSB0005", "female", "zh", "Apache-2.0"), ("aishell3-SSB0009", "male", "zh", "Apache-2.0")]
    assert pool[0].references[0].text == "广州女" and pool[1].references[0].text is None
    assert reasons(report) == {"train/wav/SSB0005/SSB00050002.wav": "unreadable"}


def test_commonvoice_mp3_hashed_ids_and_hostile_paths(tmp_path, speech):
    (x, r), (y, _), _ = speech
    lang = tmp_path / "cv-corpus/en"
    write(lang / "clips/common_voice_en_1.mp3", x, r, fmt="MP3")
    write(lang / "clips/common_voice_en_2.mp3", y, r, fmt="MP3")
    client = "a" * 64 + "b" * 64  # Common Voice client IDs are 128 hex characters
    rows = ["client_id\tpath\tsentence_id\tsentence\tup_votes\tdown_votes\tage\tgender\taccents\tvariant\tlocale\tsegment",
            f"{client}\tcommon_voice_en_1.mp3\ts1\t{SENTENCES[0]}\t2\t0\ttwenties\tfemale_feminine\t\t\ten\t",
            f"{client}\tcommon_voice_en_2.mp3\ts2\t{SENTENCES[1]}\t2\t0\ttwenties\t\t\t\ten\t",
            f"{client}\t../../../etc/passwd\ts3\tx\t2\t0\t\t\t\t\ten\t",
            "other\tcommon_voice_en_missing.mp3\ts4\tgone\t2\t0\t\tmale_masculine\t\t\ten\t"]
    (lang / "validated.tsv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "cv.jsonl"
    report = import_pool("commonvoice", lang, out, dnsmos=False, progress=False)
    (spk,) = load_pool(out)
    assert SAFE_NAME.match(spk.speaker_id) and spk.speaker_id.startswith("cv-aaaa") and len(spk.speaker_id) <= 64
    assert (spk.gender, spk.language, spk.license) == ("female", "en", "CC0-1.0")
    assert [c.text for c in spk.references] == SENTENCES[:2]
    assert spk.references[0].duration_s == pytest.approx(len(x) / r, abs=0.1)  # MP3 adds encoder padding
    assert reasons(report) == {"clips/common_voice_en_missing.mp3": "unreadable"}
    assert report["clips_seen"] == 3 and report["speakers_dropped"] == {"cv-other": "no_valid_clips"}


def test_folder_layouts_dnsmos_threshold_and_required_language(tmp_path, speech, capsys):
    (x, r), (y, _), (z, _) = speech
    src = tmp_path / "mine"
    write(src / "alice_001.wav", x, r)
    write(src / "alice_002.wav", y, r)
    write(src / "bob.wav", z, r)
    write(src / "carol/take1.flac", y, r)
    write(src / "noisy/n.wav", np.random.default_rng(1).normal(0, 0.2, 4 * 16000).astype(np.float32), 16000)
    out = tmp_path / "pool.jsonl"
    assert main(["speakers", "import", "--format", "folder", "--src", str(src), "--out", str(out), "--license", "CC0-1.0"]) == 2
    assert "--language" in capsys.readouterr().err and not out.exists()
    # mine.jsonl would keep its clips in mine/, the source itself: refused before anything is touched
    assert main(["speakers", "import", "--format", "folder", "--src", str(src), "--out", str(tmp_path / "mine.jsonl"),
                 "--license", "CC0-1.0", "--language", "en"]) == 2
    assert "overlap" in capsys.readouterr().err and (src / "alice_001.wav").is_file()
    report = import_pool("folder", src, out, language="en", license="CC0-1.0", min_dnsmos_ovrl=2.0, progress=False)
    pool = load_pool(out)
    assert [(s.speaker_id, len(s.references)) for s in pool] == [("folder-alice", 2), ("folder-bob", 1), ("folder-carol", 1)]
    assert all(c.dnsmos_ovrl > 2.5 for s in pool for c in s.references)
    assert reasons(report) == {"noisy/n.wav": "dnsmos_below_threshold"}
    assert report["rejections"][0]["details"].startswith("DNSMOS OVRL 1.")
    # a second import replaces the pool and its clips folder (no stale clips left behind)
    import_pool("folder", src, out, language="en", license="CC0-1.0", limit_speakers=1, dnsmos=False, progress=False)
    assert [s.speaker_id for s in load_pool(out)] == ["folder-alice"]
    assert sorted(p.parent.name for p in (tmp_path / "pool").rglob("*.flac")) == ["folder-alice", "folder-alice"]
