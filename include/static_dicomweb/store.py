"""Where a site's objects live: a small protocol and the local-folder store.

The local store maps each key ``K`` to the file ``R/K.body`` under the root
``R``: the object's bytes exactly as S3 would hold them, gzip included.  Its
headers (Content-Type, Content-Encoding, Cache-Control and ``x-amz-meta-*``
user metadata) are kept beside the bytes, in the file's extended attribute
``user.static_dicomweb.headers`` (JSON), or, on a file system without user
extended attributes, in the sidecar file ``R/K.head.json``.  Keys never
contain ``.body`` (UIDs are digits and dots, the other segments are letters),
so ``studies/S/series/SE`` (a file) and ``studies/S/series/SE/...`` (a
folder) live side by side.  ``serve`` maps request paths back by the same
rule.  Writes are atomic: a temporary file gets the bytes and the headers,
then is renamed into place, so a body that exists is complete.

Copy a local site with ``cp -a`` or ``rsync -aX`` (which keep extended
attributes); ``aws s3 sync`` does not carry them: use ``static-dicomweb``'s
own upload (pipeline issue) for S3.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .errors import KeyNotFoundError, StoreError
from .keys import ObjectSpec

log = logging.getLogger(__name__)

BODY = ".body"
HEAD = ".head.json"
XATTR = "user.static_dicomweb.headers"


@dataclass(frozen=True)
class Slice:
    """Bytes of an object already in the store: ``body[start:len(body) - trim_end]``."""

    key: str
    start: int = 0
    trim_end: int = 0


Piece = bytes | memoryview | Slice | Path
"""One piece of a body: bytes, a slice of a stored object, or a whole local file."""


class Store(Protocol):
    """What the converter, the validator and ``serve`` need of a site's storage."""

    url: str

    def put(self, spec: ObjectSpec, pieces: Sequence[Piece],
            meta: dict[str, str] | None = None) -> None:
        """Write an object (atomically) from pieces, with ``spec``'s headers and user metadata."""

    def get(self, key: str) -> bytes:
        """The stored bytes of ``key`` (still gzip-compressed where stored so)."""

    def headers(self, key: str) -> dict[str, str] | None:
        """The headers of ``key``, or None when there is no such object."""

    def children(self, prefix: str) -> list[str]:
        """Names directly under ``prefix`` (a key prefix ending in ``/``), sorted."""

    def delete(self, key: str) -> None:
        """Remove ``key`` (no error when it does not exist)."""

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """Exclusive access for index aggregation across processes."""


