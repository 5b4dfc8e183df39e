"""Near-duplicate conversations: MinHash signatures (datasketch) and an LSH index where the first one seen wins.

A conversation's fingerprint is the set of shingles of its canonical spoken text (word n-grams for English,
character n-grams for Chinese, which has no spaces); two conversations whose shingle sets have a Jaccard
similarity above `dedup.threshold` are near-duplicates with high probability. datasketch computes the
MinHash signatures and chooses the LSH banding (b bands of r rows) that fits the threshold.

The index stores, per band, only a 64-bit hash of the band and the sequence number of the first conversation
that had it: conversations found to be duplicates are never inserted, so a bucket almost never holds two.
That is ~12 bytes per band per kept conversation in sorted numpy arrays (bench/dedup_bench.py measures it
against datasketch's own in-memory `MinHashLSH`, whose per-bucket Python sets cost kilobytes per entry).
`RedisLSH` wraps datasketch's Redis storage for an index that several actors share (docs/quality.md).

An index is resume-aware: `preload` takes the signatures that earlier runs kept (stored beside the output),
so a conversation that nearly copies one kept in an earlier run is caught too.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pipeline.config import DedupConfig

ID_FORMAT = re.compile(r"^([a-z]{2,3})-([0-9a-f]{16})$")  # pipeline conversation IDs: <language>-<64-bit hash>
_HAN_CHARS = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_ZH_TOKEN = re.compile(rf"[{_HAN_CHARS}]|[^\W_{_HAN_CHARS}]+(?:'[^\W_{_HAN_CHARS}]+)*")  # one Han character, or a word
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")  # words, keeping don't / it's whole
_SPLITMIX = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))


@dataclass(frozen=True)
class ShingleSettings:
    """How text becomes a set: n-gram sizes per language and the MinHash size. Stored with every signature,
    because signatures made with other settings cannot be compared."""

    num_perm: int = 128
    seed: int = 1
    word_ngram: int = 2   # English and other space-separated languages
    char_ngram: int = 2   # Chinese

    def tag(self) -> str:
        return f"minhash-affine32/p{self.num_perm}/s{self.seed}/w{self.word_ngram}/c{self.char_ngram}/v1"


def tokens(text: str, language: str) -> list[str]:
    """Canonical tokens of spoken text: NFKC, case-folded, punctuation dropped; Chinese as characters (Han
    characters one by one, Latin words and numbers whole), other languages as words."""
    text = unicodedata.normalize("NFKC", text).casefold().replace("’", "'")
    return (_ZH_TOKEN if language == "zh" else _WORD).findall(text)


def shingles(texts: Sequence[str], language: str, settings: ShingleSettings) -> list[bytes]:
    """Distinct n-grams over the turns in order (n-grams cross turn boundaries: a conversation is one text).
    A text shorter than n is one shingle, so it still has a fingerprint."""
    toks = [t for text in texts for t in tokens(text, language)]
    n = settings.char_ngram if language == "zh" else settings.word_ngram
    sep = "" if language == "zh" else " "
    if len(toks) <= n:
        return [sep.join(toks).encode()] if toks else []
    return list(dict.fromkeys(sep.join(toks[i:i + n]).encode() for i in range(len(toks) - n + 1)))


class Signer:
    """MinHash signatures (uint32 x num_perm, datasketch's affine32 scheme) of conversations' texts."""

    def __init__(self, settings: ShingleSettings):
        from datasketch import MinHash

        self.settings = settings
        self._template = MinHash(num_perm=settings.num_perm, seed=settings.seed, scheme="affine32")

    def signatures(self, conversations: Sequence[Sequence[str]], languages: Sequence[str]) -> np.ndarray:
        """(n, num_perm) uint32; an empty conversation gets the all-max signature (it matches only itself)."""
        from datasketch import MinHash

        out = np.empty((len(conversations), self.settings.num_perm), dtype=np.uint32)
        for i, (texts, language) in enumerate(zip(conversations, languages)):
            m = MinHash(permutations=self._template.permutations, seed=self.settings.seed, scheme="affine32")
            m.update_batch(shingles(texts, language, self.settings))
            out[i] = m.hashvalues
        return out

    def signature(self, texts: Sequence[str], language: str) -> np.ndarray:
        return self.signatures([texts], [language])[0]


# datasketch weighs the false-positive and false-negative areas of the LSH S-curve; recall counts more here
# (a near-copy that reaches TTS costs more than a lookalike dropped): with 128 permutations and threshold
# 0.7 this gives 16 bands of 8 rows, which catches pairs at Jaccard 0.8 with probability 0.95 and 0.75
# with 0.82, while pairs at 0.5 collide 6 % of the time and at 0.3 0.1 % (docs/quality.md has the curve).
LSH_WEIGHTS = (0.3, 0.7)


def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) datasketch's MinHashLSH picks for this threshold and LSH_WEIGHTS."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=LSH_WEIGHTS)
    return lsh.b, lsh.r


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, vectorised (uint64 arithmetic wraps, which is the point)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _SPLITMIX[1]
    x = x ^ (x >> np.uint64(27))
    x = x * _SPLITMIX[2]
    return x ^ (x >> np.uint64(31))


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n, bands) uint64: one hash per band of each signature, the band number mixed in (so all bands share
    one table). 64 bits: a false bucket match among 10^8 entries has a chance of about 3e-4 per query."""
    sig = np.asarray(signatures, dtype=np.uint32)[:, : bands * rows].reshape(len(signatures), bands, rows)
    with np.errstate(over="ignore"):
        h = np.broadcast_to(np.arange(1, bands + 1, dtype=np.uint64) * _SPLITMIX[0], sig.shape[:2]).copy()
        for j in range(rows):
            h = _mix(h ^ sig[:, :, j].astype(np.uint64))
    return h


class BandTable:
    """band key -> sequence number of the first entry that had it: a sorted uint64/uint32 array pair plus a
    small dict of recent inserts, merged into the arrays when it grows past `buffer`."""

    def __init__(self, buffer: int = 1 << 18):
        self.keys = np.empty(0, dtype=np.uint64)
        self.values = np.empty(0, dtype=np.uint32)
        self.recent: dict[int, int] = {}
        self.buffer = buffer

    def __len__(self) -> int:
        return len(self.keys) + len(self.recent)

    def first(self, keys: list[int]) -> int | None:
        """The smallest sequence number stored under any of `keys`, or None."""
        found = [self.recent[k] for k in keys if k in self.recent]
        if len(self.keys):
            query = np.array(keys, dtype=np.uint64)
            pos = np.searchsorted(self.keys, query)
            pos[pos == len(self.keys)] = 0
            hit = self.keys[pos] == query
            if hit.any():
                found.append(int(self.values[pos[hit]].min()))
        return min(found) if found else None

    def add(self, keys: list[int], value: int) -> None:
        for k in keys:
            self.recent.setdefault(k, value)  # first one wins
        if len(self.recent) >= self.buffer:
            self.flush()

    def add_many(self, keys: np.ndarray, values: np.ndarray) -> None:
        """Bulk insert (preloading): keys (n, bands) with one value per row; on equal keys the smallest value wins."""
        self.flush()
        keys = np.asarray(keys, dtype=np.uint64)
        per_row = keys.shape[1] if keys.ndim == 2 else 1
        values = np.concatenate([self.values, np.repeat(np.asarray(values, dtype=np.uint32), per_row)])
        keys = np.concatenate([self.keys, keys.ravel()])
        order = np.lexsort((values, keys))  # by key, then the smallest value first
        keys, values = keys[order], values[order]
        first = np.ones(len(keys), dtype=bool)
        first[1:] = keys[1:] != keys[:-1]
        self.keys, self.values = keys[first], values[first]

    def flush(self) -> None:
        """Merge the recent inserts into the sorted arrays: one O(n) pass (np.insert), no re-sort."""
        if not self.recent:
            return
        new_keys = np.fromiter(self.recent.keys(), dtype=np.uint64, count=len(self.recent))
        new_values = np.fromiter(self.recent.values(), dtype=np.uint32, count=len(self.recent))
        self.recent = {}
        order = np.argsort(new_keys)
        new_keys, new_values = new_keys[order], new_values[order]
        if len(self.keys):  # keys already stored keep their (older, smaller) value
            pos = np.searchsorted(self.keys, new_keys)
            clipped = np.minimum(pos, len(self.keys) - 1)
            fresh = self.keys[clipped] != new_keys
            new_keys, new_values, pos = new_keys[fresh], new_values[fresh], pos[fresh]
        else:
            pos = np.zeros(len(new_keys), dtype=np.intp)
        self.keys = np.insert(self.keys, pos, new_keys)
        self.values = np.insert(self.values, pos, new_values)

    def nbytes(self) -> int:
        return self.keys.nbytes + self.values.nbytes


class _IdColumn:
    """Growable uint64 array of the hashes inside conversation IDs (8 bytes each instead of a Python str)."""

    def __init__(self) -> None:
        self.data = np.empty(1024, dtype=np.uint64)
        self.size = 0

    def append(self, value: int) -> int:
        if self.size == len(self.data):
            self.data = np.resize(self.data, 2 * len(self.data))
        self.data[self.size] = value
        self.size += 1
        return self.size - 1

    def extend(self, values: np.ndarray) -> np.ndarray:
        start = self.size
        while self.size + len(values) > len(self.data):
            self.data = np.resize(self.data, 2 * len(self.data))
        self.data[start:start + len(values)] = values
        self.size += len(values)
        return np.arange(start, self.size, dtype=np.uint32)


def split_id(conversation_id: str) -> tuple[str, int]:
    match = ID_FORMAT.match(conversation_id)
    if not match:
        raise ValueError(f"conversation ID {conversation_id!r} is not <language>-<16 hex digits>")
    return match.group(1), int(match.group(2), 16)


class NearDupIndex:
    """The kept conversations of one dataset, per language: `check` answers "which earlier conversation does
    this one nearly copy?" and adds it when the answer is none. Deterministic: the same signatures in the same
    order give the same answers, and the ID named is the earliest colliding one."""

    def __init__(self, threshold: float, settings: ShingleSettings, buffer: int = 1 << 18):
        self.threshold, self.settings = threshold, settings
        self.bands, self.rows = lsh_params(threshold, settings.num_perm)
        self._tables: dict[str, BandTable] = {}
        self._ids: dict[str, _IdColumn] = {}
        self._buffer = buffer

    def __len__(self) -> int:
        return sum(ids.size for ids in self._ids.values())

    def _language(self, language: str) -> tuple[BandTable, _IdColumn]:
        if language not in self._tables:
            self._tables[language], self._ids[language] = BandTable(self._buffer), _IdColumn()
        return self._tables[language], self._ids[language]

    def check(self, conversation_id: str, signature: np.ndarray) -> str | None:
        """The ID this conversation nearly duplicates, or None (and then it is added)."""
        return self.check_many([conversation_id], np.asarray(signature)[None, :])[0]

    def check_many(self, conversation_ids: Sequence[str], signatures: np.ndarray) -> list[str | None]:
        """`check` for a batch, in order (a later row can duplicate an earlier row of the same batch); the band
        hashes of the whole batch are computed in one vectorised pass."""
        all_keys = band_keys(np.asarray(signatures), self.bands, self.rows).tolist()
        verdicts: list[str | None] = []
        for conversation_id, keys in zip(conversation_ids, all_keys):
            language, u = split_id(conversation_id)
            table, ids = self._language(language)
            seq = table.first(keys)
            if seq is not None:
                verdicts.append(f"{language}-{int(ids.data[seq]):016x}")
            else:
                table.add(keys, ids.append(u))
                verdicts.append(None)
        return verdicts

    def flush(self) -> None:
        for table in self._tables.values():
            table.flush()

    def preload(self, conversation_ids: Sequence[str], signatures: np.ndarray) -> int:
        """Add what earlier runs kept (in their order: earlier first) without checking; returns how many."""
        by_language: dict[str, list[int]] = {}
        for i, cid in enumerate(conversation_ids):
            by_language.setdefault(split_id(cid)[0], []).append(i)
        for language, rows in by_language.items():
            table, ids = self._language(language)
            hashes = np.array([split_id(conversation_ids[i])[1] for i in rows], dtype=np.uint64)
            seqs = ids.extend(hashes)
            table.add_many(band_keys(np.asarray(signatures)[rows], self.bands, self.rows), seqs)
        return len(conversation_ids)

    def nbytes(self) -> int:
        """Bytes held in arrays (the recent-insert dicts are bounded by `buffer` and not counted)."""
        return sum(t.nbytes() for t in self._tables.values()) + sum(8 * ids.size for ids in self._ids.values())


class RedisNearDupIndex:
    """The same questions against datasketch's `MinHashLSH` with Redis storage, so several actors (or nodes)
    share one index. Two actors checking near-copies at the same instant can both miss each other (no
    transaction spans the query and the insert); the earliest-ID answer is by ID order, not arrival."""

    def __init__(self, threshold: float, settings: ShingleSettings, host: str, port: int, basename: str):
        from datasketch import MinHashLSH

        self.settings = settings
        self._lsh = {}
        self._make = lambda language: MinHashLSH(
            threshold=threshold, num_perm=settings.num_perm, weights=LSH_WEIGHTS, prepickle=False,
            storage_config={"type": "redis", "basename": f"{basename}:{settings.tag()}:{language}".encode(),
                            "redis": {"host": host, "port": port}})

    def _index(self, language: str):
        if language not in self._lsh:
            self._lsh[language] = self._make(language)
        return self._lsh[language]

    def _minhash(self, signature: np.ndarray):
        from datasketch import LeanMinHash

        return LeanMinHash(seed=self.settings.seed, hashvalues=np.asarray(signature, dtype=np.uint32),
                           scheme="affine32")

    def check(self, conversation_id: str, signature: np.ndarray) -> str | None:
        language, _ = split_id(conversation_id)
        lsh, minhash = self._index(language), self._minhash(signature)
        found = lsh.query(minhash)
        if found:
            return min(k.decode() if isinstance(k, bytes) else str(k) for k in found)
        lsh.insert(conversation_id.encode(), minhash, check_duplication=False)
        return None

    def check_many(self, conversation_ids: Sequence[str], signatures: np.ndarray) -> list[str | None]:
        return [self.check(cid, sig) for cid, sig in zip(conversation_ids, np.asarray(signatures))]

    def preload(self, conversation_ids: Sequence[str], signatures: np.ndarray) -> int:
        added = 0
        by_language: dict[str, list[int]] = {}
        for i, cid in enumerate(conversation_ids):
            by_language.setdefault(split_id(cid)[0], []).append(i)
        for language, rows in by_language.items():
            lsh = self._index(language)
            with lsh.insertion_session() as session:
                for i in rows:
                    key = conversation_ids[i].encode()
                    if key not in lsh.keys:  # several actors preload the same kept set
                        session.insert(key, self._minhash(signatures[i]), check_duplication=False)
                        added += 1
        return added


def settings_of(cfg: DedupConfig) -> ShingleSettings:
    return ShingleSettings(num_perm=cfg.num_perm, seed=cfg.seed, word_ngram=cfg.word_ngram, char_ngram=cfg.char_ngram)


def make_index(cfg: DedupConfig, basename: str) -> NearDupIndex | RedisNearDupIndex:
    """The index `dedup.storage` asks for: in this process, or datasketch's Redis storage (`basename` keeps
    datasets apart on a shared server)."""
    if cfg.storage == "redis":
        return RedisNearDupIndex(cfg.threshold, settings_of(cfg), cfg.redis_host, cfg.redis_port, basename)
    return NearDupIndex(cfg.threshold, settings_of(cfg))


def redis_problem(cfg: DedupConfig) -> str | None:
    """Why the Redis server of `dedup.storage: redis` cannot be used, or None."""
    try:
        import redis
    except ImportError:
        return "dedup.storage is redis but the redis package is not installed: pip install redis"
    try:
        redis.Redis(host=cfg.redis_host, port=cfg.redis_port, socket_connect_timeout=5).ping()
    except Exception as exc:  # noqa: BLE001 - any failure to reach it is the same answer
        return (f"dedup.storage is redis but {cfg.redis_host}:{cfg.redis_port} does not answer ({type(exc).__name__}); "
                "start redis-server there or set dedup.storage: memory")
    return None


def repeated_turn(texts: Sequence[str], language: str, min_tokens: int) -> tuple[int, int] | None:
    """(earlier, later) turn indices of the first turn that repeats an earlier turn word for word (after
    case and punctuation are ignored), among turns of at least `min_tokens` tokens; else None."""
    seen: dict[tuple[str, ...], int] = {}
    for i, text in enumerate(texts):
        toks = tuple(tokens(text, language))
        if len(toks) < min_tokens:
            continue
        if toks in seen:
            return seen[toks], i
        seen[toks] = i
    return None

