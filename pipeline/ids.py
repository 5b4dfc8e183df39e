"""Content-addressed IDs and the decisions derived from them (split, resume membership, sample keys).

A conversation ID is `<language>-<hash(dataset, language, index, text digest)>`: a rerun of the same config
plans the same IDs, so finished ones are skipped. Nothing here imports another part of the pipeline.
"""

from __future__ import annotations

import hashlib

import numpy as np


def conversation_hash(dataset: str, language: str, index: int | str, text_digest: str) -> str:
    return hashlib.sha256(f"{dataset}\x1f{language}\x1f{index}\x1f{text_digest}".encode()).hexdigest()[:16]


def conversation_id(dataset: str, language: str, index: int | str, text_digest: str) -> str:
    return f"{language}-{conversation_hash(dataset, language, index, text_digest)}"


def id_to_u64(conv_id: str) -> int:
    """The 64-bit hash inside an ID; the resume set stores these (8 bytes each, not Python strings)."""
    return int(conv_id.rsplit("-", 1)[-1], 16)


def ids_to_u64(conv_ids) -> np.ndarray:
    """Sorted unique 64-bit hashes of many IDs (the resume set's form)."""
    hashes = np.fromiter((id_to_u64(c) for c in conv_ids), dtype=np.uint64)
    return np.unique(hashes)


def is_done(done_ids: np.ndarray, conv_id: str) -> bool:
    """Membership in a sorted array of finished-ID hashes (the resume set)."""
    u = np.uint64(id_to_u64(conv_id))
    pos = int(np.searchsorted(done_ids, u))
    return pos < len(done_ids) and done_ids[pos] == u


def split_for(conv_id: str, splits: dict[str, float]) -> str:
    """Deterministic split by ID hash: the same conversation always lands in the same split."""
    u = int(hashlib.sha256(("split:" + conv_id).encode()).hexdigest()[:8], 16) / 0x1_0000_0000
    acc = 0.0
    for name, frac in splits.items():
        acc += frac
        if u < acc:
            return name
    return list(splits)[-1]


def sample_key(conversation_id: str, exchange: int) -> str:
    """The WebDataset key of one exchange: `{conversation_id}_{exchange:03d}`."""
    return f"{conversation_id}_{exchange:03d}"
