"""The dataset card on a folder written by the real shard writer: its YAML, its text, and loading through it."""

import json
import os
import tarfile

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.audio import decode_audio, encode_flac
from pipeline.config import REPO_ROOT, load_config
from pipeline.io.layout import Layout
from pipeline.io.stats import compute_stats, write_stats
from pipeline.publish.card import _schema_rows, write_card
from pipeline.schema import SAMPLE_FIELDS, rows_to_table
from pipeline.stages.shard import ShardStage

MODELS = {"en": ("SmolLM2-135M-Instruct", "piper-tts 1.2.0 en_US-joe-medium", "faster-whisper 1.1.0 tiny.en int8"),
          "zh": ("SmolLM2-135M-Instruct", "coqui-tts 0.28.0 xtts_v2", "faster-whisper 1.1.0 base int8")}
ASSISTANT_RATE = {"en": 22050, "zh": 24000}
TEXTS = {"en": ["Could you help me plan a birthday party for my daughter?", "Of course! How old is she turning?",
                "She turns seven next Saturday.", "Lovely. A small garden party with games would suit that age."],
         "zh": ["你能帮我安排一下周末的旅行吗？", "当然可以，你想去哪里？", "我想去杭州看看西湖。", "好的，建议周六早上出发。"]}

DOMAINS = {"en": ["travel | leisure", "daily life"], "zh": ["旅行", "日常生活"]}
TOPICS = {"en": "topic", "zh": "周末旅行"}


def tone(freq, seconds, rate):
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def conversation(lang, idx, exchanges, split="train", reject=None):
    """A conversation row as the verify stage hands it to the shard stage, with real FLAC audio."""
    turns = []
    for t in range(2 * exchanges):
        role, rate = ("user", 16000) if t % 2 == 0 else ("assistant", ASSISTANT_RATE[lang])
        audio = tone(180 + 40 * t + 7 * idx, 0.4 + 0.15 * t, rate)
        text = f"{TEXTS[lang][t % 4]} ({idx}.{t})"
        turns.append({"role": role, "display_text": text, "spoken_text": text.lower(),
                      "speaker_id": f"{lang}-spk{idx % 3}" if role == "user" else f"{lang}-assistant",
                      "audio_flac": encode_flac(audio, rate), "sample_rate": rate, "duration_s": len(audio) / rate,
                      "asr_text": text.lower(), "error_rate": 0.05 * (t % 3)})
    llm, tts, asr = MODELS[lang]
    row = {"conversation_id": f"{lang}-{idx:016x}", "plan_index": idx, "dataset": "card-test", "language": lang,
           "split": split, "domain": DOMAINS[lang][idx % 2], "topic": f"<b>{TOPICS[lang]}</b> {idx % 2}",
           "scenario": "asking for help", "persona": "a busy parent",
           "num_exchanges": exchanges, "text_digest": "abc123", "llm_model": llm, "tts_model": tts, "asr_model": asr,
           "user_speaker_id": f"{lang}-spk{idx % 3}", "assistant_speaker_id": f"{lang}-assistant", "turns": turns}
    if reject:
        row.update(reject_stage=reject[0], reject_reason=reject[1], reject_details="turn 1")
    return row


def build_output(root, languages=("en", "zh"), rejects=True):
    """An output folder as a run leaves it: shards, manifest, rejects, stats.json, config. Returns (cfg_dict, stats)."""
    cfg = load_config(REPO_ROOT / "configs/smoke.yaml", [], root)
    cfg_dict = cfg.model_dump(mode="json")
    stage = ShardStage(root, "rcard", cfg.license_tags)
    batches = []
    if "en" in languages:
        batches += [[conversation("en", 1, 2), conversation("en", 2, 3), conversation("en", 3, 1)],
                    [conversation("en", 4, 2), conversation("en", 5, 2, split="validation")]]
        if rejects:
            batches[0] += [conversation("en", 6, 2, reject=("verify", "asr_error_rate_above_threshold")),
                           conversation("en", 7, 1, reject=("generate", "llm_not_json"))]
    if "zh" in languages:
        batches.append([conversation("zh", 8, 3), conversation("zh", 9, 2)]
                       + ([conversation("zh", 10, 2, reject=("verify", "asr_error_rate_above_threshold"))]
                          if rejects else []))
    for batch in batches:
        stage(rows_to_table(batch))
    layout = Layout(root)
    stats = compute_stats(layout)
    write_stats(layout, stats)
    return cfg_dict, stats


