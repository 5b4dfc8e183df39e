"""The dataset card: README.md at the root of an output folder, as the Hugging Face Hub reads it.

The YAML front matter does the work on the Hub and in `datasets.load_dataset(folder_or_repo, "<lang>")`:
one config per language whose `data_files` list one glob per split, and `dataset_info.features` that
spell out the sample's types, so the webdataset builder neither guesses them from the first samples nor
needs to read a tar before it knows the columns. The body is for people: what the data is, how it was
made, how much there is, under which licence, and how to load it.

Only whitelisted config fields are printed (thresholds and model names); nothing from the environment.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import yaml

from pipeline.io.layout import Layout
from pipeline.publish.licenses import Resolution, resolve_license
from pipeline.schema import AUDIO_FILES, DUPLEX_FIELDS, SAMPLE_FIELDS, SAMPLE_SCHEMA_VERSION

LANGUAGE_NAMES = {"en": "English", "zh": "Chinese"}
TASK_CATEGORIES = ["automatic-speech-recognition", "text-to-speech", "audio-to-audio"]
SPLIT_ORDER = ["train", "validation", "test"]
SIZE_CATEGORIES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                   (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")]


def _feature(name: str, kind: Any) -> dict[str, Any]:
    if isinstance(kind, list):
        return {"name": name, "struct": [_feature(n, k) for n, k, _ in kind]}
    if isinstance(kind, tuple):  # a list of a dtype, or of a struct
        inner = kind[1]
        return {"name": name, "list": [_feature(n, k) for n, k, _ in inner] if isinstance(inner, list) else inner}
    return {"name": name, "dtype": kind}


def features_yaml(user_rate: int | None, assistant_rate: int | None, user_clean: bool = False) -> list[dict[str, Any]]:
    """`dataset_info.features` in the YAML form `datasets` reads (`Features._from_yaml_list`).

    A declared sampling rate makes `datasets` decode every row at that rate (resampling any that differ),
    so trainers get one rate per column; None keeps each file's own rate.
    """
    def audio(rate: int | None) -> dict[str, Any]:
        return {"audio": {"sampling_rate": int(rate)}} if rate else {"audio": {}}

    # __key__ and __url__ are columns the webdataset builder adds to every row
    return [_feature("json", SAMPLE_FIELDS),
            {"name": "user.flac", "dtype": audio(user_rate)},
            {"name": "assistant.flac", "dtype": audio(assistant_rate)},
            *([{"name": "user_clean.flac", "dtype": audio(user_rate)}] if user_clean else []),
            {"name": "__key__", "dtype": "string"},
            {"name": "__url__", "dtype": "string"}]


def duplex_features_yaml() -> list[dict[str, Any]]:
    """Features of the duplex subset: the timeline JSON and the stereo recording (16 kHz, two channels)."""
    return [_feature("json", DUPLEX_FIELDS),
            {"name": "duplex.flac", "dtype": {"audio": {"sampling_rate": 16000, "num_channels": 2}}},
            {"name": "__key__", "dtype": "string"},
            {"name": "__url__", "dtype": "string"}]


def duplex_splits_on_disk(layout: Layout) -> dict[str, list[str]]:
    """{language: [split, ...]} for every data/<language>/duplex/<split>/ holding a tar."""
    found: dict[str, set[str]] = {}
    for tar in layout.duplex_shards():
        _, lang, _, split, _ = layout.rel(tar).split("/")
        found.setdefault(lang, set()).add(split)
    order = {name: i for i, name in enumerate(SPLIT_ORDER)}
    return {lang: sorted(splits, key=lambda s: (order.get(s, len(order)), s)) for lang, splits in sorted(found.items())}


def _schema_rows(fields: list[tuple[str, Any, str]], prefix: str = "") -> list[tuple[str, str, str]]:
    rows = []
    for name, kind, meaning in fields:
        if isinstance(kind, list):
            rows += _schema_rows(kind, f"{prefix}{name}.")
        else:
            rows.append((f"{prefix}{name}", f"list of {kind[1]}" if isinstance(kind, tuple) else kind, meaning))
    return rows


def splits_on_disk(layout: Layout) -> dict[str, list[str]]:
    """{language: [split, ...]} for every data/<language>/<split>/ holding at least one of the pipeline's tars."""
    found: dict[str, set[str]] = {}
    for tar in layout.shards():
        _, lang, split, _ = layout.rel(tar).split("/")
        found.setdefault(lang, set()).add(split)
    order = {name: i for i, name in enumerate(SPLIT_ORDER)}
    return {lang: sorted(splits, key=lambda s: (order.get(s, len(order)), s)) for lang, splits in sorted(found.items())}


