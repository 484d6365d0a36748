"""Tests for multipart/related bodies (static_dicomweb.multipart)."""

from __future__ import annotations

import email.parser
import email.policy

import pytest

from static_dicomweb import keys, multipart

STUDY, SERIES, SOP = "1.2.3", "1.2.3.4", "1.2.3.4.5"
PAYLOADS = [b"", b"x", bytes(range(256)) * 3, b"\r\n--not-the-boundary\r\n\r\n", b"\r\n"]


@pytest.mark.parametrize("data", PAYLOADS)
def test_single_round_trips(data: bytes) -> None:
    spec = keys.instance(STUDY, SERIES, SOP)
    body = multipart.join(multipart.single(spec, "application/dicom", data))
    ((headers, payload),) = multipart.split(body, spec.content_type)
    assert payload == data
    assert headers == {"content-type": "application/dicom"}


def test_single_frame_part_type_round_trips() -> None:
    spec = keys.frame(STUDY, SERIES, SOP, 1, "image/jp2", "1.2.840.10008.1.2.4.90")
    part_type = "image/jp2; transfer-syntax=1.2.840.10008.1.2.4.90"
    body = multipart.join(multipart.single(spec, part_type, b"\xff\x4f\xff\x51"))
    ((headers, payload),) = multipart.split(body, spec.content_type)
    assert headers["content-type"] == part_type
    assert payload == b"\xff\x4f\xff\x51"


def test_single_layout_is_exact() -> None:
    spec = keys.instance(STUDY, SERIES, SOP)
    boundary = keys.boundary_for(spec.key)
    pieces = multipart.single(spec, "application/dicom", b"DATA")
    assert pieces[1] == b"DATA"
    assert multipart.join(pieces) == (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n"
                                      f"DATA\r\n--{boundary}--\r\n").encode()


def test_single_body_parses_with_the_email_package() -> None:
    """An independent MIME parser agrees on the parts."""
    spec = keys.instance(STUDY, SERIES, SOP)
    data = bytes(range(256))
    body = multipart.join(multipart.single(spec, "application/dicom", data))
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {spec.content_type}\r\n\r\n".encode() + body)
    (part,) = list(message.iter_parts())
    assert part.get_content_type() == "application/dicom"
    assert part.get_payload(decode=True) == data


def test_several_parts_round_trip() -> None:
    spec = keys.series(STUDY, SERIES)
    boundary = keys.boundary_for(spec.key)
    items = [b"first", b"", b"third\r\n"]
    pieces = []
    for index, data in enumerate(items):
        pieces += [multipart.part_head(boundary, "application/dicom", first=index == 0), data]
    pieces.append(multipart.closing(boundary))
    parts = multipart.split(multipart.join(pieces), spec.content_type)
    assert [payload for _, payload in parts] == items
    assert all(headers == {"content-type": "application/dicom"} for headers, _ in parts)


def test_part_head_first_and_later() -> None:
    assert multipart.part_head("b", "t") == b"--b\r\nContent-Type: t\r\n\r\n"
    assert multipart.part_head("b", "t", first=False) == b"\r\n--b\r\nContent-Type: t\r\n\r\n"
    assert multipart.closing("b") == b"\r\n--b--\r\n"


def test_split_accepts_quoted_boundary_and_case() -> None:
    body = b"--abc\r\nContent-Type: x/y\r\nX-Extra:  v \r\n\r\npayload\r\n--abc--\r\n"
    ((headers, payload),) = multipart.split(body, 'multipart/related; type="x/y"; BOUNDARY="abc"')
    assert payload == b"payload"
    assert headers == {"content-type": "x/y", "x-extra": "v"}


@pytest.mark.parametrize("content_type", [
    "multipart/related", 'multipart/related; type="application/dicom"', "multipart/related; boundary=",
    "application/dicom",
])
def test_split_without_boundary_raises(content_type: str) -> None:
    with pytest.raises(ValueError, match="no boundary"):
        multipart.split(b"--x\r\n\r\ny\r\n--x--\r\n", content_type)


@pytest.mark.parametrize("body", [
    b"",
    b"garbage",
    b"--other\r\nContent-Type: a/b\r\n\r\nx\r\n--other--\r\n",  # another boundary
    b"--abcXX\r\nContent-Type: a/b\r\n\r\nx\r\n--abc--\r\n",  # bad delimiter line
    b"--abc\r\nContent-Type: a/b\r\n\r\nnever closed",  # no close delimiter
    b"--abc\r\nContent-Type: a/b\r\nx\r\n--abc--\r\n",  # no header/body separator
    b"--abc\r\nContent-Type: a/b\r\n\r\nx\r\n--abc",  # delimiter not followed by -- or CRLF
])
def test_split_malformed_body_raises(body: bytes) -> None:
    with pytest.raises(ValueError):
        multipart.split(body, "multipart/related; boundary=abc")


def test_p10_part_span_matches_single_body() -> None:
    spec = keys.instance(STUDY, SERIES, SOP)
    p10 = b"\x00" * 128 + b"DICM" + bytes(range(100))
    pieces = multipart.single(spec, "application/dicom", p10)
    head, tail = multipart.p10_part_span(spec.key)
    assert (head, tail) == (len(pieces[0]), len(pieces[2]))
    body = multipart.join(pieces)
    assert body[head:len(body) - tail] == p10


def test_p10_part_span_depends_on_key_only() -> None:
    a = multipart.p10_part_span(keys.instance(STUDY, SERIES, SOP).key)
    b = multipart.p10_part_span(keys.instance(STUDY, SERIES, "9" * 64).key)
    assert a == b  # boundaries have a fixed length


def test_join_concatenates() -> None:
    assert multipart.join([b"a", b"", b"bc"]) == b"abc"
    assert multipart.join([]) == b""
