"""Plan: expand the config into conversation specs with content-addressed IDs.

ID = hash(dataset, language, per-language index, digest of the text-side settings), so a rerun of the
same config plans the same IDs and skips the ones already finished. The stage maps a stream of plan
indices (ray.data.range) to specs, so planning millions of conversations never holds them in the driver.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import yaml

from pipeline.records import rows_to_table


def conversation_hash(dataset: str, language: str, index: int | str, text_digest: str) -> str:
    return hashlib.sha256(f"{dataset}\x1f{language}\x1f{index}\x1f{text_digest}".encode()).hexdigest()[:16]


def conversation_id(dataset: str, language: str, index: int | str, text_digest: str) -> str:
    return f"{language}-{conversation_hash(dataset, language, index, text_digest)}"


def id_to_u64(conv_id: str) -> int:
    """The 64-bit hash inside an ID; the resume set stores these (8 bytes each, not Python strings)."""
    return int(conv_id.rsplit("-", 1)[-1], 16)


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


@dataclass(frozen=True)
class Taxonomy:
    topics: list[tuple[str, float]]
    scenarios: list[tuple[str, float]]
    personas: list[tuple[str, float]]
    domains: dict[str, str] = field(default_factory=dict)  # topic -> domain

    @staticmethod
    def _weighted(items: Any, what: str, path: Path) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        for item in items or []:
            if isinstance(item, str):
                out.append((item, 1.0))
            elif isinstance(item, dict) and "name" in item:
                out.append((str(item["name"]), float(item.get("weight", 1.0))))
            else:
                raise ValueError(f"{path}: {what} entry {item!r} must be a string or {{name, weight}}")
        if not out:
            raise ValueError(f"{path}: no {what} listed")
        return out

    @classmethod
    def load(cls, path: Path) -> "Taxonomy":
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: must be a mapping with topics, scenarios and personas")
        domains = {str(t["name"]): str(t.get("domain", "")) for t in data.get("topics") or [] if isinstance(t, dict)}
        return cls(*(cls._weighted(data.get(k), k, path) for k in ("topics", "scenarios", "personas")), domains)


def _pick(rng: np.random.Generator, items: list[tuple[str, float]]) -> str:
    weights = np.array([w for _, w in items], dtype=float)
    return items[int(rng.choice(len(items), p=weights / weights.sum()))][0]


class _Picker:
    """`_pick` with the weights' CDF computed once: the same draw as `rng.choice(n, p=...)` (one uniform,
    searchsorted on the normalised cumulative sum), about 10x cheaper per call, which matters at 7M specs."""

    def __init__(self, items: list[tuple[str, float]]):
        weights = np.array([w for _, w in items], dtype=float)
        cdf = (weights / weights.sum()).cumsum()
        cdf /= cdf[-1]
        self.names, self.cdf = [name for name, _ in items], cdf

    def __call__(self, rng: np.random.Generator) -> str:
        return self.names[int(self.cdf.searchsorted(rng.random(), side="right"))]


@dataclass
class PlanStage:
    """Maps a batch of plan indices (column `id`) to conversation specs, minus finished IDs."""

    dataset: str
    languages: list[str]
    exchanges: dict[str, tuple[int, int]]
    seed: int
    text_digest: str
    splits: dict[str, float]
    taxonomies: dict[str, Taxonomy]
    done_ids: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.uint64))  # sorted

    def __post_init__(self) -> None:
        self._pickers = {lang: tuple(_Picker(items) for items in (tax.topics, tax.scenarios, tax.personas))
                         for lang, tax in self.taxonomies.items()}

    def spec(self, plan_index: int) -> dict[str, Any]:
        language = self.languages[plan_index % len(self.languages)]
        index = plan_index // len(self.languages)
        conv_id = conversation_id(self.dataset, language, index, self.text_digest)
        rng = np.random.default_rng([self.seed, id_to_u64(conv_id) & 0xFFFFFFFF, index])
        tax = self.taxonomies[language]
        pick_topic, pick_scenario, pick_persona = self._pickers[language]
        lo, hi = self.exchanges[language]
        return {
            "conversation_id": conv_id,
            "plan_index": plan_index,
            "dataset": self.dataset,
            "language": language,
            "split": split_for(conv_id, self.splits),
            "topic": (topic := pick_topic(rng)),
            "domain": tax.domains.get(topic, ""),
            "scenario": pick_scenario(rng),
            "persona": pick_persona(rng),
            "num_exchanges": int(rng.integers(lo, hi + 1)),
            "seed": int(rng.integers(0, 2**31 - 1)),
            "text_digest": self.text_digest,
        }

    def __call__(self, batch: pa.Table | dict) -> pa.Table:
        indices = batch.column("id").to_pylist() if isinstance(batch, pa.Table) else list(batch["id"])
        specs = [self.spec(int(i)) for i in indices]
        return rows_to_table([s for s in specs if not is_done(self.done_ids, s["conversation_id"])])