def front_matter(path):
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    head, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


def tar_samples(root, lang, split):
    """{key: {"json": dict, "user.flac": bytes, "assistant.flac": bytes}} straight from the tars."""
    samples = {}
    for tar in sorted(Layout(root).shard_dir(lang, split).glob("*.tar")):
        with tarfile.open(tar) as tf:
            for member in tf:
                key, ext = member.name.split(".", 1)
                data = tf.extractfile(member).read()
                samples.setdefault(key, {})[ext] = json.loads(data) if ext == "json" else data
    return samples


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("card") / "speechchat-card"
    cfg_dict, stats = build_output(root)
    return root, cfg_dict, stats, write_card(root, cfg_dict, stats)


def test_front_matter_has_licence_languages_and_a_config_per_language(written):
    root, _, _, card = written
    meta, _ = front_matter(card)
    assert meta["license"] == "other" and meta["license_name"] == "lessac-research-only"
    assert meta["license_link"].startswith("https://")
    assert meta["language"] == ["en", "zh"] and meta["multilinguality"] == "multilingual"
    assert "automatic-speech-recognition" in meta["task_categories"] and meta["size_categories"] == ["n<1K"]
    assert meta["pretty_name"].startswith("speechchat-smoke")
    configs = {c["config_name"]: c for c in meta["configs"]}
    assert configs["en"]["default"] is True and "default" not in configs["zh"]
    assert configs["en"]["data_files"] == [{"split": "train", "path": "data/en/train/shard-*.tar"},
                                           {"split": "validation", "path": "data/en/validation/shard-*.tar"}]
    assert configs["zh"]["data_files"] == [{"split": "train", "path": "data/zh/train/shard-*.tar"}]
    for config in meta["configs"]:  # every glob is relative to the repo root and finds shards
        for entry in config["data_files"]:
            shards = Layout(root).shard_dir(config["config_name"], entry["split"]).glob("*.tar")
            assert sorted(root.glob(entry["path"])) == sorted(shards)
    infos = {i["config_name"]: i for i in meta["dataset_info"]}
    rates = {lang: [(f["name"], f["dtype"]["audio"]["sampling_rate"])
                    for f in info["features"] if f["name"].endswith(".flac")] for lang, info in infos.items()}
    assert rates == {"en": [("user.flac", 16000), ("assistant.flac", 22050)],
                     "zh": [("user.flac", 16000), ("assistant.flac", 24000)]}
    assert infos["en"]["download_size"] == sum(p.stat().st_size for p in root.glob("data/en/*/*.tar"))


def test_datasets_reads_the_yaml_as_configs_and_features(written):
    datasets = pytest.importorskip("datasets")
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard

    data = DatasetCard.load(written[3]).data
    configs = MetadataConfigs.from_dataset_card_data(data)
    assert list(configs) == ["en", "zh"] and configs.get_default_config_name() == "en"
    infos = DatasetInfosDict.from_dataset_card_data(data)
    features = infos["en"].features
    assert features["json"]["user"]["error_rate"] == datasets.Value("float64")
    assert features["json"]["licenses"] == datasets.List(datasets.Value("string"))
    assert features["assistant.flac"] == datasets.Audio(sampling_rate=22050)


def _names(value, prefix=""):
    if isinstance(value, dict):
        return {n for k, v in value.items() for n in _names(v, f"{prefix}{k}.")}
    return {prefix[:-1]}


def test_declared_fields_are_exactly_the_fields_of_real_samples(written):
    # `datasets` drops JSON keys that the features do not declare, silently: a new field in shard.py must
    # be declared in card.SAMPLE_FIELDS, and this is where that is noticed.
    declared = {name for name, _, _ in _schema_rows(SAMPLE_FIELDS)}
    root = written[0]
    for lang, split in [("en", "train"), ("en", "validation"), ("zh", "train")]:
        for key, sample in tar_samples(root, lang, split).items():
            assert set(sample) == {"json", "user.flac", "assistant.flac"}
            assert _names(sample["json"]) == declared, key