def _has_clean_audio(layout: Layout, language: str, splits: list[str]) -> bool:
    """Does the language's first shard hold user_clean.flac members (augment.keep_clean)?"""
    tars = [p for s in splits for p in layout.shards_of(language, s)]
    if not tars:
        return False
    with layout.open(tars[0]) as fh, tarfile.open(fileobj=fh, mode="r|") as tf:
        return any(m.name.endswith(".user_clean.flac") for m in tf)


def first_sample_meta(layout: Layout, language: str, split: str) -> dict[str, Any]:
    """The JSON of the first sample of the language's first shard (models and sample rates come from it)."""
    tars = layout.shards_of(language, split)
    with layout.open(tars[0]) as fh, tarfile.open(fileobj=fh, mode="r|") as tf:
        for member in tf:
            if member.name.endswith(".json"):
                return json.loads(tf.extractfile(member).read())
    return {}


def license_tags(cfg_dict: dict[str, Any], samples: dict[str, dict[str, Any]],
                 speaker_tags: list[str] | None = None) -> list[str]:
    """The config's licence tags plus the models the samples record (a model left out of license_tags
    still counts) plus the speakers' corpora; colons in model IDs would read as a licence field, so they
    become spaces."""
    tags = [str(t) for t in cfg_dict.get("license_tags") or []]
    for meta in samples.values():
        tags += [str(t) for t in meta.get("licenses") or []]
        for kind in ("llm", "tts", "asr"):
            model = (meta.get("models") or {}).get(kind)
            if model:
                tags.append(f"{kind}:{model.replace(':', ' ')}")
    return list(dict.fromkeys(tags + list(speaker_tags or [])))


def used_speaker_ids(layout: Layout) -> list[str]:
    """Every speaker ID the kept samples use, from the manifest (user and assistant sides)."""
    used: set[str] = set()
    for part in layout.manifest_parts():
        table = layout.read_table(part, ["user_speaker_id", "assistant_speaker_id"])
        for column in table.columns:
            used.update(v for v in column.to_pylist() if v)
    return sorted(used)


def speaker_license_tags(speakers: list[Any], used: list[str]) -> list[str]:
    """`speakers:<source>:<license>` for each pool speaker the data uses (one tag per distinct corpus).

    A used ID missing from the pool (the pool file changed after the run) becomes a tag without a
    licence, so the resolver reports it and the dataset licence turns "unknown" rather than guessing.
    """
    by_id = {s.speaker_id: s for s in speakers}
    tags = []
    for speaker_id in used:
        spk = by_id.get(speaker_id)
        if spk is None:
            tags.append(f"speakers:speaker {speaker_id} (not in the speaker pool)")
        else:
            tags.append(f"speakers:{spk.source.replace(':', ' ')}:{spk.license}")
    return list(dict.fromkeys(tags))


def as_layout(root: Path | str | Layout) -> Layout:
    return root if isinstance(root, Layout) else Layout(root)


def root_name(layout: Layout) -> str:
    return str(layout.root).rstrip("/").rsplit("/", 1)[-1]


