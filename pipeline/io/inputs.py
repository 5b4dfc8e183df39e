"""Inputs that may live on object storage (speaker pools with their reference clips, source datasets), as local
files on the node that reads them: fetched once per node into its cache (`storage.node_cache_dir()`), again
only when an object changed. A local path is used where it is."""

from __future__ import annotations

import hashlib
from pathlib import Path

from pipeline.config import is_url
from pipeline.io.storage import cached_copy, node_cache_dir
from pipeline.voices.pool import load_pool


def local_pool_file(location: Path | str, env_names: dict[str, str] | None = None) -> Path:
    """The speaker-pool manifest as a local file with its reference clips beside it (as the manifest names
    them, relative to its folder)."""
    return cached_copy(location, env_names,
                       also=lambda manifest: [clip.path for s in load_pool(manifest) for clip in s.references])


def local_source(location: Path | str, env_names: dict[str, str] | None = None) -> Path:
    """A source dataset (a file, or a folder / prefix of files) as a local path."""
    return cached_copy(location, env_names)


def node_state_dir(output: Path | str, name: str) -> Path:
    """A folder for derived state that actors keep beside their work (XTTS latents): the output's state/ when
    the output is a local folder, else this node's cache, keyed by the output URL (each node computes its
    own; nothing is read from the driver's disk)."""
    if not is_url(output):
        return Path(output) / "state" / name
    return node_cache_dir() / "state" / hashlib.sha256(str(output).encode()).hexdigest()[:16] / name