@pytest.mark.parametrize("lang, split", [("en", "train"), ("en", "validation"), ("zh", "train")])
def test_load_dataset_through_the_card_decodes_the_shards(written, tmp_path, lang, split):
    datasets = pytest.importorskip("datasets")
    root = written[0]
    ds = datasets.load_dataset(str(root), lang, split=split, cache_dir=str(tmp_path / "hf-cache"))
    expected = tar_samples(root, lang, split)
    manifest = [r for p in Layout(root).manifest_parts() for r in pq.read_table(p).to_pylist()
                if r["language"] == lang and r["split"] == split]
    assert ds.num_rows == len(expected) == len(manifest)
    # the card's features were used, not types inferred from the first samples (those have no rate)
    assert ds.features["assistant.flac"].sampling_rate == ASSISTANT_RATE[lang]
    assert ds.features["json"]["exchange_index"] == datasets.Value("int64")
    for row in ds:
        want = expected[row["__key__"]]
        assert row["json"] == want["json"]
        for side, rate in (("user", 16000), ("assistant", ASSISTANT_RATE[lang])):
            audio = row[f"{side}.flac"]
            decoded = audio.get_all_samples() if hasattr(audio, "get_all_samples") else None
            samples = decoded.data.numpy()[0] if decoded is not None else np.asarray(audio["array"])
            got_rate = decoded.sample_rate if decoded is not None else audio["sampling_rate"]
            reference, ref_rate = decode_audio(want[f"{side}.flac"])
            assert got_rate == ref_rate == rate
            np.testing.assert_allclose(samples.reshape(-1), reference, atol=1e-4)


def test_body_has_recipe_statistics_licence_and_loading(written):
    root, cfg_dict, stats, card = written
    _, body = front_matter(card)
    for text in ("SmolLM2-135M-Instruct", "piper-tts 1.2.0 en_US-joe-medium", "coqui-tts 0.28.0 xtts_v2",
                 "faster-whisper 1.1.0 tiny.en int8", f"exceeds {cfg_dict['verify']['max_wer']}",
                 "| `en` | train | `data/en/train/shard-*.tar` | 8 |", "| `asr_error_rate_above_threshold` | 2 |",
                 "| `llm_not_json` | 1 |", "`user.spoken_text`", "`licenses` | list of string",
                 "XTTS-v2 output is under the Coqui Public Model Licence: non-commercial use only",
                 "Commercial use is not allowed", 'load_dataset("<org>/speechchat-smoke", "en", split="train")',
                 "wds.WebDataset(urls", "travel \\| leisure"):
        assert text in body, text
    en = stats["languages"]["en"]
    assert f"| `en` | {en['hours']:.3f} | {en['conversations']} | {en['exchanges']} |" in body
    # nothing from the environment (conftest plants fake keys) and no local paths
    for secret in (os.environ.get("OPENAI_API_KEY"), os.environ.get("HF_TOKEN")):
        assert not secret or secret not in card.read_text()
    assert str(root) not in card.read_text()


def test_repo_id_goes_into_the_snippets_and_rewrites_are_atomic(written, tmp_path):
    root, cfg_dict, stats, _ = written
    card = write_card(root, cfg_dict, stats, repo_id="acme/spoken-chat")
    text = card.read_text()
    assert 'load_dataset("acme/spoken-chat", "en", split="train")' in text
    assert "datasets/acme/spoken-chat/data/en/train/shard-*.tar" in text
    assert not list(root.glob("*.tmp"))
    write_card(root, cfg_dict, stats)  # leave the module fixture as it was


def test_a_folder_without_shards_gets_a_card_without_configs(tmp_path):
    cfg_dict = load_config(REPO_ROOT / "configs/smoke.yaml", [], tmp_path).model_dump(mode="json")
    stats = compute_stats(Layout(tmp_path))
    meta, body = front_matter(write_card(tmp_path, cfg_dict, stats))
    assert "configs" not in meta and "dataset_info" not in meta
    assert meta["language"] == ["en"] and meta["license"] == "other"
    assert "No shards yet." in body and "No kept conversations yet." in body
