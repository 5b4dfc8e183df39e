"""A streaming PyTorch loader over the shards for the common LSLM recipe.

Per exchange sample: user speech -> Whisper-style log-mel features (16 kHz; resampled when a shard holds
another rate); the text history and the assistant's answer -> token IDs with a Hugging Face tokenizer (loss
only on the answer); the assistant's speech kept as a waveform for speech-unit targets.

Splitting: every (node, worker) consumer sees a disjoint part of the data, so no sample is seen twice in an
epoch. With at least as many shards as consumers, whole shards are dealt out (after one shuffle of the shard
list that every consumer computes identically from seed + epoch); with fewer shards, every consumer reads
every shard and keeps the samples whose key hashes to it (more reading, still exactly once).

Batching: a bucket buffer sorts samples by cost and cuts batches whose padded size
`batch_size * max(cost)` stays within `token_budget`, where cost = speech tokens after affinity pooling +
text tokens: the length the pooled model actually sees.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from pipeline.audio import resample, to_mono_float32
from pipeline.io.layout import is_own_name
from pipeline.training.features import (
    ENCODER_STRIDE,
    SAMPLE_RATE,
    log_mel,
    speech_token_frames,
)
from pipeline.training.pooling import pooled_length

log = logging.getLogger(__name__)

IGNORE_INDEX = -100


@dataclass
class LoaderConfig:
    shards: list[str]                 # tar paths/URLs (see `find_shards` for a dataset folder)
    tokenizer: str                    # HF tokenizer folder, or a tokenizer.json file
    n_mels: int = 80
    pool_threshold: float | None = 0.97  # cosine similarity for affinity pooling; None: count raw speech tokens
    token_budget: int = 8192          # padded tokens per batch: batch_size * max(cost)
    max_batch_size: int = 64
    bucket_buffer: int = 256          # samples sorted together before cutting batches
    shuffle_buffer: int = 512         # 0: keep shard order (evaluation)
    seed: int = 0
    epoch: int = 0
    rank: int | None = None           # None: torch.distributed, else RANK / WORLD_SIZE, else a single node
    world_size: int | None = None


def find_shards(folder: Path | str, language: str | None = None, split: str | None = "train") -> list[str]:
    """The pipeline's tars of a dataset folder: data/<language>/<split>/shard-*.tar, sorted (the same list on
    every node); other files there are not samples."""
    from pipeline.io.ownership import is_own_name

    root = Path(folder) / "data"
    pattern = f"{language or '*'}/{split or '*'}/*.tar"
    # only the pipeline's own shard names: a user's data/en/train/holiday-photos.tar is not training data
    shards = sorted(str(p) for p in root.glob(pattern) if is_own_name(p.relative_to(root.parent).as_posix(), "shard"))
    if not shards:
        raise FileNotFoundError(f"no shards match {root}/{pattern}")
    return shards


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    p = Path(path)
    if p.is_file():  # a bare tokenizers JSON
        return PreTrainedTokenizerFast(tokenizer_file=str(p))
    if not p.is_dir():
        raise FileNotFoundError(f"tokenizer {path}: not a folder or a tokenizer.json file")
    return AutoTokenizer.from_pretrained(str(p), local_files_only=True)


def node_rank(cfg: LoaderConfig) -> tuple[int, int]:
    if cfg.rank is not None or cfg.world_size is not None:
        rank, world = cfg.rank or 0, cfg.world_size or 1
    else:
        try:
            import torch.distributed as dist

            initialised = dist.is_available() and dist.is_initialized()
        except ImportError:
            initialised = False
        if initialised:
            rank, world = dist.get_rank(), dist.get_world_size()
        else:
            rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is outside world size {world}")
    return rank, world


def worker_slot() -> tuple[int, int]:
    from torch.utils.data import get_worker_info

    info = get_worker_info()
    return (info.id, info.num_workers) if info else (0, 1)


def key_slot(key: str, consumers: int) -> int:
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % consumers


def assign(shards: list[str], consumer: int, consumers: int, seed: int, epoch: int) -> tuple[list[str], bool]:
    """This consumer's shards, and whether it must also filter samples by key (fewer shards than consumers)."""
    order = list(shards)
    np.random.default_rng([seed, epoch]).shuffle(order)
    if len(order) >= consumers:
        return order[consumer::consumers], False
    return order, True


def decode_flac(data: bytes) -> tuple[np.ndarray, int]:
    samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
    return to_mono_float32(samples), int(rate)


