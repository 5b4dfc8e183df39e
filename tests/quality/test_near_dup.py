"""Near-duplicate index: shingles, light edits caught and unrelated texts kept, first seen wins, resume preload,
the compact band table against datasketch's own MinHashLSH, repeated turns."""

import numpy as np
import pytest
from text_data import records

from pipeline.quality.near_dup import (
    LSH_WEIGHTS,
    BandTable,
    NearDupIndex,
    ShingleSettings,
    Signer,
    band_keys,
    repeated_turn,
    shingles,
    tokens,
)

SETTINGS = ShingleSettings()


def ids(language, n, start=0):
    return [f"{language}-{i:016x}" for i in range(start, start + n)]


def texts_of(record):
    return [record["instruction"], record["output"]]


def test_tokens_and_shingles():
    assert tokens("Don't STOP, it's fine!", "en") == ["don't", "stop", "it's", "fine"]
    assert tokens("我想买iPhone 15，好吗？", "zh") == ["我", "想", "买", "iphone", "15", "好", "吗"]
    assert shingles(["One two three"], "en", SETTINGS) == [b"one two", b"two three"]
    assert shingles(["你"], "zh", SETTINGS) == ["你".encode()]  # shorter than n: one shingle
    assert shingles([""], "en", SETTINGS) == []


@pytest.mark.parametrize("language", ["en", "zh"])
def test_light_edits_are_caught_and_the_first_one_seen_wins(language):
    rows, edits, copies = records(language)
    for i in edits:  # every edit really changed the record
        assert rows[i] != rows[copies[i]]
    signer = Signer(SETTINGS)
    sigs = signer.signatures([texts_of(r) for r in rows], [language] * len(rows))
    index = NearDupIndex(0.7, SETTINGS)
    verdicts = [index.check(cid, sig) for cid, sig in zip(ids(language, len(rows)), sigs)]
    found = {i: v for i, v in enumerate(verdicts) if v is not None}
    assert found == {i: f"{language}-{copies[i]:016x}" for i in edits}
    assert len(index) == 20
    # the same stream again into a fresh index gives the same answers (no randomness)
    again = NearDupIndex(0.7, SETTINGS)
    assert [again.check(cid, sig) for cid, sig in zip(ids(language, len(rows)), sigs)] == verdicts
    # reversed order: now the edit comes first and its original is the duplicate
    backwards = NearDupIndex(0.7, SETTINGS)
    order = list(range(len(rows)))[::-1]
    found_back = {i: backwards.check(ids(language, len(rows))[i], sigs[i]) for i in order}
    assert {i for i, v in found_back.items() if v} == {copies[i] for i in edits}


def test_languages_do_not_collide_and_bad_ids_are_refused():
    signer = Signer(SETTINGS)
    sig = signer.signature(["the same words in both"], "en")
    index = NearDupIndex(0.7, SETTINGS)
    assert index.check("en-0000000000000001", sig) is None
    assert index.check("zh-0000000000000001", sig) is None  # another language: another index
    assert index.check("en-0000000000000002", sig) == "en-0000000000000001"
    with pytest.raises(ValueError, match="not <language>-<16 hex digits>"):
        index.check("../etc/passwd", sig)


def test_preloaded_index_catches_a_near_copy_of_an_earlier_run():
    rows, edits, copies = records("en")
    signer = Signer(SETTINGS)
    first_run = signer.signatures([texts_of(r) for r in rows[:20]], ["en"] * 20)
    index = NearDupIndex(0.7, SETTINGS)
    assert index.preload(ids("en", 20), first_run) == 20
    later = signer.signatures([texts_of(rows[i]) for i in edits], ["en"] * len(edits))
    verdicts = [index.check(cid, sig) for cid, sig in zip(ids("en", len(edits), start=100), later)]
    assert verdicts == [f"en-{copies[i]:016x}" for i in edits]
    fresh = signer.signature(["Something nobody said before about gardening gloves and rain."], "en")
    assert index.check("en-00000000000000ff", fresh) is None