def card_resolution(root: Path | str | Layout, cfg_dict: dict[str, Any], speakers: list[Any] | None = None) -> Resolution:
    """The dataset's licence as its card states it: config tags, models recorded in the samples and, when
    the speaker pool is given, the corpora of the voices the samples use."""
    layout = as_layout(root)
    splits = splits_on_disk(layout)
    samples = {lang: first_sample_meta(layout, lang, lang_splits[0]) for lang, lang_splits in splits.items()}
    speaker_tags = speaker_license_tags(speakers, used_speaker_ids(layout)) if speakers is not None else None
    return resolve_license(license_tags(cfg_dict, samples, speaker_tags))


def _get(cfg: dict[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node if node is not None else default


def _md(value: Any) -> str:
    """A value made safe for a Markdown table cell."""
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("\r", " ")


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _size_category(n: int) -> str:
    return next((label for limit, label in SIZE_CATEGORIES if n < limit), "n>1B")


def card_metadata(cfg_dict: dict[str, Any], stats: dict[str, Any], layout: Layout, splits: dict[str, list[str]],
                  samples: dict[str, dict[str, Any]], resolution: Resolution) -> dict[str, Any]:
    languages = sorted(set(splits) | set(stats.get("languages") or {})) or list(_get(cfg_dict, "plan.languages", []))
    dataset = cfg_dict.get("dataset") or root_name(layout)
    exchanges = int(_get(stats, "totals.exchanges", 0) or 0)
    default = "en" if "en" in splits else next(iter(splits), None)
    configs, infos = [], []
    for lang, lang_splits in splits.items():
        config: dict[str, Any] = {"config_name": lang}
        if lang == default and len(splits) > 1:
            config["default"] = True
        # the pipeline's own shard names only: a user's data/en/train/holiday-photos.tar is no sample
        config["data_files"] = [{"split": s, "path": f"data/{lang}/{s}/shard-*.tar"} for s in lang_splits]
        configs.append(config)
        meta = samples.get(lang, {})
        infos.append({"config_name": lang,
                      "features": features_yaml(_get(meta, "user.sample_rate"), _get(meta, "assistant.sample_rate"),
                                                user_clean=_has_clean_audio(layout, lang, lang_splits)),
                      "download_size": sum(layout.size(p) for s in lang_splits
                                           for p in layout.shards_of(lang, s))})
    for lang, lang_splits in duplex_splits_on_disk(layout).items():  # the duplex subset: one config per language
        configs.append({"config_name": f"{lang}-duplex",
                        "data_files": [{"split": s, "path": f"data/{lang}/duplex/{s}/*.tar"} for s in lang_splits]})
        infos.append({"config_name": f"{lang}-duplex", "features": duplex_features_yaml(),
                      "download_size": sum(layout.size(p) for s in lang_splits
                                           for p in layout.duplex_shards_of(lang, s))})
    meta: dict[str, Any] = {
        **resolution.card_metadata(),
        "language": languages,
        "multilinguality": "multilingual" if len(languages) > 1 else "monolingual",
        "task_categories": TASK_CATEGORIES,
        "annotations_creators": ["machine-generated"],
        "language_creators": ["machine-generated"],
        "source_datasets": ["original"],
        "size_categories": [_size_category(exchanges)],
        "pretty_name": f"{dataset}: synthetic spoken dialogues",
        "tags": ["speech", "spoken-dialogue", "synthetic", "webdataset", "speechchat"],
    }
    if configs:
        meta["configs"] = configs
        meta["dataset_info"] = infos
    return meta


def _intro(dataset: str, stats: dict[str, Any], languages: list[str], resolution: Resolution) -> str:
    totals = stats.get("totals") or {}
    names = ", ".join(f"{LANGUAGE_NAMES.get(lang, lang)} (`{lang}`)" for lang in languages) or "none yet"
    text = (f"# {dataset}\n\n"
            f"Synthetic spoken dialogues for training speech language models, made with the speechchat pipeline: "
            f"an LLM writes conversations, a TTS model speaks every turn, an ASR model transcribes the audio back "
            f"and turns it cannot recognise are thrown away. Each sample is one *exchange*: a user turn and the "
            f"assistant turn that answers it, as audio plus text, in WebDataset tar shards.\n\n"
            f"- Languages: {names}\n"
            f"- {totals.get('conversations_kept', 0):,} conversations, {totals.get('exchanges', 0):,} exchanges, "
            f"{float(totals.get('hours', 0.0)):.2f} hours of audio, {totals.get('speakers', 0):,} speaker(s)\n"
            f"- Licence: `{resolution.license_name or resolution.license}` (details below)\n")
    if not resolution.commercial_use:
        text += "\n> **Commercial use is not allowed** (or not established): see the licence section for why.\n"
    return text


def _structure(splits: dict[str, list[str]], stats: dict[str, Any]) -> str:
    rows = [[f"`{lang}`", split, f"`data/{lang}/{split}/shard-*.tar`",
             _get(stats, f"languages.{lang}.exchanges_per_split", {}).get(split, "")]
            for lang, lang_splits in splits.items() for split in lang_splits]
    return ("## Structure\n\n"
            "One config per language; the shards of each split are `data/<language>/<split>/shard-*.tar`.\n\n"
            + (_table(["config", "split", "files", "exchanges"], rows) if rows else "No shards yet.") + "\n\n"
            "Beside the shards: `manifest/*.parquet` (one row per sample: key, shard, byte offset, durations, "
            "speakers, error rates), `rejects/*.parquet` (one row per rejected conversation: stage, reason, "
            "details), `stats.json` and `report.html` (plots and audio examples).\n")


def _schema() -> str:
    files = [["`{key}.json`", "metadata (below)"]] + [[f"`{{key}}.{n}`", m] for n, m in AUDIO_FILES.items()]
    fields = [[f"`{name}`", kind, meaning] for name, kind, meaning in _schema_rows(SAMPLE_FIELDS)]
    return (f"## The sample (schema version {SAMPLE_SCHEMA_VERSION})\n\n"
            "All exchanges of a conversation sit in one shard, in order. Files per sample:\n\n"
            + _table(["file", "content"], files) + "\n\nJSON fields (no field is ever null):\n\n"
            + _table(["field", "type", "meaning"], fields) + "\n")


def _recipe(cfg_dict: dict[str, Any], samples: dict[str, dict[str, Any]]) -> str:
    backend = _get(cfg_dict, "llm.backend", "openai")
    llm = _get(cfg_dict, "llm.vllm.model_source") if backend == "vllm" else _get(cfg_dict, "llm.model")
    source = _get(cfg_dict, "source.kind", "generate")
    lines = ["## How it was made\n"]
    if source == "dataset":
        lines.append(f"- **Text**: an existing instruction/dialogue dataset (format `{_get(cfg_dict, 'source.format', 'auto')}`) "
                     f"rewritten into spoken style by `{llm}`; records that cannot become natural speech (code, "
                     f"tables, maths, answers over {_get(cfg_dict, 'source.max_answer_chars', '?')} characters) "
                     "were dropped before any LLM call.")
    else:
        lines.append(f"- **Text**: written by `{llm}` ({backend} backend, temperature "
                     f"{_get(cfg_dict, 'llm.temperature', '?')}) from a topic/scenario/persona taxonomy, as JSON "
                     "constrained by a schema, validated (roles, lengths, language ID) and repaired once or rejected.")
    for lang, rng in sorted((_get(cfg_dict, "plan.exchanges", {}) or {}).items()):
        lines.append(f"  - `{lang}`: {rng.get('min', '?')} to {rng.get('max', '?')} exchanges per conversation")
    lines.append(f"- **Turn length**: {_get(cfg_dict, 'llm.min_turn_chars', '?')} to "
                 f"{_get(cfg_dict, 'llm.max_turn_chars', '?')} characters as written; after normalisation for "
                 f"speech (numbers, units, symbols, markdown, URLs, emoji) {_get(cfg_dict, 'text.min_chars', '?')} to "
                 f"{_get(cfg_dict, 'text.max_chars', '?')} characters.")
    pool = _get(cfg_dict, "voices.pool")
    lines.append(f"- **Voices**: one user voice per conversation, balanced over the speaker pool"
                 f"{f' `{Path(str(pool)).name}`' if pool else ''}; assistant voice "
                 f"`{_get(cfg_dict, 'voices.assistant_speaker', '?')}`.")
    for lang, meta in samples.items():
        models = meta.get("models") or {}
        lines.append(f"- **Models (`{lang}`)**: LLM `{models.get('llm') or llm}`, TTS `{models.get('tts', '?')}`, "
                     f"ASR `{models.get('asr', '?')}`; user audio {_get(meta, 'user.sample_rate', '?')} Hz, "
                     f"assistant audio {_get(meta, 'assistant.sample_rate', '?')} Hz.")
    if _get(cfg_dict, "verify.enabled", True) is False:
        lines.append("- **Verification**: **none** (`verify.enabled: false`): the audio was NOT transcribed back and "
                     "may not say its text; `error_rate` is -1 in every sample.")
    else:
        lines.append(f"- **Verification**: every turn transcribed back; a conversation is rejected when a turn's error "
                     f"rate exceeds {_get(cfg_dict, 'verify.max_wer', '?')} or its duration is outside "
                     f"{_get(cfg_dict, 'verify.min_duration_s', '?')} to {_get(cfg_dict, 'verify.max_duration_s', '?')} s.")
    splits = _get(cfg_dict, "shard.splits", {}) or {}
    if splits:
        lines.append("- **Splits** (by a hash of the conversation ID): "
                     + ", ".join(f"{name} {float(frac):.0%}" for name, frac in splits.items()) + ".")
    digests = sorted({str(m.get("config_digest")) for m in samples.values() if m.get("config_digest")})
    if digests:
        lines.append("- **Config digest** of the text-side settings and the prompt templates and taxonomies "
                     f"(part of every conversation ID): {', '.join(f'`{d}`' for d in digests)}.")
    return "\n".join(lines) + "\n"


def _statistics(stats: dict[str, Any]) -> str:
    langs = stats.get("languages") or {}
    rows = [[f"`{lang}`", f"{v.get('hours', 0):.3f}", v.get("conversations", 0), v.get("exchanges", 0),
             v.get("speakers", 0), v.get("shards", 0),
             ", ".join(f"{k} {n}" for k, n in (v.get("exchanges_per_split") or {}).items()),
             f"{v.get('mean_user_error_rate', 0):.3f} / {v.get('mean_assistant_error_rate', 0):.3f}"]
            for lang, v in sorted(langs.items())]
    text = "## Statistics\n\n" + (_table(["language", "hours", "conversations", "exchanges", "speakers", "shards",
                                          "exchanges per split", "mean error rate (user / assistant)"], rows)
                                   if rows else "No kept conversations yet.") + "\n"
    rejections = stats.get("rejections") or {}
    total_rejected = sum(rejections.values())
    kept = int(_get(stats, "totals.conversations_kept", 0) or 0)
    if rejections:
        share = total_rejected / max(kept + total_rejected, 1)
        text += (f"\n{total_rejected:,} conversations were rejected ({share:.0%} "
                 "of those finished), by reason:\n\n"
                 + _table(["reason", "conversations"], [[f"`{r}`", n] for r, n in rejections.items()]) + "\n")
    else:
        text += "\nNo conversations were rejected.\n"
    domains = _get(stats, "content.domain", {}) or {}
    for lang, counts in sorted(domains.items()):
        top = list(counts.items())[:10]
        if top:
            listed = ", ".join(f"{_md(d) or '(none)'} {n}" for d, n in top)
            text += f"\nMost frequent domains (`{lang}`, conversations): {listed}.\n"
    return text


def _licence(resolution: Resolution) -> str:
    name = resolution.license_name or resolution.license
    link = f" ([terms]({resolution.license_link}))" if resolution.license_link else ""
    rows = [[f"`{c.tag}`", c.name, f"`{c.license}`"] for c in resolution.components]
    text = (f"## Licence\n\nThe dataset is released under `{name}`{link}: the strictest licence among the models and "
            "corpora that made it. Synthetic speech and text carry the terms of the models that produced them and "
            "of the recordings their voices come from; all of the following apply.\n\n"
            + (_table(["tag", "component", "licence"], rows) if rows else "No licence tags were given.") + "\n")
    if resolution.warnings:
        text += "\n" + "\n".join(f"- ⚠ {w}" for w in resolution.warnings) + "\n"
    return text


def _bucket_loading(url: str, lang: str) -> str:
    """Loading straight from object storage: the card's data_files under the bucket prefix."""
    return f"""
Straight from the bucket (`datasets` reads s3:// through s3fs; endpoint and keys from the AWS_* environment,
or pass them in `storage_options`):

```python
from datasets import load_dataset

ds = load_dataset("webdataset", data_files={{"train": "{url}/data/{lang}/train/shard-*.tar"}}, split="train",
                  storage_options={{}})   # e.g. {{"client_kwargs": {{"endpoint_url": "https://..."}}}}
```
"""


def _loading(dataset: str, repo_id: str | None, languages: list[str], bucket: str | None = None) -> str:
    repo = repo_id or f"<org>/{dataset}"
    lang = "en" if "en" in languages else (languages[0] if languages else "en")
    return f"""## Loading

With `datasets` (audio decodes with torch + torchcodec + FFmpeg):

```python
from datasets import load_dataset

ds = load_dataset("{repo}", "{lang}", split="train")      # or a local copy: load_dataset("path/to/{dataset}", "{lang}")
row = ds[0]
row["json"]["user"]["spoken_text"], row["user.flac"], row["assistant.flac"]
ds = load_dataset("{repo}", "{lang}", split="train", streaming=True)   # without downloading everything first
```

With `webdataset` (raw bytes; decode the FLAC with soundfile):

```python
import io, json
import soundfile as sf
import webdataset as wds
from huggingface_hub import HfFileSystem, hf_hub_url

paths = sorted(HfFileSystem().glob("datasets/{repo}/data/{lang}/train/shard-*.tar"))
urls = [hf_hub_url("{repo}", p.split("/", 3)[3], repo_type="dataset") for p in paths]
for sample in wds.WebDataset(urls, shardshuffle=False):
    meta = json.loads(sample["json"])
    user_audio, user_rate = sf.read(io.BytesIO(sample["user.flac"]))
```
""" + (_bucket_loading(bucket, lang) if bucket else "")


def card_text(root: Path | str | Layout, cfg_dict: dict[str, Any], stats: dict[str, Any], repo_id: str | None = None,
              speakers: list[Any] | None = None) -> str:
    layout = as_layout(root)
    splits = splits_on_disk(layout)
    samples = {lang: first_sample_meta(layout, lang, lang_splits[0]) for lang, lang_splits in splits.items()}
    resolution = card_resolution(layout, cfg_dict, speakers)
    meta = card_metadata(cfg_dict, stats, layout, splits, samples, resolution)
    dataset = cfg_dict.get("dataset") or root_name(layout)
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1 << 20)
    body = "\n".join([_intro(dataset, stats, meta["language"], resolution), _structure(splits, stats), _schema(),
                      _recipe(cfg_dict, samples), _statistics(stats), _licence(resolution),
                      _loading(dataset, repo_id, meta["language"], None if layout.local else layout.store.url)])
    return f"---\n{front}---\n\n{body}"


def write_card(root: Path | str | Layout, cfg_dict: dict[str, Any], stats: dict[str, Any], repo_id: str | None = None,
               speakers: list[Any] | None = None) -> Path | str:
    """Write root/README.md (the Hub's dataset card) and return its location. `speakers` (the speaker pool)
    adds the licences of the voices' corpora; without it only the config's tags and the models count."""
    layout = as_layout(root)
    text = card_text(layout, cfg_dict, stats, repo_id, speakers)
    layout.write_bytes("README.md", text.encode("utf-8"))
    return layout.store.location("README.md")