class Featurizer:
    """One sample's training view; also used by `inspect` so that both count tokens the same way."""

    def __init__(self, tokenizer, n_mels: int = 80, pool_threshold: float | None = 0.97,
                 encoder: Callable[[Any], np.ndarray] | None = None):
        self.tokenizer, self.n_mels, self.pool_threshold, self.encoder = tokenizer, n_mels, pool_threshold, encoder

    def speech_tokens(self, features) -> tuple[int, int]:
        """(raw, pooled) speech-token counts: on encoder outputs when an encoder is given, else on features."""
        frames = np.asarray(self.encoder(features)) if self.encoder else speech_token_frames(features)
        raw = len(frames)
        pooled = raw if self.pool_threshold is None else pooled_length(frames, self.pool_threshold)
        return raw, pooled

    def text_ids(self, meta: dict[str, Any]) -> tuple[list[int], list[int]]:
        prompt = (meta.get("history") or "") + ("\n" if meta.get("history") else "") + "assistant: "
        answer = meta["assistant"]["display_text"]
        prompt_ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        answer_ids = self.tokenizer(answer, add_special_tokens=False)["input_ids"]
        eos = self.tokenizer.eos_token_id
        answer_ids = answer_ids + ([eos] if eos is not None else [])
        return prompt_ids + answer_ids, [IGNORE_INDEX] * len(prompt_ids) + answer_ids

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        meta = json.loads(sample["json"])
        user, user_rate = decode_flac(sample["user.flac"])
        if user_rate != SAMPLE_RATE:
            user = resample(user, user_rate, SAMPLE_RATE)
        features = log_mel(user, self.n_mels)
        raw, pooled = self.speech_tokens(features)
        input_ids, labels = self.text_ids(meta)
        assistant, assistant_rate = decode_flac(sample["assistant.flac"])
        return {"key": sample["__key__"], "language": meta["language"], "features": features,
                "speech_tokens": raw, "pooled_speech_tokens": pooled, "input_ids": input_ids, "labels": labels,
                "assistant_audio": assistant, "assistant_rate": assistant_rate,
                "cost": pooled + len(input_ids)}


def budget_batches(examples: Iterable[dict[str, Any]], token_budget: int, max_batch_size: int,
                   bucket_buffer: int, cost: Callable[[dict], int] = lambda e: e["cost"]) -> Iterator[list[dict]]:
    """Sort each buffer of examples by cost and cut padded-size-bounded batches; nothing is dropped (a sample
    over the budget on its own becomes a batch of one)."""
    buffer: list[dict] = []

    def cut(items: list[dict]) -> Iterator[list[dict]]:
        batch: list[dict] = []
        for item in sorted(items, key=cost):
            if batch and ((len(batch) + 1) * cost(item) > token_budget or len(batch) >= max_batch_size):
                yield batch
                batch = []
            batch.append(item)
        if batch:
            yield batch

    for example in examples:
        buffer.append(example)
        if len(buffer) >= bucket_buffer:
            yield from cut(buffer)
            buffer = []
    yield from cut(buffer)


