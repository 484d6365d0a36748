"""multipart/related bodies (PS3.18 §8.6) with the boundary taken from the key."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from .keys import ObjectSpec, boundary_for

CRLF = b"\r\n"


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
    boundary = None
    for param in content_type.split(";")[1:]:
        name, _, value = param.strip().partition("=")
        if name.lower() == "boundary":
            boundary = value.strip('"')
    if not boundary:
        raise ValueError(f"no boundary in Content-Type {content_type!r}")
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
        headers: dict[str, str] = {}
        for line in head.decode("latin-1").split("\r\n"):
            if ":" in line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        parts.append((headers, payload))
    return parts


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
