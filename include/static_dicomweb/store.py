"""Where a site's objects live: a small protocol and the local-folder store.

A site folder is portable: it is nothing but files with the objects' bytes,
so ``cp -r``, ``tar``, ``zip``, ``rsync`` and file systems without extended
attributes keep it whole.  The local store keeps each key ``K`` in one file
under the root ``R`` holding the object's bytes exactly as S3 holds them,
gzip included, named ``K`` with ``.body`` appended.  At most the first five
segments of a key are folders; further segments are joined to the sixth
with ``+``: ``studies/S/series/SE/instances/I`` is
``R/studies/S/series/SE/instances/I.body`` and its frame ``.../I/frames/1``
is ``R/studies/S/series/SE/instances/I+frames+1.body``, in the same folder,
so writing an instance creates no folder.  Keys never contain ``.body`` or
``+`` (UIDs are digits and dots, the other segments are letters), so
``studies/S/series/SE`` (a file) and ``studies/S/series/SE/...`` (a folder)
live side by side and every file names one key.

The headers follow from the key and the body's first bytes
(:func:`static_dicomweb.keys.headers_for`): nothing is kept beside the bytes
but an object's user metadata (``x-amz-meta-*``), where it has any, in the
JSON file whose name ends in ``.meta`` instead of ``.body``.  Every file is
written whole before it gets its name (an unnamed file linked into place, or
a hidden temporary file renamed over the target; the ``.meta`` file first),
so a ``.body`` file that exists is a whole object.  The hidden file
``R/.static-dicomweb-store`` records the layout (``{"mapping": 3}``).
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
from pathlib import Path
from typing import Any

from . import keys
from .errors import KeyNotFoundError, ObjectExistsError, StoreError
from .keys import ObjectSpec

# the protocol and the pieces, re-exported so that importers may name them from here
from .store_protocol import META_PREFIX as META_PREFIX
from .store_protocol import Piece as Piece
from .store_protocol import Slice as Slice
from .store_protocol import Store as Store

log = logging.getLogger(__name__)

BODY = ".body"
META = ".meta"
#: Unnamed files (Linux): 0 where the platform has none.
_O_TMPFILE = getattr(os, "O_TMPFILE", 0)
#: Any open folder: naming one makes ``os.link`` call ``linkat`` with ``AT_SYMLINK_FOLLOW``, which
#: links an unnamed file through its ``/proc/self/fd`` entry (the folder itself is not used: that
#: path is absolute).
_ANY_FOLDER: int | None = None
#: The hidden file at the root of a local site that names its key-to-file mapping.
MAPPING_FILE = ".static-dicomweb-store"
#: The mapping this version writes (2 differed only in keeping headers in extended attributes).
MAPPING = 3
#: At most this many key segments are folders ...
FOLDERS = 5
#: ... and the segments after them are joined into the file name with this.
JOIN = "+"


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
        self._recorded = False
        #: whether this folder's file system makes unnamed files (None: not tried yet)
        self._unnamed_files: bool | None = None if _O_TMPFILE else False

    def __reduce__(self) -> tuple[type[LocalStore], tuple[str]]:
        return (LocalStore, (str(self.root),))

    def exists(self) -> bool:
        """Whether the site folder exists."""
        return self.root.is_dir()

    # -- the key-to-file mapping ---------------------------------------------

    def check_mapping(self) -> None:
        """Refuse a folder whose record names a layout this version does not know."""
        try:
            with open(f"{self.url}/{MAPPING_FILE}", "rb") as fh:
                text = fh.read()
        except (FileNotFoundError, NotADirectoryError):
            return
        try:
            mapping = int(json.loads(text)["mapping"])
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"{self.url}/{MAPPING_FILE}: not a mapping record: {text[:80]!r}") from exc
        if mapping not in (2, MAPPING):
            raise StoreError(f"{self.url}: key-to-file mapping {mapping} is not known to this "
                             f"version of static-dicomweb (it reads 2 and {MAPPING})")

    def _record_mapping(self) -> None:
        """Write the mapping record with the first object of a new site."""
        if self._recorded:
            return
        record = f"{self.url}/{MAPPING_FILE}"
        if not Path(record).exists():
            self._mkdir(self.url)
            tmp = self._tmp_name(record)
            with open(tmp, "wb") as fh:
                fh.write(json.dumps({"mapping": MAPPING}).encode() + b"\n")
            os.replace(tmp, record)
        self._recorded = True

    def _file(self, key: str, suffix: str = BODY) -> str:
        """The file of ``key`` (its body, or with ``suffix`` its user metadata)."""
        _check_key(key)
        if key.count("/") > FOLDERS:
            parts = key.split("/")
            key = "/".join(parts[:FOLDERS]) + "/" + JOIN.join(parts[FOLDERS:])
        return f"{self.url}/{key}{suffix}"

    def path(self, key: str) -> Path:
        """The body file of ``key``; refuses keys that would leave the root."""
        return Path(self._file(key))

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

    def _place(self, target: str, pieces: Sequence[Piece], *, if_absent: bool = False) -> None:
        """Write ``target`` from ``pieces`` whole: a reader finds the old file or the new one.

        The bytes go into an unnamed file in the target's folder (``O_TMPFILE``)
        that is then linked into place: one directory entry is made, and a
        crash leaves nothing behind.  A target that exists already is replaced
        through a hidden name renamed over it (or, with ``if_absent``, kept:
        :class:`FileExistsError`).  Where the file system has no unnamed files,
        a hidden temporary file is written and renamed (or linked) instead.
        """
        fd = self._unnamed(target.rpartition("/")[0])
        if fd is None:
            self._place_named(target, pieces, if_absent=if_absent)
            return
        try:
            self._fill(fd, pieces)
            try:
                _link_open_file(fd, target)
                return
            except FileExistsError:
                if if_absent:
                    raise
            tmp = self._tmp_name(target)
            _link_open_file(fd, tmp)
        finally:
            os.close(fd)
        os.replace(tmp, target)

    def _unnamed(self, folder: str) -> int | None:
        """An unnamed file open for writing in ``folder``; None where the file system has none."""
        if self._unnamed_files is False:
            return None
        try:
            fd = os.open(folder, os.O_WRONLY | _O_TMPFILE | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            # EISDIR: a kernel without O_TMPFILE; EOPNOTSUPP: a file system without it
            if exc.errno not in (errno.EISDIR, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            self._unnamed_files = False
            return None
        if self._unnamed_files is None:  # the first: is there a /proc to link it through?
            self._unnamed_files = Path(f"/proc/self/fd/{fd}").exists()
            if not self._unnamed_files:
                os.close(fd)
                return None
        return fd

    def _place_named(self, target: str, pieces: Sequence[Piece], *, if_absent: bool) -> None:
        """:meth:`_place` through a hidden temporary file, for file systems without unnamed files."""
        tmp = self._tmp_name(target)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        try:
            self._fill(fd, pieces)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                Path(tmp).unlink()
            raise
        os.close(fd)
        if not if_absent:
            os.replace(tmp, target)
            return
        try:
            os.link(tmp, target)
        finally:
            Path(tmp).unlink()

    def _copy_slice(self, out_fd: int, piece: Slice) -> None:
        src = self._open(piece.key)
        try:
            size = os.fstat(src).st_size
            _copy_range(src, out_fd, piece.start, size - piece.trim_end - piece.start)
        finally:
            os.close(src)

    def put(self, spec: ObjectSpec, pieces: Sequence[Piece],
            meta: dict[str, str] | None = None, *, if_absent: bool = False) -> None:
        """Write ``spec.key`` from ``pieces``, atomically for readers.

        The bytes go to a temporary file renamed over the target (with
        ``if_absent``, hard-linked to it, which fails when it exists).  User
        metadata goes to the ``.meta`` file first; an object written without
        any loses an older ``.meta``.

        Raises
        ------
        StoreError
            When ``spec``'s headers are not the ones its key and bytes give
            (a folder site keeps no headers: they must follow from both).
        ObjectExistsError
            With ``if_absent``, when the key holds an object already.
        """
        target = self._file(spec.key)  # checks the key before anything is written
        self._check_derivable(spec, pieces)
        if if_absent and meta:
            raise StoreError(f"{spec.key}: a create-only write carries no user metadata")
        self._record_mapping()
        self._mkdir(target.rpartition("/")[0])
        meta_file = target[: -len(BODY)] + META
        if meta:
            self._place(meta_file, [json.dumps(meta, sort_keys=True).encode()])
        elif not if_absent:
            with contextlib.suppress(FileNotFoundError):
                Path(meta_file).unlink()
        try:
            self._place(target, pieces, if_absent=if_absent)
        except FileExistsError as exc:
            raise ObjectExistsError(f"{spec.key}: already in {self.url}") from exc

    def _check_derivable(self, spec: ObjectSpec, pieces: Sequence[Piece]) -> None:
        """Refuse an object whose headers would not follow from its key and first bytes."""
        first = pieces[0] if pieces else b""
        if isinstance(first, Slice):
            fd = self._open(first.key)
            try:
                head = os.pread(fd, keys.HEAD_BYTES, first.start)
            finally:
                os.close(fd)
        elif isinstance(first, Path):
            with open(first, "rb") as fh:
                head = fh.read(keys.HEAD_BYTES)
        else:
            head = bytes(first[: keys.HEAD_BYTES])
        try:
            derived = keys.headers_for(spec.key, head)
        except keys.HeadersLostError as exc:
            raise StoreError(str(exc)) from exc
        if derived != spec.headers():
            raise StoreError(f"{spec.key}: headers {spec.headers()} do not follow from the key and "
                             f"its bytes ({derived}); a site folder could not serve them")

    # -- reading -------------------------------------------------------------

    def _open(self, key: str) -> int:
        """An open descriptor of ``key``'s body."""
        try:
            return os.open(self._file(key), os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise KeyNotFoundError(f"{key}: not in {self.url}") from exc

    def get(self, key: str) -> bytes:
        """The stored body of ``key``."""
        with open(self._open(key), "rb") as fh:
            return fh.read()

    def headers(self, key: str) -> dict[str, str] | None:
        """The headers of ``key`` (from its key and first bytes), or None when it does not exist.

        Raises
        ------
        StoreError
            When a multipart body does not start with its boundary ("headers lost").
        """
        try:
            fd = self._open(key)
        except KeyNotFoundError:
            return None
        try:
            head = os.pread(fd, keys.HEAD_BYTES, 0) if keys.needs_head(key) else os.pread(fd, 2, 0)
        finally:
            os.close(fd)
        try:
            out = keys.headers_for(key, head)
        except keys.HeadersLostError as exc:
            raise StoreError(f"{self.url}: {exc}") from exc
        try:
            with open(self._file(key, META), "rb") as fh:
                meta = json.loads(fh.read())
        except FileNotFoundError:
            return out
        for name, value in meta.items():
            out[META_PREFIX + name] = str(value)
        return out

    def children(self, prefix: str) -> list[str]:
        """Immediate children of a key prefix: object names and folder names."""
        parts = _prefix_parts(prefix)
        lead = ""
        if len(parts) > FOLDERS:  # names in the folder of the first five
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
            elif name.endswith((META, ".head.json")) or lead:  # not a folder of keys
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
        """Remove the object and its user metadata, if any."""
        for suffix in (BODY, META):
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                Path(self._file(key, suffix)).unlink()

    def walk(self, prefix: str = "") -> Iterator[str]:
        """Every key under ``prefix`` (walks the folder; hidden temporary files are not keys)."""
        parts = _prefix_parts(prefix)
        under = "/".join(parts) + "/" if parts else ""
        base = "/".join([self.url, *parts[:FOLDERS]])
        for folder, dirs, files in os.walk(base):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            rel = os.path.relpath(folder, self.url).replace(os.sep, "/")
            lead = "" if rel == "." else rel + "/"
            for name in sorted(files):
                if name.endswith(BODY) and not name.startswith("."):
                    key = lead + name[: -len(BODY)].replace(JOIN, "/")
                    if key.startswith(under):
                        yield key

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """An exclusive ``flock`` on ``R/_site/.lock``."""
        self._record_mapping()
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


def _link_open_file(fd: int, target: str) -> None:
    """Give the unnamed file open as ``fd`` the name ``target`` (:class:`FileExistsError` if taken)."""
    global _ANY_FOLDER
    if _ANY_FOLDER is None:
        _ANY_FOLDER = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    os.link(f"/proc/self/fd/{fd}", target, src_dir_fd=_ANY_FOLDER)


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


def open_store(location: str, *, client: Any = None, endpoint_url: str | None = None) -> Store:
    """The store of a site: a folder, or ``s3://bucket/prefix``.

    The one place that tells the two apart.  Opening touches nothing: a folder
    that does not exist is created by the first write only
    (:meth:`LocalStore.exists` tells readers).

    Parameters
    ----------
    location
        A folder, or ``s3://bucket[/prefix]``.
    client
        A ready boto3 S3 client for an ``s3://`` location (in Airflow, the
        Amazon provider's ``S3Hook(aws_conn_id).get_conn()``); else one is made
        on first use from ``endpoint_url`` (or ``AWS_ENDPOINT_URL``) and boto3's
        credential chain.

    Raises
    ------
    StoreError
        For an ``s3://`` URL without a bucket, or a folder whose layout record
        names a layout this version does not know.
    """
    if is_s3(location):
        from .s3store import S3Store

        return S3Store(location, endpoint_url=endpoint_url, client=client)
    store = LocalStore(location)
    store.check_mapping()
    return store


def is_s3(location: str) -> bool:
    """Whether ``location`` names an S3 site or source (``s3://…``)."""
    return location.startswith("s3://")
