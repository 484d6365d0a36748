"""The single byte range that ``serve`` answers (RFC 9110 14.1.2), edge by edge.

tests/test_serve.py checks ranges over HTTP; these are the edges between 200,
206 and 416 that it does not reach, on the function that decides them.
"""

from __future__ import annotations

import pytest

from static_dicomweb.serve import _requested_range


@pytest.mark.parametrize(("header", "size", "expected"), [
    ("bytes=0-9", 100, (0, 10)),
    ("bytes=90-", 100, (90, 100)),
    ("bytes=-20", 100, (80, 100)),
    ("bytes=-200", 100, (0, 100)),        # a suffix longer than the object is the whole object
    ("bytes=10-1000", 100, (10, 100)),    # a last byte past the end is the end
    ("bytes=5-5", 100, (5, 6)),
])
def test_a_satisfiable_range(header: str, size: int, expected: tuple[int, int]) -> None:
    assert _requested_range(header, size) == expected


@pytest.mark.parametrize(("header", "size"), [
    ("bytes=100-", 100),
    ("bytes=100-200", 100),
    ("bytes=-0", 100),
])
def test_an_unsatisfiable_range_is_empty(header: str, size: int) -> None:
    requested = _requested_range(header, size)
    assert requested is not None
    start, end = requested
    assert start >= end


@pytest.mark.parametrize(("header", "size"), [
    (None, 100),
    ("", 100),
    ("bytes=-", 100),           # neither end
    ("bytes=9-2", 100),         # last before first: syntactically invalid, ignored as S3 does
    ("items=0-9", 100),
    ("bytes=0-1,4-5", 100),     # several ranges: the whole object
    ("bytes=0-9", 0),           # an empty object is answered whole
])
def test_no_range_answers_the_whole_object(header: str | None, size: int) -> None:
    assert _requested_range(header, size) is None
