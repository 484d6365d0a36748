"""Where a site's objects live: a small protocol and the local-folder store.

The local store keeps each key ``K`` in one file under the root ``R`` that
holds the object's bytes exactly as S3 would, gzip included; the file's name
ends in ``.body``.  Under mapping 2 (every folder this version creates), the
first five segments of a key at most are folders and the remaining segments
are the file name, joined by ``+``: ``studies/S/series/SE/instances/I`` is
``R/studies/S/series/SE/instances/I.body`` and its frame ``.../I/frames/1``
is ``R/studies/S/series/SE/instances/I+frames+1.body``, in the same folder,
so writing an instance creates no folder.  Mapping 1 (folders written before
mapping 2 existed) made every segment but the last a folder; such a folder
keeps it, for reading and writing.  The hidden file ``R/.static-dicomweb-store``
names the mapping (absent: mapping 1 when ``R`` holds ``studies`` or
``_site``; otherwise a new site, mapping 2, and the file is written with the
first object).

The headers (Content-Type, Content-Encoding, Cache-Control and ``x-amz-meta-*``
user metadata) are kept beside the bytes, in the file's extended attribute
``user.static_dicomweb.headers`` (JSON), or, on a file system without user
extended attributes, in the sidecar file whose name ends in ``.head.json``
instead of ``.body``.  Keys never contain ``.body`` or ``+`` (UIDs are digits
and dots, the other segments are letters), so ``studies/S/series/SE`` (a
file) and ``studies/S/series/SE/...`` (a folder) live side by side and every
file names one key.  ``serve`` maps request paths back by the same rule.
Writes are atomic for readers: a new object's file is created in place and
gets its headers attribute last, and a body without it is read as absent (a
write in progress, or one interrupted, which the next write of the key
replaces); an object that exists is replaced by a temporary file, bytes and
headers, renamed over it.  Renaming every new file too took twice the kernel
time a file creation takes, and a full build creates hundreds of thousands.

Copy a local site with ``cp -a`` or ``rsync -aX`` (which keep extended
attributes and the hidden mapping file); ``aws s3 sync`` does not carry them:
use ``static-dicomweb``'s own upload (pipeline issue) for S3.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import json
import logging
import os
import re
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
#: The hidden file at the root of a local site that names its key-to-file mapping.
MAPPING_FILE = ".static-dicomweb-store"
#: The mapping new folders get: at most this many key segments are folders ...
FOLDERS = 5
#: ... and the segments after them are joined into the file name with this.
JOIN = "+"
#: ``json.dumps(headers, sort_keys=True)``, with the encoder built once.
_HEADERS_JSON = json.JSONEncoder(sort_keys=True)
#: Top-level names a site of mapping 1 always holds (an object under ``studies/`` or ``_site/``).
_SITE_NAMES = ("studies", "_site")


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
        self._made: set[str] = set()
        self._tmp = itertools.count()
        self._xattr = True
        #: 1 or 2 once known; 0 while R holds no site yet (mapping 2, the file not yet written)
        self._mapping: int | None = None

    def __reduce__(self) -> tuple[type[LocalStore], tuple[str]]:
        return (LocalStore, (str(self.root),))

    # -- the key-to-file mapping ---------------------------------------------

    @property
    def mapping(self) -> int:
        """The key-to-file mapping of this folder: 2, or 1 for a folder written before it."""
        return self._known_mapping() or 2

    def _known_mapping(self) -> int:
        if not self._mapping:  # unknown, or no site yet (a writer may have made one since)
            self._mapping = self._read_mapping()
        return self._mapping

    def _read_mapping(self) -> int:
        record = self._mapping_record()
        if record is None:
            if not any(os.path.lexists(f"{self.url}/{name}") for name in _SITE_NAMES):
                return 0
            # a writer of a new site records its mapping before its first object: look again
            record = self._mapping_record()
        return 1 if record is None else record

    def _mapping_record(self) -> int | None:
        try:
            with open(f"{self.url}/{MAPPING_FILE}", "rb") as fh:
                text = fh.read()
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            mapping = int(json.loads(text)["mapping"])
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"{self.url}/{MAPPING_FILE}: not a mapping record: {text[:80]!r}") from exc
        if mapping not in (1, 2):
            raise StoreError(f"{self.url}: key-to-file mapping {mapping} is not known to this "
                             "version of static-dicomweb (it knows 1 and 2)")
        return mapping

    def _writable_mapping(self) -> int:
        """The mapping for a write; a new site gets mapping 2 and its record first."""
        mapping = self._known_mapping()
        if mapping == 0:
            self._mkdir(self.url)
            record = f"{self.url}/{MAPPING_FILE}"
            tmp = self._tmp_name(record)
            with open(tmp, "wb") as fh:
                fh.write(json.dumps({"mapping": 2}).encode() + b"\n")
            os.replace(tmp, record)
            mapping = self._mapping = 2
        return mapping

    def _file(self, key: str, suffix: str, mapping: int) -> str:
        """The file of ``key`` (``suffix``: body or sidecar) under ``mapping``."""
        _check_key(key)
        return self._mapped(key, suffix, mapping)

    def _mapped(self, key: str, suffix: str, mapping: int) -> str:
        if mapping != 1 and key.count("/") > FOLDERS:
            parts = key.split("/")
            key = "/".join(parts[:FOLDERS]) + "/" + JOIN.join(parts[FOLDERS:])
        return f"{self.url}/{key}{suffix}"

    def path(self, key: str) -> Path:
        """The body file of ``key``; refuses keys that would leave the root."""
        return Path(self._file(key, BODY, self.mapping))

    def _tmp_name(self, target: str) -> str:
        folder, _, name = target.rpartition("/")
        return f"{folder}/.{name}.{os.getpid()}.{next(self._tmp)}.tmp"

    def _mkdir(self, folder: str) -> None:
        """Create ``folder`` and its parents, one ``mkdir`` each, remembering what exists."""
        if folder in self._made:
            return
        if folder == self.url:
            Path(folder).mkdir(parents=True, exist_ok=True)
        else:
            parent = folder.rpartition("/")[0]
            if parent not in self._made:
                self._mkdir(parent)
            with contextlib.suppress(FileExistsError):
                os.mkdir(folder)
        self._made.add(folder)

    # -- writing -------------------------------------------------------------

    def _fill(self, fd: int, pieces: Sequence[Piece]) -> None:
        """Write ``pieces`` to the open file ``fd``."""
        buffers: list[bytes | memoryview] = []
        for piece in pieces:
            if isinstance(piece, (bytes, memoryview)):
                if piece:
                    buffers.append(piece)
                continue
            _write_all(fd, buffers)
            buffers = []
            if isinstance(piece, Slice):
                self._copy_slice(fd, piece)
            else:
                with open(piece, "rb") as src:
                    _copy_range(src.fileno(), fd, 0, os.fstat(src.fileno()).st_size)
        _write_all(fd, buffers)

    def _set_headers(self, fd: int, headers: bytes) -> bool:
        """Give the open file its headers attribute; False on a file system without them."""
        if self._xattr:
            try:
                os.setxattr(fd, XATTR, headers)
                return True
            except OSError as exc:
                if exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
                    raise
                log.info("%s: no user extended attributes; headers go to .head.json files",
                         self.root)
                self._xattr = False
        return False

    def _create(self, target: str, pieces: Sequence[Piece], headers: bytes) -> bool:
        """Write a new object in place: the headers attribute, set last, marks it complete.

        False when ``target`` exists (a replacement goes through a temporary
        file and a rename) or the file system keeps no extended attributes.
        """
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except FileExistsError:
            return False
        done = False
        try:
            self._fill(fd, pieces)
            done = self._set_headers(fd, headers)
        finally:
            if not done:  # remove what this call created, not a file renamed over it since
                with contextlib.suppress(OSError):
                    if Path(target).stat().st_ino == os.fstat(fd).st_ino:
                        Path(target).unlink()
            os.close(fd)
        return done

    def _write(self, target: str, pieces: Sequence[Piece], headers: bytes) -> str:
        """A complete temporary file beside ``target`` (headers included), to rename over it."""
        tmp = self._tmp_name(target)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        try:
            self._fill(fd, pieces)
            self._set_headers(fd, headers)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                Path(tmp).unlink()
            raise
        os.close(fd)
        if not self._xattr:
            head = target[: -len(BODY)] + HEAD
            head_tmp = self._tmp_name(head)
            with open(head_tmp, "wb") as fh:
                fh.write(headers)
            os.replace(head_tmp, head)
        return tmp

    def _copy_slice(self, out_fd: int, piece: Slice) -> None:
        src = self._open(piece.key)
        try:
            size = os.fstat(src).st_size
            _copy_range(src, out_fd, piece.start, size - piece.trim_end - piece.start)
        finally:
            os.close(src)

    def put(self, spec: ObjectSpec, pieces: Sequence[Piece],
            meta: dict[str, str] | None = None) -> None:
        """Write ``spec.key`` from ``pieces`` with its headers, atomically for readers.

        A new object is created in place and its headers attribute is set
        last: readers take a body without it for absent (an interrupted write
        leaves such a body; the next write of the key replaces it).  An
        existing object, or any object on a file system without extended
        attributes, is written to a temporary file renamed over it.
        """
        _check_key(spec.key)  # before anything is written, the mapping record included
        target = self._mapped(spec.key, BODY, self._writable_mapping())
        headers = spec.headers()
        for name, value in (meta or {}).items():
            headers[f"x-amz-meta-{name}"] = value
        encoded = _HEADERS_JSON.encode(headers).encode()
        self._mkdir(target.rpartition("/")[0])
        if self._xattr and self._create(target, pieces, encoded):
            return
        os.replace(self._write(target, pieces, encoded), target)

    # -- reading -------------------------------------------------------------

    def _open(self, key: str) -> int:
        """An open descriptor of ``key``'s complete body."""
        mapping = self.mapping
        try:
            fd = os.open(self._file(key, BODY, mapping), os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise KeyNotFoundError(f"{key}: not in {self.url}") from exc
        if not _complete(fd, self._file(key, HEAD, mapping)):
            os.close(fd)
            raise KeyNotFoundError(f"{key}: not in {self.url} (being written)")
        return fd

    def get(self, key: str) -> bytes:
        """The stored body of ``key``."""
        fd = self._open(key)
        with open(fd, "rb") as fh:
            return fh.read()

    def headers(self, key: str) -> dict[str, str] | None:
        """The headers of ``key`` or None when its body does not exist."""
        mapping = self.mapping
        path = self._file(key, BODY, mapping)
        try:
            return dict(json.loads(os.getxattr(path, XATTR)))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError:
            pass
        try:
            with open(self._file(key, HEAD, mapping), "rb") as fh:
                return dict(json.loads(fh.read()))
        except (FileNotFoundError, NotADirectoryError):
            return None

    def children(self, prefix: str) -> list[str]:
        """Immediate children of a key prefix: object names and folder names."""
        parts = _prefix_parts(prefix)
        lead = ""
        if self.mapping != 1 and len(parts) > FOLDERS:  # names in the folder of the first five
            lead = JOIN.join(parts[FOLDERS:]) + JOIN
            parts = parts[:FOLDERS]
        try:
            names = os.listdir("/".join([self.url, *parts]))
        except (FileNotFoundError, NotADirectoryError):
            return []
        out = set()
        for name in names:
            if name.startswith("."):
                continue
            if name.endswith(BODY):
                stem = name[: -len(BODY)]
            elif name.endswith(HEAD) or lead:  # a sidecar, or a folder where only files are
                continue
            else:
                out.add(name)
                continue
            if stem.startswith(lead):
                child = stem[len(lead):].split(JOIN, 1)[0]
                if child:
                    out.add(child)
        return sorted(out)

    def delete(self, key: str) -> None:
        """Remove the object and its sidecar, if any."""
        mapping = self.mapping
        for suffix in (BODY, HEAD):
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                Path(self._file(key, suffix, mapping)).unlink()

    def walk(self, prefix: str = "") -> Iterator[str]:
        """Every key under ``prefix`` (walks the folder; bodies still being written are not keys)."""
        parts = _prefix_parts(prefix)
        under = "/".join(parts) + "/" if parts else ""
        if self.mapping != 1:
            parts = parts[:FOLDERS]
        base = "/".join([self.url, *parts])
        for folder, dirs, files in os.walk(base):
            dirs.sort()
            rel = os.path.relpath(folder, self.url).replace(os.sep, "/")
            lead = "" if rel == "." else rel + "/"
            for name in sorted(files):
                if name.endswith(BODY) and not name.startswith("."):
                    stem = name[: -len(BODY)]
                    key = lead + stem.replace(JOIN, "/")
                    if key.startswith(under) and _complete(f"{folder}/{name}", f"{folder}/{stem}{HEAD}"):
                        yield key

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """An exclusive ``flock`` on ``R/_site/.lock``."""
        self._writable_mapping()
        folder = f"{self.url}/_site"
        self._mkdir(folder)
        with open(f"{folder}/.lock", "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


#: Keys that pass :func:`_check_key` at a glance: segments of letters, digits, ``_``, ``-`` and
#: dots, none starting with a dot.
_CLEAN_KEY = re.compile(r"[0-9A-Za-z_-][0-9A-Za-z_.-]*(?:/[0-9A-Za-z_-][0-9A-Za-z_.-]*)*")


def _check_key(key: str, *, prefix: bool = False) -> None:
    """Refuse keys (and key prefixes) that are not clean relative paths under the root."""
    if not prefix and _CLEAN_KEY.fullmatch(key):
        return
    parts = key.rstrip("/").split("/") if prefix else key.split("/")
    if (not key and not prefix) or key.startswith("/") or "\\" in key or "\x00" in key or any(
            part in ("", ".", "..") for part in parts if key):
        raise StoreError(f"key {key!r} is not a clean relative path")
    if JOIN in key:
        raise StoreError(f"key {key!r} holds {JOIN!r}, which no key of a site holds")


def _prefix_parts(prefix: str) -> list[str]:
    """The segments of a clean key prefix (``""``: none)."""
    _check_key(prefix, prefix=True)
    stripped = prefix.rstrip("/")
    return stripped.split("/") if stripped else []


def _complete(body: int | str, sidecar: str) -> bool:
    """Whether a body file (open descriptor or path) is a whole object, not a write in progress.

    It is when it has its headers attribute, or its headers are in a sidecar
    (a site written or copied where there are no extended attributes), or
    the file system keeps no attributes (such writes are renamed into place).
    """
    try:
        os.getxattr(body, XATTR)
    except OSError as exc:
        if exc.errno == errno.ENODATA:
            return Path(sidecar).exists()
        return exc.errno != errno.ENOENT
    return True


def _write_all(fd: int, buffers: Sequence[bytes | memoryview]) -> None:
    """Write ``buffers`` in order, with as few system calls as the kernel allows."""
    pending = list(buffers)
    while pending:
        written = os.writev(fd, pending[:1024]) if len(pending) > 1 else os.write(fd, pending[0])
        while pending and written >= len(pending[0]):
            written -= len(pending[0])
            pending.pop(0)
        if pending and written:
            pending[0] = memoryview(pending[0])[written:]


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
