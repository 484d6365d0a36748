"""What every store implements, and the pieces a body is written from.

:mod:`static_dicomweb.store` (a folder) and :mod:`static_dicomweb.s3store` (S3) both implement
:class:`Store` and import it from here: ``s3store`` never imports ``store``, and
:func:`static_dicomweb.store.open_store` imports ``s3store`` only for an ``s3://`` location, so a
process that writes a folder never loads the S3 code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .keys import ObjectSpec

__all__ = ["META_PREFIX", "Piece", "Slice", "Store"]

#: The prefix of an object's user metadata headers, as S3 names them.
META_PREFIX = "x-amz-meta-"


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
            meta: dict[str, str] | None = None, *, if_absent: bool = False) -> None:
        """Write an object (atomically) from pieces, with ``spec``'s headers and user metadata.

        With ``if_absent``, only when the key holds no object yet (else
        :class:`~static_dicomweb.errors.ObjectExistsError`), atomically against
        every other writer: the way two writers agree on who claims a key.
        """

    def get(self, key: str) -> bytes:
        """The stored bytes of ``key`` (still gzip-compressed where stored so)."""

    def headers(self, key: str) -> dict[str, str] | None:
        """The headers of ``key``, or None when there is no such object."""

    def children(self, prefix: str) -> list[str]:
        """Names directly under ``prefix`` (a key prefix ending in ``/``), sorted."""

    def walk(self, prefix: str = "") -> Iterator[str]:
        """Every key under ``prefix``."""

    def delete(self, key: str) -> None:
        """Remove ``key`` (no error when it does not exist)."""

    def exists(self) -> bool:
        """Whether the site's location exists (a folder, or a bucket one can read)."""

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """Exclusive access for index aggregation across processes."""