def test_band_table_merges_match_one_big_dict():
    """Flushing every few inserts (many merges) answers exactly like never flushing."""
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 2**63, size=(500, 6), dtype=np.uint64)
    keys[250:260] = keys[10:20]  # later rows colliding with earlier ones
    keys[300, 2] = keys[5, 4]    # one shared band only
    small, big = BandTable(buffer=7), BandTable(buffer=10**9)
    for table in (small, big):
        answers = []
        for seq, row in enumerate(keys):
            hit = table.first(row)
            answers.append(hit)
            if hit is None:
                table.add(row, seq)
        table.answers = answers
    assert small.answers == big.answers
    assert small.answers[250:260] == list(range(10, 20)) and small.answers[300] == 5
    preloaded = BandTable()
    preloaded.add_many(keys[:200], np.arange(200))
    assert preloaded.first(keys[250]) == 10 and preloaded.first(keys[400]) is None


def test_compact_index_agrees_with_datasketch_minhashlsh():
    """The band table is an index over datasketch's own (b, r) banding: same candidates as MinHashLSH."""
    from datasketch import LeanMinHash, MinHashLSH

    rows, _, _ = records("en")
    zh_rows, _, _ = records("zh")
    signer = Signer(SETTINGS)
    sigs = signer.signatures([texts_of(r) for r in rows + zh_rows], ["en"] * 30 + ["zh"] * 30)
    ours = NearDupIndex(0.7, SETTINGS)
    theirs = MinHashLSH(threshold=0.7, num_perm=SETTINGS.num_perm, weights=LSH_WEIGHTS)
    assert (theirs.b, theirs.r) == (ours.bands, ours.rows)
    for i, sig in enumerate(sigs):
        lang = "en" if i < 30 else "zh"
        mine = ours.check(f"{lang}-{i:016x}", sig)
        m = LeanMinHash(seed=SETTINGS.seed, hashvalues=sig, scheme="affine32")
        found = sorted(k for k in theirs.query(m) if (k < 30) == (i < 30))
        assert (mine is None) == (not found), i
        if not found:
            theirs.insert(i, m)
        else:
            assert mine == f"{lang}-{found[0]:016x}"
    assert band_keys(sigs[:2], ours.bands, ours.rows).shape == (2, ours.bands)


@pytest.mark.parametrize("turns, language, expected", [
    (["Can you help me plan a trip?", "Sure, where to?", "Can you help me plan a trip?", "Of course."], "en", (0, 2)),
    (["Hi there!", "Hello! What can I do?", "What else should I pack?", "hello! what can I do"], "en", (1, 3)),
    (["Thank you.", "You're welcome.", "Thank you.", "Any time."], "en", None),  # short turns may repeat
    (["我想去北京旅游", "好的，想去几天？", "我想去北京旅游！", "三天就够了"], "zh", (0, 2)),
    (["Where is the station?", "Two streets away.", "And the bank?", "Next to it."], "en", None),
])
def test_repeated_turns(turns, language, expected):
    assert repeated_turn(turns, language, min_tokens=4) == expected


@pytest.mark.parametrize("buffer", [1, 2, 10**6])
def test_band_table_answers_the_earliest_of_several(buffer):
    table = BandTable(buffer=buffer)
    table.add([1, 2], 0)
    table.add([3, 4], 1)
    assert table.first([4, 1]) == 0 and table.first([3]) == 1 and table.first([5]) is None
    table.add([1, 9], 7)  # a key already held keeps its first value
    table.flush()
    assert table.first([1]) == 0 and table.first([9]) == 7


def test_band_keys_depend_on_the_order_of_values_in_a_band():
    sig = np.arange(128, dtype=np.uint32)[None, :]
    swapped = sig.copy()
    swapped[0, [0, 1]] = swapped[0, [1, 0]]  # two values of band 0 trade places
    a, b = band_keys(sig, 16, 8)[0], band_keys(swapped, 16, 8)[0]
    assert a[0] != b[0] and (a[1:] == b[1:]).all()
    assert len(set(band_keys(np.zeros((1, 128), dtype=np.uint32), 16, 8)[0].tolist())) == 16  # bands differ
