"""Affinity pooling: training-free merging of adjacent, similar speech frames.

A pooled omni speech model merges speech tokens whose embeddings are nearly the same (Affinity Pooling, at the
input and in deep layers). Here: a run of adjacent frames in which every neighbouring pair has cosine
similarity strictly above `threshold` becomes one token, the mean of the run. Order is preserved, and the
mapping from each pooled token back to its original frames is returned, so a loader can budget batches by
the pooled length the model will actually see.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Pooled:
    frames: np.ndarray   # (T', D) means of the merged runs, in order
    starts: np.ndarray   # (T',) first original frame of each pooled token
    ends: np.ndarray     # (T',) one past its last original frame

    def groups(self) -> list[range]:
        """Pooled token i covers original frames groups()[i]."""
        return [range(int(s), int(e)) for s, e in zip(self.starts, self.ends)]

    def frame_to_token(self) -> np.ndarray:
        """For each original frame, the index of the pooled token it went into."""
        return np.repeat(np.arange(len(self.starts)), self.ends - self.starts)


def adjacent_similarity(frames: np.ndarray) -> np.ndarray:
    """Cosine similarity of each frame with the next one: shape (T-1,). A zero frame is similar to nothing."""
    x = np.asarray(frames, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"frames must be (T, D), got shape {x.shape}")
    norms = np.linalg.norm(x, axis=1)
    dots = np.einsum("td,td->t", x[:-1], x[1:])
    denom = norms[:-1] * norms[1:]
    return np.divide(dots, denom, out=np.full(dots.shape, -1.0), where=denom > 0)


def run_boundaries(frames: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold {threshold} must be a cosine similarity in [-1, 1]")
    t = len(frames)
    if t == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    breaks = np.flatnonzero(adjacent_similarity(frames) <= threshold) + 1  # a new run starts after a dissimilar pair
    starts = np.concatenate([[0], breaks]).astype(np.int64)
    ends = np.concatenate([breaks, [t]]).astype(np.int64)
    return starts, ends


def affinity_pool(frames: np.ndarray, threshold: float) -> Pooled:
    x = np.asarray(frames, dtype=np.float32)
    starts, ends = run_boundaries(x, threshold)
    if len(starts) == 0:
        return Pooled(x.reshape(0, x.shape[1] if x.ndim == 2 else 0), starts, ends)
    sums = np.add.reduceat(x, starts, axis=0)
    return Pooled(sums / (ends - starts)[:, None], starts, ends)


def pooled_length(frames: np.ndarray, threshold: float) -> int:
    """Number of tokens after pooling, without computing the means (what length budgeting needs)."""
    if len(frames) == 0:
        return 0
    return int(np.count_nonzero(adjacent_similarity(frames) <= threshold)) + 1
