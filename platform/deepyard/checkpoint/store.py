"""Checkpoint storage: where a checkpoint's bytes live, on local disk or behind a pyarrow.fs URI.

Data flow: the checkpoint writer streams each rank's files into a `Store` with `put_file`
(hashing while it copies) and publishes the manifest last with `put_bytes`; resume finds
steps with `list_dirs` and reads back with `get_bytes`, `get_file` and `sha256`. Every
storage failure leaves this module as a `CheckpointError` naming the location, the key and
the fix.

Locations (`checkpoint.uri`):

- a plain path (made absolute; the directory is created) or `file:///abs/path`;
- `s3://bucket/prefix`, with credentials from the AWS chain: `AWS_ACCESS_KEY_ID` and
  `AWS_SECRET_ACCESS_KEY` (`AWS_SESSION_TOKEN`), `AWS_PROFILE` / `~/.aws`, instance roles;
- any other URI `pyarrow.fs.FileSystem.from_uri` accepts (gs://, hdfs://, abfs://).

S3-compatible endpoints (MinIO, Ceph, moto): with pyarrow 26.0.1 both of these work.

- URI query parameters: `s3://bucket/prefix?endpoint_override=host:9000&scheme=http`.
  pyarrow accepts only `region`, `scheme`, `endpoint_override`, `allow_bucket_creation`,
  `allow_bucket_deletion`, `tls_ca_file_path` and `tls_verify_certificates` there (any other
  is an error; credentials cannot go in the query).
- The environment: `AWS_ENDPOINT_URL=http://host:9000` (or `AWS_ENDPOINT_URL_S3`), read by
  the AWS SDK inside Arrow >= 15; the URI stays a plain `s3://bucket/prefix`.

With neither and no `?region=`, opening an s3:// URI asks AWS for the bucket's region (one
HeadBucket request), so it needs the network.

Atomicity: a local write goes to a hidden temporary name in the target directory, is
fsynced and renamed over the final name (and the directory fsynced), so a crash never leaves
a full-size-looking partial file under a final key. An S3 object appears only when its
upload completes; pyarrow completes an upload even when the stream is closed after an error,
so a failed put deletes its key afterwards (best effort).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from deepyard.errors import CheckpointError

CHUNK_BYTES = 4 * 1024 * 1024
_T = TypeVar("_T")
# A scheme of two or more letters (so a Windows drive letter is not one).
_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")
_USE = "use a local path, file://… or s3://bucket/prefix"
_S3_CREDENTIALS = "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
_S3_ENDPOINT = (
    "for a non-AWS endpoint set AWS_ENDPOINT_URL=http://host:port or add "
    "?endpoint_override=host:port&scheme=http&region=… to checkpoint.uri"
)
_S3_QUERY = "S3 URIs accept ?region=…&endpoint_override=host:port&scheme=http|https"
# Markers in Arrow's "AWS Error <NAME> during <operation>: ..." messages.
_S3_DENIED = (
    "ACCESS_DENIED",
    "INVALID_ACCESS_KEY_ID",
    "SIGNATURE_DOES_NOT_MATCH",
    "TOKEN",  # EXPIRED_TOKEN, INVALID_CLIENT_TOKEN_ID, MISSING_AUTHENTICATION_TOKEN
    "UNRECOGNIZED_CLIENT",
    "HTTP status 401",
    "HTTP status 403",
)
_S3_UNREACHABLE = ("NETWORK_CONNECTION", "curlCode", "Could not resolve", "Could not connect")


@dataclass(frozen=True)
class StoredFile:
    """One file in a store."""

    key: str  # path relative to the store root, '/'-separated
    size_bytes: int


class Store:
    """A checkpoint location: a local path, file:// or s3://bucket/prefix (any pyarrow.fs URI)."""

    def __init__(self, uri: str, filesystem: pafs.FileSystem, root: str) -> None:
        self.uri = uri
        self.filesystem = filesystem
        self.root = root.rstrip("/")

    @classmethod
    def open(cls, uri: str) -> Store:
        """Open `uri`; a plain path is local and made absolute. A local root is created."""
        if not _URI_SCHEME.match(uri):
            root = os.path.abspath(os.path.expanduser(uri))
            store = cls(root, pafs.LocalFileSystem(), root)
        else:
            store = cls(uri, *_filesystem_from_uri(uri))
        if store.is_local:
            with store._failing("creating the directory", ""):
                os.makedirs(store.local_path(), exist_ok=True)
        return store

    @property
    def shown_uri(self) -> str:
        """The URI for messages and records, credentials masked."""
        return _redacted(self.uri)

    def __repr__(self) -> str:
        return f"Store({_redacted(self.uri)!r})"

    @property
    def is_local(self) -> bool:
        return isinstance(self.filesystem, pafs.LocalFileSystem)

    def local_path(self, key: str = "") -> Path:
        """The local file of `key` (the root for ""); only local stores have one."""
        if not self.is_local:
            raise ValueError(f"{self!r} is not local; it has no local path")
        return Path(self._path(key))

    def put_file(self, local: Path, key: str) -> tuple[str, int]:
        """Stream-copy `local` into the store as `key`; return its (sha256 hex, size in bytes).

        A file that already is `local_path(key)` is hashed and fsynced in place.
        """
        size = self._source_size(local, key)
        if self.is_local and local.resolve() == self.local_path(key).resolve():
            with self._failing("hashing", key):
                return _hash_and_fsync(local)
        with self._failing("writing", key, size), open(local, "rb") as source:
            return self._write(key, lambda out: _copy(source, out))

    def put_bytes(self, key: str, data: bytes) -> None:
        """Write `data` as `key`, replacing any old file in one step (never half-written)."""
        with self._failing("writing", key, len(data)):
            self._write(key, lambda out: out.write(data))

    def get_bytes(self, key: str) -> bytes:
        with self._failing("reading", key), self.filesystem.open_input_stream(self._path(key)) as f:
            data: bytes = f.read()
            return data

    def get_file(self, key: str, local: Path) -> None:
        """Download `key` to `local` (via a temporary name next to it)."""
        with self._failing("reading", key), self.filesystem.open_input_stream(self._path(key)) as f:
            try:
                _write_local(local, lambda out: _copy(f, out), fsync=False)
            except OSError as exc:
                if exc.errno is None:  # the store's stream, not the local disk
                    raise
                where = f"checkpoint.uri={_redacted(self.uri)}"
                raise CheckpointError(
                    f"{where}: cannot download {key} to {local}: {_detail(exc)}; "
                    f"make room there or choose another destination"
                ) from exc

    def sha256(self, key: str) -> str:
        with self._failing("reading", key), self.filesystem.open_input_stream(self._path(key)) as f:
            return _copy(f, None)[0]

    def exists(self, key: str) -> bool:
        """Whether `key` is a file or a directory (on S3: a prefix with objects under it)."""
        with self._failing("checking", key):
            info = self.filesystem.get_file_info(self._path(key))
        return bool(info.type != pafs.FileType.NotFound)

    def list_dirs(self, prefix: str = "") -> list[str]:
        """Names of the immediate child directories under `prefix` (S3: common prefixes)."""
        infos = self._list(prefix, recursive=False)
        return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)

    def list_files(self, prefix: str) -> list[StoredFile]:
        """Every file under `prefix`, recursively, keyed relative to the store root."""
        start = len(self._path(""))
        files = [
            StoredFile(info.path[start:].lstrip("/"), int(info.size))
            for info in self._list(prefix, recursive=True)
            if info.type == pafs.FileType.File
        ]
        return sorted(files, key=lambda f: f.key)

    def delete_dir(self, prefix: str) -> None:
        """Delete everything under `prefix`; a missing prefix is not an error."""
        if not prefix:
            raise ValueError("delete_dir needs a prefix; it never deletes the whole store")
        with self._failing("deleting", prefix), contextlib.suppress(FileNotFoundError):
            self.filesystem.delete_dir(self._path(prefix))

    def free_bytes(self) -> int | None:
        """Free space on a local store's disk; None for object stores."""
        if not self.is_local:
            return None
        with self._failing("checking free space", ""):
            return shutil.disk_usage(self.local_path()).free

    # -- helpers -------------------------------------------------------------------------

    def _path(self, key: str) -> str:
        _check_key(key)
        if not key:
            return self.root or "/"
        return f"{self.root}/{key}"

    def _list(self, prefix: str, recursive: bool) -> list[Any]:
        selector = pafs.FileSelector(self._path(prefix), recursive=recursive, allow_not_found=True)
        with self._failing("listing", prefix or "/"):
            infos: list[Any] = self.filesystem.get_file_info(selector)
        return infos

    def _source_size(self, local: Path, key: str) -> int:
        try:
            return local.stat().st_size
        except OSError as exc:
            raise CheckpointError(
                f"checkpoint.uri={_redacted(self.uri)}: cannot read {local} to store it as "
                f"{key}: {_detail(exc)}"
            ) from exc

    def _write(self, key: str, fill: Callable[[Any], _T]) -> _T:
        path = self._path(key)
        if self.is_local:
            return _write_local(Path(path), fill, fsync=True)
        out = self.filesystem.open_output_stream(path)
        try:
            with out:
                return fill(out)
        except BaseException:
            # Closing completed the upload of whatever was written: take it back.
            with contextlib.suppress(OSError, pa.ArrowException):
                self.filesystem.delete_file(path)
            raise

    def _space(self, needed_bytes: int | None) -> str:
        """'N bytes needed, M free' as far as both are known."""
        free: int | None = None
        with contextlib.suppress(OSError):
            free = self.free_bytes()
        parts = [f"{needed_bytes} bytes needed"] if needed_bytes is not None else []
        parts += [f"{free} free"] if free is not None else []
        return ", ".join(parts) or "size unknown"

    @contextmanager
    def _failing(self, action: str, key: str, needed_bytes: int | None = None) -> Iterator[None]:
        """Turn an OSError or Arrow error inside into a CheckpointError for the user."""
        try:
            yield
        except (OSError, pa.ArrowException) as exc:
            raise CheckpointError(self._explain(exc, action, key, needed_bytes)) from exc

    def _explain(self, exc: Exception, action: str, key: str, needed_bytes: int | None) -> str:
        where = f"checkpoint.uri={_redacted(self.uri)}"
        what = f"{action} {key}" if key else action
        code = getattr(exc, "errno", None)
        if code in (errno.ENOSPC, errno.EDQUOT):
            problem = "no space left on device" if code == errno.ENOSPC else "disk quota exceeded"
            return (
                f"{where}: {problem} {what}: {self._space(needed_bytes)}; "
                f"free space or point checkpoint.uri at a larger disk"
            )
        if code == errno.EFBIG:
            size = f" ({needed_bytes} bytes)" if needed_bytes is not None else ""
            return (
                f"{where}: file too large {what}{size}: over the process's file-size limit "
                f"(ulimit -f) or the filesystem's largest file; raise `ulimit -f` or point "
                f"checkpoint.uri at a filesystem without that limit"
            )
        if isinstance(exc, FileNotFoundError) and action == "reading":
            return (
                f"{where}: {key} does not exist; check that checkpoint.uri names the run's "
                f"checkpoint location and that this checkpoint was written completely"
            )
        if isinstance(exc, PermissionError) or code == errno.EROFS:
            return (
                f"{where}: {_detail(exc)} {what}; make the location writable by this user "
                f"or point checkpoint.uri elsewhere"
            )
        message = str(exc)
        if self.is_local:
            return f"{where}: {what} failed: {_detail(exc)}"
        if any(s in message for s in _S3_DENIED):
            return (
                f"{where}: access denied {what} ({_detail(exc)}); check the credentials in "
                f"{_S3_CREDENTIALS} and the endpoint: {_S3_ENDPOINT}"
            )
        if any(s in message for s in _S3_UNREACHABLE):
            return (
                f"{where}: cannot reach the storage endpoint {what} ({_detail(exc)}); "
                f"{_S3_ENDPOINT}; credentials come from {_S3_CREDENTIALS}"
            )
        if "NO_SUCH_BUCKET" in message:
            return (
                f"{where}: the bucket does not exist ({_detail(exc)}); create it or fix the "
                f"bucket name in checkpoint.uri"
            )
        return f"{where}: {what} failed: {_detail(exc)}"