class LocalStore:
    """A site in a local folder.

    Parameters
    ----------
    root
        The site root R.  Created on first write, never written outside.

    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self.url = str(self.root)
        self._made: set[Path] = set()
        self._tmp = itertools.count()
        self._xattr = True

    def __reduce__(self) -> tuple[type[LocalStore], tuple[str]]:
        return (LocalStore, (str(self.root),))

    def path(self, key: str) -> Path:
        """The body file of ``key``; refuses keys that would leave the root."""
        _check_key(key)
        return self.root / (key + BODY)

    def _head_path(self, key: str) -> Path:
        return self.root / (key + HEAD)

    def _tmp_name(self, target: Path) -> Path:
        return target.with_name(f".{target.name}.{os.getpid()}.{next(self._tmp)}.tmp")

    def _mkdir(self, folder: Path) -> None:
        """Create ``folder`` and its parents, one ``mkdir`` each, remembering what exists."""
        if folder in self._made:
            return
        if folder == self.root:
            folder.mkdir(parents=True, exist_ok=True)
        else:
            if folder.parent not in self._made:
                self._mkdir(folder.parent)
            with contextlib.suppress(FileExistsError):
                os.mkdir(folder)
        self._made.add(folder)

    def _write(self, target: Path, pieces: Sequence[Piece], headers: bytes) -> Path:
        self._mkdir(target.parent)
        tmp = self._tmp_name(target)
        with open(tmp, "wb", buffering=0) as out:
            for piece in pieces:
                if isinstance(piece, (bytes, memoryview)):
                    _write_all(out.fileno(), piece)
                elif isinstance(piece, Slice):
                    self._copy_slice(out.fileno(), piece)
                else:
                    with open(piece, "rb") as src:
                        _copy_range(src.fileno(), out.fileno(), 0, os.fstat(src.fileno()).st_size)
            if self._xattr:
                try:
                    os.setxattr(out.fileno(), XATTR, headers)
                except OSError as exc:
                    if exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
                        raise
                    log.info("%s: no user extended attributes; headers go to .head.json files",
                             self.root)
                    self._xattr = False
            if not self._xattr:
                head = target.with_name(target.name[: -len(BODY)] + HEAD)
                head_tmp = self._tmp_name(head)
                head_tmp.write_bytes(headers)
                os.replace(head_tmp, head)
        return tmp

    def _copy_slice(self, out_fd: int, piece: Slice) -> None:
        path = self.path(piece.key)
        try:
            with open(path, "rb") as src:
                size = os.fstat(src.fileno()).st_size
                _copy_range(src.fileno(), out_fd, piece.start, size - piece.trim_end - piece.start)
        except FileNotFoundError as exc:
            raise KeyNotFoundError(f"{piece.key}: not in {self.url}") from exc

    def put(self, spec: ObjectSpec, pieces: Sequence[Piece],
            meta: dict[str, str] | None = None) -> None:
        """Write ``spec.key`` from ``pieces``: bytes and headers to a temporary file, then rename."""
        target = self.path(spec.key)
        headers = spec.headers()
        for name, value in (meta or {}).items():
            headers[f"x-amz-meta-{name}"] = value
        encoded = json.dumps(headers, sort_keys=True).encode()
        os.replace(self._write(target, pieces, encoded), target)

    def get(self, key: str) -> bytes:
        """The stored body of ``key``."""
        try:
            return self.path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise KeyNotFoundError(f"{key}: not in {self.url}") from exc

    def headers(self, key: str) -> dict[str, str] | None:
        """The headers of ``key`` or None when its body does not exist."""
        path = self.path(key)
        try:
            return dict(json.loads(os.getxattr(path, XATTR)))
        except FileNotFoundError:
            return None
        except OSError:
            pass
        try:
            return dict(json.loads(self._head_path(key).read_bytes()))
        except FileNotFoundError:
            return None

    def children(self, prefix: str) -> list[str]:
        """Immediate children of a key prefix: object names and folder names."""
        _check_key(prefix, prefix=True)
        folder = self.root / prefix.rstrip("/") if prefix else self.root
        try:
            names = os.listdir(folder)
        except (FileNotFoundError, NotADirectoryError):
            return []
        out = set()
        for name in names:
            if name.startswith("."):
                continue
            if name.endswith(BODY):
                out.add(name[: -len(BODY)])
            elif not name.endswith(HEAD):
                out.add(name)
        return sorted(out)

    def delete(self, key: str) -> None:
        """Remove the object and its sidecar, if any."""
        for path in (self.path(key), self._head_path(key)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def walk(self, prefix: str = "") -> Iterator[str]:
        """Every key under ``prefix`` (walks the folder)."""
        _check_key(prefix, prefix=True)
        base = self.root / prefix if prefix else self.root
        for folder, dirs, files in os.walk(base):
            dirs.sort()
            for name in sorted(files):
                if name.endswith(BODY) and not name.startswith("."):
                    full = Path(folder, name[: -len(BODY)])
                    yield full.relative_to(self.root).as_posix()

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """An exclusive ``flock`` on ``R/_site/.lock``."""
        path = self.root / "_site" / ".lock"
        self._mkdir(path.parent)
        with open(path, "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _check_key(key: str, *, prefix: bool = False) -> None:
    """Refuse keys (and key prefixes) that are not clean relative paths under the root."""
    parts = key.rstrip("/").split("/") if prefix else key.split("/")
    if (not key and not prefix) or key.startswith("/") or "\\" in key or "\x00" in key or any(
            part in ("", ".", "..") for part in parts if key):
        raise StoreError(f"key {key!r} is not a clean relative path")


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _copy_range(src_fd: int, dst_fd: int, offset: int, count: int) -> None:
    """Copy ``count`` bytes from ``src_fd`` at ``offset`` to ``dst_fd`` in the kernel."""
    while count > 0:
        sent = os.sendfile(dst_fd, src_fd, offset, count)
        if sent == 0:
            raise StoreError(f"short read copying from fd {src_fd}")
        offset += sent
        count -= sent


def open_store(dest: str, *, endpoint_url: str | None = None) -> Store:
    """The store for a destination: a folder, or ``s3://bucket/prefix``.

    Raises
    ------
    StoreError
        For an ``s3://`` URL without a bucket.

    """
    if dest.startswith("s3://"):
        from .s3store import S3Store

        return S3Store(dest, endpoint_url=endpoint_url)
    return LocalStore(dest)
