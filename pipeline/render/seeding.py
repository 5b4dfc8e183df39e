"""Seeds derived from content (so a rerun draws the same) and a scope for libraries that use the global RNGs."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np


def derive_seed(base: int, *parts: str) -> int:
    """A 63-bit seed from a base seed and names (a conversation ID, a sample key): the same inputs, the same seed."""
    digest = hashlib.sha256("\x1f".join([str(base), *parts]).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


@contextmanager
def seeded_globals(seed: int) -> Iterator[None]:
    """audiomentations draws from `random` and `np.random`: seed both for the call, then put their states back,
    so the result depends on `seed` alone and nothing else in the process is disturbed."""
    py_state, np_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