def _filesystem_from_uri(uri: str) -> tuple[pafs.FileSystem, str]:
    shown = _redacted(uri)
    try:
        filesystem, root = pafs.FileSystem.from_uri(uri)
    except pa.ArrowInvalid as exc:
        if "Unrecognized filesystem type" in str(exc):
            message = f"checkpoint.uri={shown!r} is not a supported storage URI; {_USE}"
            raise CheckpointError(message) from None
        s3_query = f"; {_S3_QUERY}" if uri.startswith("s3") else ""
        message = f"checkpoint.uri={shown!r} is not a valid storage URI ({exc}); {_USE}{s3_query}"
        raise CheckpointError(message) from exc
    except (OSError, pa.ArrowException) as exc:
        raise CheckpointError(
            f"checkpoint.uri={shown}: cannot open ({_detail(exc)}); {_S3_ENDPOINT}; "
            f"credentials come from {_S3_CREDENTIALS}"
        ) from exc
    if not root.strip("/"):
        raise CheckpointError(f"checkpoint.uri={shown!r} names no bucket or path; {_USE}")
    return filesystem, root


def _write_local(path: Path, fill: Callable[[Any], _T], fsync: bool) -> _T:
    """Write `path` through a temporary name in its directory, renamed over it when complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:12]}")
    try:
        with open(temp, "xb") as out:
            result = fill(out)
            out.flush()
            if fsync:
                os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    if fsync:
        _fsync_dir(path.parent)
    return result


def _copy(source: Any, out: Any | None) -> tuple[str, int]:
    """Copy `source` to `out` (None: just read) in chunks; return (sha256 hex, bytes)."""
    digest = hashlib.sha256()
    size = 0
    while chunk := source.read(CHUNK_BYTES):
        digest.update(chunk)
        size += len(chunk)
        if out is not None:
            out.write(chunk)
    return digest.hexdigest(), size


def _hash_and_fsync(path: Path) -> tuple[str, int]:
    with open(path, "rb") as f:
        result = _copy(f, None)
        os.fsync(f.fileno())
    return result


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_key(key: str) -> None:
    parts = key.split("/")
    if key and (key.startswith("/") or "\\" in key or any(p in ("", ".", "..") for p in parts)):
        raise ValueError(f"store key {key!r} must be a relative '/'-separated path")


def _redacted(uri: str) -> str:
    """`uri` without credentials written into it (s3://KEY:SECRET@bucket/…)."""
    netloc = urlsplit(uri).netloc
    if "@" not in netloc:
        return uri
    return uri.replace(netloc, "***@" + netloc.rsplit("@", 1)[1], 1)


def _detail(exc: BaseException) -> str:
    """The useful part of an OS or Arrow error message."""
    if isinstance(exc, OSError) and exc.errno is not None and exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:]
    message = str(exc)
    if "AWS Error" in message:
        message = "AWS Error" + message.split("AWS Error", 1)[1]
    return re.sub(r"\s*\(Request ID: [^)]*\)", "", message).strip()