def collate(batch: list[dict[str, Any]], pad_id: int) -> dict[str, Any]:
    import torch

    n = len(batch)
    t_max = max(e["features"].shape[1] for e in batch)
    features = torch.zeros(n, batch[0]["features"].shape[0], t_max)
    l_max = max(len(e["input_ids"]) for e in batch)
    input_ids = torch.full((n, l_max), pad_id, dtype=torch.long)
    labels = torch.full((n, l_max), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros(n, l_max, dtype=torch.long)
    a_max = max(len(e["assistant_audio"]) for e in batch)
    assistant = torch.zeros(n, a_max)
    for i, e in enumerate(batch):
        t = e["features"].shape[1]
        features[i, :, :t] = e["features"]
        k = len(e["input_ids"])
        input_ids[i, :k] = torch.tensor(e["input_ids"])
        labels[i, :k] = torch.tensor(e["labels"])
        attention[i, :k] = 1
        assistant[i, : len(e["assistant_audio"])] = torch.from_numpy(e["assistant_audio"])
    return {
        "keys": [e["key"] for e in batch], "languages": [e["language"] for e in batch],
        "features": features, "feature_lengths": torch.tensor([e["features"].shape[1] for e in batch]),
        "speech_tokens": torch.tensor([e["speech_tokens"] for e in batch]),
        "pooled_speech_tokens": torch.tensor([e["pooled_speech_tokens"] for e in batch]),
        "input_ids": input_ids, "attention_mask": attention, "labels": labels,
        "assistant_audio": assistant, "assistant_lengths": torch.tensor([len(e["assistant_audio"]) for e in batch]),
        "assistant_rates": torch.tensor([e["assistant_rate"] for e in batch]),
    }


def _samples(shards: list[str], handler) -> Iterator[dict[str, Any]]:
    import webdataset as wds

    pipeline = wds.DataPipeline(wds.SimpleShardList(shards), wds.tarfile_to_samples(handler=handler))
    yield from pipeline


def _warn(exc: Exception) -> bool:
    log.warning("skipping unreadable shard data: %s", exc)  # a damaged tar must not stop an epoch
    return True


def _torch_dataset_base():
    from torch.utils.data import IterableDataset

    return IterableDataset


class SpeechChatLoader(_torch_dataset_base()):
    """IterableDataset of ready batches; use with DataLoader(batch_size=None, num_workers=...)."""

    def __init__(self, cfg: LoaderConfig, encoder: Callable[[Any], np.ndarray] | None = None):
        super().__init__()
        if not cfg.shards:
            raise ValueError("no shards given")
        if cfg.token_budget < 1 or cfg.max_batch_size < 1:
            raise ValueError("token_budget and max_batch_size must be >= 1")
        self.cfg = cfg
        self.tokenizer = load_tokenizer(cfg.tokenizer)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else (
            self.tokenizer.eos_token_id or 0)
        self.featurize = Featurizer(self.tokenizer, cfg.n_mels, cfg.pool_threshold, encoder)

    def set_epoch(self, epoch: int) -> None:
        self.cfg.epoch = epoch

    def consumer(self) -> tuple[int, int]:
        rank, world = node_rank(self.cfg)
        worker, workers = worker_slot()
        return rank * workers + worker, world * workers

    def examples(self) -> Iterator[dict[str, Any]]:
        consumer, consumers = self.consumer()
        shards, by_key = assign(self.cfg.shards, consumer, consumers, self.cfg.seed, self.cfg.epoch)
        stream = (s for s in _samples(shards, _warn) if not by_key or key_slot(s["__key__"], consumers) == consumer)
        if self.cfg.shuffle_buffer > 0:
            stream = _shuffled(stream, self.cfg.shuffle_buffer, np.random.default_rng([self.cfg.seed, self.cfg.epoch, consumer]))
        for sample in stream:
            if not {"json", "user.flac", "assistant.flac"} <= sample.keys():
                log.warning("sample %s lacks json/user.flac/assistant.flac: skipped", sample.get("__key__"))
                continue
            yield self.featurize(sample)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in budget_batches(self.examples(), self.cfg.token_budget, self.cfg.max_batch_size,
                                    self.cfg.bucket_buffer):
            yield collate(batch, self.pad_id)


def _shuffled(stream: Iterable[dict], size: int, rng: np.random.Generator) -> Iterator[dict]:
    buffer: list[dict] = []
    for item in stream:
        if len(buffer) < size:
            buffer.append(item)
            continue
        i = int(rng.integers(len(buffer)))
        buffer[i], item = item, buffer[i]
        yield item
    rng.shuffle(buffer)
    yield from buffer


def batches_at_budget(costs: list[int], token_budget: int, max_batch_size: int, bucket_buffer: int = 256) -> int:
    """How many batches a list of sample costs makes at a budget (what `inspect` reports)."""
    items = [{"cost": c} for c in costs]
    return sum(1 for _ in budget_batches(items, token_budget, max_batch_size, bucket_buffer))


def raw_speech_tokens(seconds: float) -> int:
    return math.ceil(seconds * SAMPLE_RATE / 160 / ENCODER_STRIDE)


# --- the duplex subset (duplex.enabled): one stereo conversation per sample ---------------------------


def find_duplex_shards(folder: Path | str, language: str | None = None, split: str | None = "train") -> list[str]:
    """Tars of the duplex subset: data/<language>/duplex/<split>/*.tar, sorted."""
    root = Path(folder) / "data"
    pattern = f"{language or '*'}/duplex/{split or '*'}/*.tar"
    shards = sorted(str(p) for p in root.glob(pattern)
                    if is_own_name(p.relative_to(root.parent).as_posix(), "duplex_shard"))
    if not shards:
        raise FileNotFoundError(f"no duplex shards match {root}/{pattern} (was the run made with duplex.enabled?)")
    return shards


def duplex_conversations(shards: list[str]) -> Iterator[dict[str, Any]]:
    """Each duplex sample decoded: the conversation ID, the stereo audio (frames x 2 float32: column 0 the user,
    column 1 the assistant), its rate, the timeline JSON, and per-channel speech activity on 80-ms frames (the
    turn-taking targets a full-duplex model is trained on)."""
    for sample in _samples(shards, _warn):
        if "duplex.flac" not in sample or "json" not in sample:
            continue
        audio, rate = sf.read(io.BytesIO(sample["duplex.flac"]), dtype="float32", always_2d=True)
        timeline = json.loads(sample["json"])
        yield {"conversation_id": timeline["conversation_id"], "audio": audio, "sample_rate": int(rate),
               "timeline": timeline, "activity": channel_activity(timeline, audio.shape[0] / rate)}


def channel_activity(timeline: dict[str, Any], duration_s: float, frame_s: float = 0.08) -> np.ndarray:
    """(2, frames) booleans: who is speaking in each frame, from the timeline's segments."""
    frames = max(1, math.ceil(duration_s / frame_s))
    active = np.zeros((2, frames), dtype=bool)
    for seg in timeline["segments"]:
        active[seg["channel"], int(seg["start"] / frame_s):math.ceil(seg["end"] / frame_s)] = True
    return active
