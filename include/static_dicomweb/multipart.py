"""multipart/related bodies (PS3.18 §8.6) with the boundary taken from the key.

:func:`split` parses a body in memory; :func:`locate` finds the parts of a
body in a file (a STOW-RS request of hundreds of MB, spooled to disk) without
holding more than a window of it in memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import BinaryIO, NamedTuple

from .keys import ObjectSpec, boundary_for

CRLF = b"\r\n"
#: How much of a spooled body :func:`locate` reads at a time.
WINDOW = 1 << 20
#: The longest part header section :func:`locate` reads.
MAX_PART_HEAD = 16384


def part_head(boundary: str, content_type: str, first: bool = True) -> bytes:
    """The delimiter and headers that open one part."""
    lead = b"" if first else CRLF
    return lead + f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode("ascii")


def closing(boundary: str) -> bytes:
    """The close delimiter after the last part."""
    return f"\r\n--{boundary}--\r\n".encode("ascii")


def single(spec: ObjectSpec, part_type: str, data: bytes | memoryview) -> list[bytes | memoryview]:
    """The pieces of a one-part body for ``spec`` (joined by the store, never copied here)."""
    boundary = boundary_for(spec.key)
    return [part_head(boundary, part_type), data, closing(boundary)]


def p10_part_span(key: str) -> tuple[int, int]:
    """Where the Part 10 bytes sit in a one-part instance object: (head length, tail length)."""
    boundary = boundary_for(key)
    return len(part_head(boundary, "application/dicom")), len(closing(boundary))


def split(body: bytes, content_type: str) -> list[tuple[dict[str, str], bytes]]:
    """Parse a multipart/related body into (headers, payload) pairs.

    Raises
    ------
    ValueError
        If the Content-Type names no boundary or the body does not use it.

    """
    boundary = boundary_of(content_type)
    delim = b"--" + boundary.encode()
    if not body.startswith(delim):  # a preamble (dicomweb-client sends a CRLF) is allowed
        start = body.find(CRLF + delim)
        if start < 0:
            raise ValueError(f"body does not hold the boundary {boundary}")
        body = body[start + 2:]
    parts: list[tuple[dict[str, str], bytes]] = []
    for chunk in _chunks(body, delim):
        head, sep, payload = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise ValueError("a part has no header/body separator")
        parts.append((_part_headers(head), payload))
    return parts


def boundary_of(content_type: str) -> str:
    """The ``boundary`` parameter of a multipart Content-Type.

    Raises
    ------
    ValueError
        If there is none.
    """
    for param in content_type.split(";")[1:]:
        name, _, value = param.strip().partition("=")
        if name.lower() == "boundary" and value.strip('"'):
            return value.strip('"')
    raise ValueError(f"no boundary in Content-Type {content_type!r}")


def _part_headers(head: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in head.decode("latin-1").split("\r\n"):
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return headers


class Part(NamedTuple):
    """One part of a body in a file: its headers, and where its payload lies."""

    headers: dict[str, str]
    offset: int
    length: int

    def read(self, fh: BinaryIO) -> bytes:
        """The payload, read from the file the part was located in."""
        fh.seek(self.offset)
        data = fh.read(self.length)
        if len(data) != self.length:
            raise ValueError(f"part at byte {self.offset}: the body is shorter than when it was parsed")
        return data


def locate(fh: BinaryIO, content_type: str) -> list[Part]:
    """Find the parts of a multipart body held in a seekable binary file.

    The same grammar as :func:`split` (a preamble before the first delimiter
    and an epilogue after the close delimiter are ignored), reading the file
    in windows of :data:`WINDOW` bytes: a body of any size takes about one
    window of memory.  Read each payload with :meth:`Part.read`.

    Raises
    ------
    ValueError
        If the Content-Type names no boundary or the body does not use it.
    """
    delim = b"--" + boundary_of(content_type).encode()
    starts = _find_all(fh, CRLF + delim)
    fh.seek(0)
    if fh.read(len(delim)) == delim:  # no preamble: the first delimiter opens the body
        starts.insert(0, -2)
    if not starts:
        raise ValueError(f"body does not hold the boundary {delim[2:].decode()}")
    parts: list[Part] = []
    for here, after in zip(starts, [*starts[1:], None], strict=True):
        line_end = here + 2 + len(delim)
        fh.seek(line_end)
        follows = fh.read(2)
        if follows == b"--":
            return parts
        if follows != CRLF:
            raise ValueError("malformed multipart delimiter line")
        if after is None:
            raise ValueError("multipart body is not closed")
        start = line_end + 2
        fh.seek(start)
        head = fh.read(min(MAX_PART_HEAD, after - start))
        if head.startswith(CRLF):  # a part without header fields
            headers, payload = {}, start + 2
        else:
            end = head.find(b"\r\n\r\n")
            if end < 0:
                raise ValueError(f"the part at byte {start} has no header/body separator "
                                 f"in its first {MAX_PART_HEAD} bytes")
            headers, payload = _part_headers(head[:end]), start + end + 4
        parts.append(Part(headers, payload, after - payload))
    raise AssertionError("unreachable: the last delimiter either closes the body or raised")


def _find_all(fh: BinaryIO, needle: bytes) -> list[int]:
    """Offsets of every occurrence of ``needle`` in the file (occurrences do not overlap)."""
    found: list[int] = []
    fh.seek(0)
    carry, base = b"", 0  # base: the file offset of carry's first byte
    while chunk := fh.read(WINDOW):
        buf = carry + chunk
        at = buf.find(needle)
        while at >= 0:
            if not found or base + at >= found[-1] + len(needle):
                found.append(base + at)
            at = buf.find(needle, at + 1)
        keep = min(len(buf), len(needle) - 1)
        carry, base = buf[len(buf) - keep:], base + len(buf) - keep
    return found


def _chunks(body: bytes, delim: bytes) -> Iterator[bytes]:
    pos = len(delim)
    while True:
        if body[pos:pos + 2] == b"--":
            return
        if body[pos:pos + 2] != CRLF:
            raise ValueError("malformed multipart delimiter line")
        pos += 2
        end = body.find(CRLF + delim, pos)
        if end < 0:
            raise ValueError("multipart body is not closed")
        yield body[pos:end]
        pos = end + 2 + len(delim)


def join(pieces: Sequence[bytes | memoryview]) -> bytes:
    """Concatenate body pieces (for stores that need one buffer)."""
    return b"".join(pieces)
