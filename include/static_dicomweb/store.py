"""Where a site's objects live: a small protocol and the local-folder store.

The local store maps each key ``K`` to two files under the root ``R``:
``R/K.body`` (the object's bytes exactly as S3 would hold them, gzip included)
and ``R/K.head.json`` (its headers).  Keys never contain ``.body`` (UIDs are
digits and dots, the other segments are letters), so ``studies/S/series/SE``
(a file) and ``studies/S/series/SE/...`` (a folder) live side by side.
``serve`` maps request paths back by the same rule.  Writes are atomic
(temporary file, then rename); the headers land before the body, so a body
that exists is complete.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .errors import KeyNotFoundError, StoreError
from .keys import ObjectSpec

BODY = ".body"
HEAD = ".head.json"


@dataclass(frozen=True)
class Slice:
    """Bytes of an object already in the store: ``body[start:len(body) - trim_end]``."""

    key: str
    start: int = 0
    trim_end: int = 0


Piece = bytes | Slice | Path
"""One piece of a body: bytes, a slice of a stored object, or a whole local file."""


class Store(Protocol):
    """What the converter, the validator and ``serve`` need of a site's storage."""

    url: str

    def put(self, spec: ObjectSpec, pieces: Sequence[Piece]) -> None:
        """Write an object (atomically) from pieces, with ``spec``'s headers."""

    def put_if_absent(self, spec: ObjectSpec, data: bytes) -> bytes | None:
        """Write ``data`` unless the key exists; return the existing body if it does."""

    def get(self, key: str) -> bytes:
        """The stored bytes of ``key`` (still gzip-compressed where stored so)."""

    def headers(self, key: str) -> dict[str, str] | None:
        """The headers of ``key``, or None when there is no such object."""

    def children(self, prefix: str) -> list[str]:
        """Names directly under ``prefix`` (a key prefix ending in ``/``), sorted."""

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

    def __reduce__(self) -> tuple[type[LocalStore], tuple[str]]:
        return (LocalStore, (str(self.root),))

    def path(self, key: str) -> Path:
        """The body file of ``key``; refuses keys that would leave the root."""
        if not key or key.startswith("/") or "\\" in key or any(
                part in ("", ".", "..") for part in key.split("/")):
            raise StoreError(f"key {key!r} is not a clean relative path")
        return self.root / (key + BODY)

    def _head_path(self, key: str) -> Path:
        return self.root / (key + HEAD)

    def _tmp_name(self, target: Path) -> Path:
        return target.with_name(f".{target.name}.{os.getpid()}.{next(self._tmp)}.tmp")

    def _mkdir(self, folder: Path) -> None:
        if folder not in self._made:
            folder.mkdir(parents=True, exist_ok=True)
            self._made.add(folder)

    def _write(self, target: Path, pieces: Sequence[Piece]) -> Path:
        self._mkdir(target.parent)
        tmp = self._tmp_name(target)
        with open(tmp, "wb", buffering=0) as out:
            for piece in pieces:
                if isinstance(piece, bytes):
                    out.write(piece)
                elif isinstance(piece, Slice):
                    self._copy_slice(out, piece)
                else:
                    with open(piece, "rb") as src:
                        _copy_range(src.fileno(), out, 0, os.fstat(src.fileno()).st_size)
        return tmp

    def _copy_slice(self, out: object, piece: Slice) -> None:
        path = self.path(piece.key)
        try:
            with open(path, "rb") as src:
                size = os.fstat(src.fileno()).st_size
                _copy_range(src.fileno(), out, piece.start, size - piece.trim_end - piece.start)
        except FileNotFoundError as exc:
            raise KeyNotFoundError(f"{piece.key}: not in {self.url}") from exc

    def _write_head(self, spec: ObjectSpec) -> None:
        head = self._head_path(spec.key)
        self._mkdir(head.parent)
        tmp = self._tmp_name(head)
        tmp.write_bytes(json.dumps(spec.headers(), sort_keys=True).encode())
        os.replace(tmp, head)

    def put(self, spec: ObjectSpec, pieces: Sequence[Piece]) -> None:
        """Write ``spec.key`` from ``pieces``; the headers first, then the body by rename."""
        target = self.path(spec.key)
        self._write_head(spec)
        os.replace(self._write(target, pieces), target)

    def put_if_absent(self, spec: ObjectSpec, data: bytes) -> bytes | None:
        """Create ``spec.key`` only if it does not exist (``link`` is atomic)."""
        target = self.path(spec.key)
        self._write_head(spec)
        tmp = self._write(target, [data])
        try:
            os.link(tmp, target)
        except FileExistsError:
            return target.read_bytes()
        finally:
            tmp.unlink()
        return None

    def get(self, key: str) -> bytes:
        """The stored body of ``key``."""
        try:
            return self.path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise KeyNotFoundError(f"{key}: not in {self.url}") from exc

    def headers(self, key: str) -> dict[str, str] | None:
        """The headers of ``key`` or None when its body does not exist."""
        if not self.path(key).is_file():
            return None
        try:
            return dict(json.loads(self._head_path(key).read_bytes()))
        except FileNotFoundError:
            return None

    def children(self, prefix: str) -> list[str]:
        """Immediate children of a key prefix: object names and folder names."""
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

    def keys(self, prefix: str = "") -> Iterator[str]:
        """Every key under ``prefix`` (walks the folder)."""
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


def _copy_range(src_fd: int, out: object, offset: int, count: int) -> None:
    """Copy ``count`` bytes from ``src_fd`` at ``offset`` into the open file ``out``."""
    flush = getattr(out, "flush")
    flush()
    dst_fd = getattr(out, "fileno")()
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
        For an ``s3://`` destination until the S3 store lands (pipeline issue).
    """
    if dest.startswith("s3://"):
        raise StoreError(f"{dest}: S3 sites are not available in this version; "
                         "convert to a folder and sync it (docs/deploy-s3.md)")
    return LocalStore(dest)
