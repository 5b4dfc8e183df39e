"""Where an output, a speaker pool or a source lives: a local folder, or a prefix on object storage (fsspec).

`Store(location)` is one root: a local folder keeps the local rules of `pipeline.io.layout` (temp file, fsync,
rename, folder fsync); an object store (`s3://`, `gs://`, `hdfs://`, see `config.STORAGE_SCHEMES`) has no
rename, but an object appears whole or not at all when its upload completes, so a small file is one PUT
(`write_atomic`) and a tar is a streamed multipart upload (`upload`) that becomes visible only when it is
completed. A killed writer leaves an unfinished multipart upload; `unfinished_uploads` lists them so that a
restart aborts them (`pipeline.io.ownership`).

Credentials come the standard way: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION (or an
instance role) read by botocore itself, or the config's `storage` section naming other environment variables.
A Store holds only those *names*: values are read from the environment of the process that uses the store
(the driver, or a Ray worker on another node), so they are never pickled into Ray tasks, saved configs or
logs; every error from a remote store is re-raised with their values scrubbed out.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

from pipeline.config import is_url, location_problem, url_scheme

log = logging.getLogger(__name__)

# Environment variables whose values are credentials: scrubbed from every message, never written anywhere.
CREDENTIAL_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                  "GOOGLE_OAUTH_ACCESS_TOKEN")
MIN_SECRET_LEN = 8
ACCESS_KEY_ID = re.compile(r"\b(AKIA|ASIA)[A-Z0-9]{12,}\b")
PART_SIZE = 8 << 20  # multipart upload parts (S3: at least 5 MiB but the last)
PARTS_IN_FLIGHT = 4  # parallel part uploads of one object (memory: PART_SIZE each)
ENV_OPTION = {  # storage option -> the s3fs keyword it becomes
    "endpoint_url": ("client_kwargs", "endpoint_url"), "access_key_id": ("key",), "secret_access_key": ("secret",),
    "session_token": ("token",), "region": ("client_kwargs", "region_name"),
}


class StorageError(OSError):
    """A storage operation failed; the message names the location and holds no credential."""


def credential_values(env_names: dict[str, str] | None = None) -> list[str]:
    names = [*CREDENTIAL_ENV, *(v for k, v in (env_names or {}).items() if k in ENV_OPTION
                                and k not in ("endpoint_url", "region"))]
    return [v for v in (os.environ.get(n, "") for n in dict.fromkeys(names)) if len(v) >= MIN_SECRET_LEN]


def scrub_credentials(text: str, env_names: dict[str, str] | None = None) -> str:
    """`text` without any credential value from the environment, nor anything shaped like an AWS key ID."""
    for secret in sorted(credential_values(env_names), key=len, reverse=True):
        text = text.replace(secret, "***")
    text = ACCESS_KEY_ID.sub(r"\1***", text)
    return re.sub(r"(?i)(signature|credential|x-amz-security-token)=[^&\s'\"]+", r"\1=***", text)


def display(location: Path | str) -> str:
    return str(location)


def node_cache_dir() -> Path:
    """This node's cache (speaker pools and sources from object storage, XTTS latents of remote outputs):
    SPEECHCHAT_CACHE_DIR, else ~/.cache/speechchat. Read on the node that uses it."""
    root = os.environ.get("SPEECHCHAT_CACHE_DIR") or str(Path.home() / ".cache" / "speechchat")
    return Path(root)


_fs_lock = threading.Lock()


def _posix(rel: Path) -> str:
    text = rel.as_posix()
    return "" if text == "." else text


class Store:
    """One root (a local folder or an object-store prefix); paths inside it are relative POSIX names."""

    def __init__(self, location: Path | str, env_names: dict[str, str] | None = None):
        text = str(location)
        problem = location_problem(text)
        if problem:
            raise StorageError(f"{text!r} {problem}" if not problem.startswith("'") else problem)
        self.scheme = url_scheme(text) if is_url(text) else None
        self.env_names = dict(env_names or {})
        if self.scheme is None:
            self.root: Path | None = Path(text[len("file://"):] if text.startswith("file://") else text).absolute()
            self.url = str(self.root)
            self._prefix = str(self.root)
        else:
            self.root = None
            self.url = text.rstrip("/")
            self._prefix = self.url.split("://", 1)[1]  # bucket/prefix, as fsspec names it
        self._fs = None

    # --- what it is ----------------------------------------------------------------------------
    @property
    def local(self) -> bool:
        return self.scheme is None

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    def __getstate__(self) -> dict[str, Any]:  # the filesystem (and any credential it holds) stays behind
        return {**self.__dict__, "_fs": None}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Store) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)

    def child(self, rel: str) -> Store:
        return Store(self.location(rel), self.env_names)

    def location(self, rel: str = "") -> Path | str:
        """A Path for a local store (what callers have always had), the URL for a remote one."""
        rel = rel.strip("/")
        if self.local:
            return self.root / rel if rel else self.root
        return f"{self.url}/{rel}" if rel else self.url

    def rel(self, location: Path | str) -> str:
        """The name inside this store of a location (a Path, a URL, or already a relative name)."""
        if self.local and isinstance(location, Path) and location.is_absolute():
            for root in (self.root, self.root.resolve()):
                try:
                    return _posix(location.relative_to(root))
                except ValueError:
                    pass
            try:
                return _posix(location.resolve().relative_to(self.root.resolve()))
            except ValueError:
                raise StorageError(f"{location} is not inside {self.url}") from None
        text = str(location)
        for prefix in (self.url, self._prefix):
            if text == prefix:
                return ""
            if text.startswith(prefix + "/"):
                return text[len(prefix) + 1:]
        if isinstance(location, Path) and location.is_absolute():
            raise StorageError(f"{location} is not inside {self.url}")
        if is_url(text):
            raise StorageError(f"{text} is not inside {self.url}")
        return text.strip("/")

    def _path(self, x: Path | str) -> str:
        if self.local and isinstance(x, Path) and x.is_absolute():
            return str(x)
        rel = self.rel(x)
        return f"{self._prefix}/{rel}" if rel else self._prefix

    # --- the filesystem ------------------------------------------------------------------------
    @property
    def fs(self) -> Any:
        if self._fs is None:
            with _fs_lock:
                if self._fs is None:
                    self._fs = self._make_fs()
        return self._fs

    def storage_options(self) -> dict[str, Any]:
        """fsspec options for this store, from the environment of this process (values: never stored)."""
        opts: dict[str, Any] = {}
        if self.scheme == "s3":
            for option, env in self.env_names.items():
                if option not in ENV_OPTION:
                    continue
                value = os.environ.get(env)
                if value is None:
                    raise StorageError(f"storage.{option}_env names {env}, which is not set in this process's "
                                       "environment")
                *outer, key = ENV_OPTION[option]
                target = opts.setdefault(outer[0], {}) if outer else opts
                target[key] = value
        return opts

    def _make_fs(self) -> Any:
        import fsspec

        if self.local:
            return fsspec.filesystem("file")
        opts = self.storage_options()
        if self.scheme == "s3":
            # other processes (the shard writer, the driver) write here too: never trust a cached listing
            opts.update(use_listings_cache=False, skip_instance_cache=True)
        try:
            return fsspec.filesystem(self.scheme, **opts)
        except Exception as exc:  # noqa: BLE001 - an import or configuration error, said without credentials
            raise self._error("open", "", exc) from None

    def _error(self, op: str, rel: str, exc: BaseException) -> StorageError:
        where = f"{self.url}/{rel}" if rel else self.url
        message = scrub_credentials(f"{type(exc).__name__}: {exc}", self.env_names)
        err = StorageError(f"{op} {where}: {message}")
        err.errno = getattr(exc, "errno", None)
        return err

    @contextmanager
    def _guard(self, op: str, rel: str) -> Iterator[None]:
        if self.local:
            yield
            return
        try:
            yield
        except StorageError:
            raise
        except FileNotFoundError as exc:
            raise FileNotFoundError(scrub_credentials(f"{op} {self.url}/{rel}: not found ({exc})",
                                                      self.env_names)) from None
        except Exception as exc:  # noqa: BLE001 - botocore, aiohttp, gcsfs: one clean, scrubbed error
            raise self._error(op, rel, exc) from None

    # --- reading ----------------------------------------------------------------------------------
    def exists(self, x: Path | str = "") -> bool:
        if self.local:
            return Path(self._path(x)).exists()
        with self._guard("look up", self.rel(x)):
            return self.fs.exists(self._path(x))

    def is_file(self, x: Path | str) -> bool:
        if self.local:
            return Path(self._path(x)).is_file()
        with self._guard("look up", self.rel(x)):
            return self.fs.isfile(self._path(x))

    def size(self, x: Path | str) -> int:
        if self.local:
            return Path(self._path(x)).stat().st_size
        with self._guard("look up", self.rel(x)):
            return int(self.fs.size(self._path(x)))

    def open(self, x: Path | str, mode: str = "rb") -> Any:
        if "r" not in mode:
            raise ValueError("Store.open reads; write with write_atomic or upload")
        if self.local:
            return open(self._path(x), mode)
        with self._guard("read", self.rel(x)):
            return self.fs.open(self._path(x), mode)

    def read_bytes(self, x: Path | str) -> bytes:
        with self.open(x) as fh:
            return fh.read()

    def read_text(self, x: Path | str) -> str:
        return self.read_bytes(x).decode("utf-8")

    def read_table(self, x: Path | str, columns: list[str] | None = None) -> Any:
        import pyarrow.parquet as pq

        if self.local:
            return pq.read_table(self._path(x), columns=columns)
        with self._guard("read", self.rel(x)), self.fs.open(self._path(x), "rb") as fh:
            return pq.read_table(fh, columns=columns)

    def parquet_rows(self, x: Path | str) -> int:
        import pyarrow.parquet as pq

        if self.local:
            return pq.ParquetFile(self._path(x)).metadata.num_rows
        with self._guard("read", self.rel(x)), self.fs.open(self._path(x), "rb") as fh:
            return pq.ParquetFile(fh).metadata.num_rows

    def list_files(self, rel_dir: str = "") -> list[str]:
        """Every file under `rel_dir` (recursive), as names relative to the root, sorted."""
        if self.local:
            base = Path(self._path(rel_dir))
            if not base.is_dir():
                return []
            return sorted(p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())
        with self._guard("list", rel_dir):
            found = self.fs.find(self._path(rel_dir))
        return sorted(self.rel(f) for f in found if self.rel(f) and not self.rel(f).endswith("/"))

    # --- writing -----------------------------------------------------------------------------------
    def write_atomic(self, x: Path | str, write: Callable[[Any], None]) -> None:
        """Readers see the whole file or nothing: local, temp + fsync + rename; remote, one PUT of the bytes."""
        from pipeline.io.layout import atomic_write

        if self.local:
            atomic_write(Path(self._path(x)), write)
            return
        buf = io.BytesIO()
        write(buf)
        with self._guard("write", self.rel(x)):
            self.fs.pipe_file(self._path(x), buf.getvalue())

    def write_bytes(self, x: Path | str, data: bytes) -> None:
        self.write_atomic(x, lambda fh: fh.write(data))

    def append_text(self, x: Path | str, text: str) -> None:
        """Add to a small log file (`state/runs.jsonl`): appended locally; an object is rewritten whole."""
        if self.local:
            path = Path(self._path(x))
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(text)
            return
        old = self.read_bytes(x) if self.exists(x) else b""
        self.write_bytes(x, old + text.encode("utf-8"))

    def remove(self, x: Path | str) -> None:
        if self.local:
            Path(self._path(x)).unlink(missing_ok=True)
            return
        with self._guard("remove", self.rel(x)):
            try:
                self.fs.rm_file(self._path(x))
            except FileNotFoundError:
                pass

    def mkdirs(self, *rel_dirs: str) -> None:
        if self.local:
            for d in rel_dirs:
                Path(self._path(d)).mkdir(parents=True, exist_ok=True)

    def upload(self, x: Path | str) -> ObjectUpload:
        """A streamed upload to the final name of an object store, visible only once `complete()` returns."""
        if self.local:
            raise ValueError("a local store writes through pipeline.io.layout (temp file + rename)")
        rel = self.rel(x)
        if self.scheme == "s3":
            return S3MultipartUpload(self, rel)
        return FileUpload(self, rel)

    # --- unfinished multipart uploads (S3) --------------------------------------------------------
    def unfinished_uploads(self, rel_dir: str = "") -> list[tuple[str, str]]:
        """(name, upload id) of every multipart upload under `rel_dir` that was started and never completed
        or aborted (a writer killed mid-upload). Other stores have none to list."""
        if self.scheme != "s3":
            return []
        bucket, _, key_prefix = self._path(rel_dir).partition("/")
        found: list[tuple[str, str]] = []
        args: dict[str, Any] = {"Bucket": bucket, "Prefix": key_prefix.rstrip("/") + "/" if key_prefix else ""}
        with self._guard("list uploads", rel_dir):
            for _ in range(10_000):  # pages of 1000
                page = self.fs.call_s3("list_multipart_uploads", **args)
                found += [(self.rel(f"{bucket}/{u['Key']}"), u["UploadId"]) for u in page.get("Uploads", [])]
                if not page.get("IsTruncated"):
                    break
                args.update(KeyMarker=page["NextKeyMarker"], UploadIdMarker=page["NextUploadIdMarker"])
        return sorted(found)

    def abort_upload(self, rel: str, upload_id: str) -> None:
        bucket, _, key = self._path(rel).partition("/")
        with self._guard("abort upload", rel):
            self.fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id)


class ObjectUpload:
    """A file-like sink for one object: `write()` as often as needed, then `complete()` (or `abort()`)."""

    def write(self, data: bytes | memoryview) -> int:
        raise NotImplementedError

    def complete(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError


class S3MultipartUpload(ObjectUpload):
    """Parts of PART_SIZE go up on a few threads while the caller keeps writing; the object exists only after
    CompleteMultipartUpload. An exception aborts the upload; a killed process leaves it for the restart."""

    _pool: ThreadPoolExecutor | None = None
    _pool_pid: int | None = None

    def __init__(self, store: Store, rel: str):
        self.store, self.rel = store, rel
        self.bucket, _, self.key = store._path(rel).partition("/")
        self.part_size = int(store.env_names.get("part_size_mb", PART_SIZE >> 20)) << 20
        # an object that ends before this many bytes goes up in one PUT (what S3 clients do), else multipart
        self.threshold = int(store.env_names.get("multipart_threshold_mb", PART_SIZE >> 20)) << 20
        self.upload_id: str | None = None
        self.buf = bytearray()
        self.parts: list[Future] = []
        self.bytes = 0
        if self.threshold == 0:
            self._start()

    def _start(self) -> None:
        with self.store._guard("start upload", self.rel):
            self.upload_id = self.store.fs.call_s3("create_multipart_upload", Bucket=self.bucket,
                                                   Key=self.key)["UploadId"]

    @classmethod
    def pool(cls) -> ThreadPoolExecutor:
        if cls._pool_pid != os.getpid():  # a forked child gets a fresh pool
            cls._pool, cls._pool_pid = ThreadPoolExecutor(PARTS_IN_FLIGHT * 2, thread_name_prefix="s3-part"), os.getpid()
        return cls._pool

    def _put_part(self, number: int, body: bytes) -> dict[str, Any]:
        with self.store._guard("upload part of", self.rel):
            r = self.store.fs.call_s3("upload_part", Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                      PartNumber=number, Body=body)
        return {"PartNumber": number, "ETag": r["ETag"]}

    def _submit(self, body: bytes) -> None:
        in_flight = [f for f in self.parts if not f.done()]
        while len(in_flight) >= PARTS_IN_FLIGHT:  # bounded memory: wait for the oldest part
            in_flight.pop(0).result()
        for done in (f for f in self.parts if f.done()):
            done.result()  # surface a failed part now
        self.parts.append(self.pool().submit(self._put_part, len(self.parts) + 1, body))

    def write(self, data: bytes | memoryview) -> int:
        self.buf += data
        n = memoryview(data).nbytes
        self.bytes += n
        if self.upload_id is None and len(self.buf) >= max(self.threshold, 1):
            self._start()
        while self.upload_id is not None and len(self.buf) >= self.part_size:
            self._submit(bytes(self.buf[:self.part_size]))
            del self.buf[:self.part_size]
        return n

    def flush_parts(self) -> None:
        """Send the last part and wait for every part (the object is still invisible). A small object has
        no upload yet: it goes up whole in `complete`."""
        if self.upload_id is None:
            return
        if self.buf or not self.parts:
            self._submit(bytes(self.buf))
            self.buf = bytearray()
        for f in self.parts:
            f.result()

    def complete(self) -> None:
        if self.upload_id is None:  # below the multipart threshold: one PUT, visible whole or not at all
            with self.store._guard("write", self.rel):
                self.store.fs.call_s3("put_object", Bucket=self.bucket, Key=self.key, Body=bytes(self.buf))
            return
        self.flush_parts()
        parts = [f.result() for f in self.parts]
        with self.store._guard("complete upload of", self.rel):
            self.store.fs.call_s3("complete_multipart_upload", Bucket=self.bucket, Key=self.key,
                                  UploadId=self.upload_id, MultipartUpload={"Parts": parts})

    def abort(self) -> None:
        for f in self.parts:
            f.exception()
        if self.upload_id is None:
            return
        try:
            self.store.abort_upload(self.rel, self.upload_id)
        except (StorageError, FileNotFoundError) as exc:  # the restart aborts it then
            log.warning("could not abort the upload of %s: %s", self.rel, exc)


class FileUpload(ObjectUpload):
    """Other object stores (gs://, hdfs://): fsspec's own buffered writer; an exception discards it."""

    def __init__(self, store: Store, rel: str):
        self.store, self.rel = store, rel
        with store._guard("start upload", rel):
            self.fh = store.fs.open(store._path(rel), "wb")

    def write(self, data: bytes | memoryview) -> int:
        with self.store._guard("write", self.rel):
            return self.fh.write(bytes(data))

    def flush_parts(self) -> None:
        pass

    def complete(self) -> None:
        with self.store._guard("complete upload of", self.rel):
            self.fh.close()

    def abort(self) -> None:
        discard = getattr(self.fh, "discard", None)
        if discard is not None:
            discard()


# --- inputs from object storage, cached on each node ---------------------------------------------------

def cached_copy(location: Path | str, env_names: dict[str, str] | None = None,
                also: Callable[[Path], list[str]] | None = None) -> Path:
    """A local path for `location`: itself when local; for a URL, a copy in this node's cache
    (`node_cache_dir()/inputs/<digest of the URL>/`), fetched once per node and again only when the
    object's size or ETag changed. A prefix is copied whole (a folder of source files). `also(local copy)`
    names more files beside the first (relative to its folder, e.g. a speaker pool's reference clips)."""
    if not is_url(location):
        return Path(location)
    store = Store(location, env_names)
    parent_url, _, name = store.url.rpartition("/")
    parent = Store(parent_url, env_names)
    target_dir = node_cache_dir() / "inputs" / hashlib.sha256(store.url.encode()).hexdigest()[:16]
    if parent.is_file(name):
        _fetch(parent, name, target_dir / name)
        if also is not None:
            for rel in also(target_dir / name):
                rel = PurePosixPath(rel).as_posix()
                if rel.startswith("/") or ".." in PurePosixPath(rel).parts:
                    continue  # an absolute or escaping path is a local file the manifest names; not fetched
                if parent.is_file(rel):
                    _fetch(parent, rel, target_dir / rel)
        return target_dir / name
    files = store.list_files()
    if not files:
        raise FileNotFoundError(f"{store.url}: no such object or prefix")
    for rel in files:
        _fetch(store, rel, target_dir / name / rel)
    return target_dir / name


def _fetch(store: Store, rel: str, target: Path) -> None:
    info = store.fs.info(store._path(rel)) if not store.local else {}
    stamp = f"{info.get('size')}:{info.get('ETag') or info.get('etag') or info.get('mtime')}"
    stamp_file = target.with_name(target.name + ".speechchat-stamp")
    if target.is_file() and stamp_file.is_file() and stamp_file.read_text() == stamp:
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.part")
    with store.open(rel) as src, open(tmp, "wb") as dst:
        for block in iter(lambda: src.read(1 << 20), b""):
            dst.write(block)
    os.replace(tmp, target)
    stamp_file.write_text(stamp)
