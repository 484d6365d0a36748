"""Tests for object keys and their headers (static_dicomweb.keys)."""

from __future__ import annotations

import re

import pytest

from static_dicomweb import keys
from static_dicomweb.errors import InvalidUIDError, PermanentError
from static_dicomweb.keys import ObjectSpec

STUDY, SERIES, SOP = "1.2.3", "1.2.3.4", "1.2.3.4.5"
INSTANCE = f"studies/{STUDY}/series/{SERIES}/instances/{SOP}"
BOUNDARY_RE = re.compile(r"; boundary=(sdw-[0-9a-f]{32})$")


# -- validate_uid ---------------------------------------------------------

@pytest.mark.parametrize("value", ["1.2.3", "0", "1.2.840.10008.1.2.1", "1.02.3", "9" * 64])
def test_validate_uid_accepts(value: str) -> None:
    assert keys.validate_uid(value) == value


@pytest.mark.parametrize("value", ["1.2.3\x00", "1.2.3 ", "1.2.3 \x00"])
def test_validate_uid_strips_trailing_padding(value: str) -> None:
    assert keys.validate_uid(value) == "1.2.3"


def test_validate_uid_accepts_pydicom_uid() -> None:
    from pydicom.uid import UID

    assert keys.validate_uid(UID("1.2.840.10008.5.1.4.1.1.2")) == "1.2.840.10008.5.1.4.1.1.2"


@pytest.mark.parametrize("value", [
    "", None, "\x00", "  ", "1.2/3", "..", "1..2", ".1.2", "1.2.", "1.2.a", "1.2.3..", "1.2/../3",
    " 1.2", "1,2", "1\\2", "-1.2", "9" * 65, "1." + "2" * 63,
])
def test_validate_uid_rejects(value: str | None) -> None:
    with pytest.raises(InvalidUIDError):
        keys.validate_uid(value)


def test_validate_uid_error_names_attribute_and_is_permanent() -> None:
    with pytest.raises(InvalidUIDError, match=r"SOPInstanceUID") as info:
        keys.validate_uid("1.2/3", what="SOPInstanceUID")
    assert isinstance(info.value, PermanentError)
    with pytest.raises(InvalidUIDError, match="64"):
        keys.validate_uid("1" * 65)
    with pytest.raises(InvalidUIDError, match="empty"):
        keys.validate_uid("")


def test_validate_uid_rejects_trailing_newline() -> None:
    with pytest.raises(InvalidUIDError):
        keys.validate_uid("1.2.3\n")


def test_is_strict_uid() -> None:
    assert keys.is_strict_uid("1.2.3")
    assert keys.is_strict_uid("0.1")
    assert not keys.is_strict_uid("1.02.3")
    assert not keys.is_strict_uid("1" * 65)
    assert not keys.is_strict_uid("1..2")


# -- boundaries and multipart types -------------------------------------------

def test_boundary_for_is_deterministic_and_per_key() -> None:
    first = keys.boundary_for(INSTANCE)
    assert first == keys.boundary_for(INSTANCE)
    assert re.fullmatch(r"sdw-[0-9a-f]{32}", first)
    others = {keys.boundary_for(f"{INSTANCE}/frames/{n}") for n in range(1, 50)}
    assert len(others) == 49
    assert first not in others


def test_multipart_type_without_and_with_transfer_syntax() -> None:
    plain = keys.multipart_type("application/dicom", "k")
    assert plain == f'multipart/related; type="application/dicom"; boundary={keys.boundary_for("k")}'
    ts = keys.multipart_type("image/jp2", "k", "1.2.840.10008.1.2.4.90")
    assert ts == ('multipart/related; type="image/jp2"; transfer-syntax=1.2.840.10008.1.2.4.90; '
                  f'boundary={keys.boundary_for("k")}')


# -- ObjectSpec ------------------------------------------------------------

def test_object_spec_headers() -> None:
    assert ObjectSpec("k", "text/plain").headers() == {
        "Content-Type": "text/plain", "Cache-Control": keys.IMMUTABLE}
    assert ObjectSpec("k", "application/dicom+json", "gzip", keys.INDEX).headers() == {
        "Content-Type": "application/dicom+json", "Cache-Control": keys.INDEX,
        "Content-Encoding": "gzip"}


# -- QIDO and metadata -----------------------------------------------------

@pytest.mark.parametrize(("spec", "key", "cache"), [
    (keys.studies(), "studies", keys.INDEX),
    (keys.all_series(), "series", keys.INDEX),
    (keys.study_series(STUDY), f"studies/{STUDY}/series", keys.INDEX),
    (keys.study_instances(STUDY), f"studies/{STUDY}/instances", keys.INDEX),
    (keys.series_instances(STUDY, SERIES), f"studies/{STUDY}/series/{SERIES}/instances", keys.INDEX),
    (keys.study_metadata(STUDY), f"studies/{STUDY}/metadata", keys.INDEX),
    (keys.series_metadata(STUDY, SERIES), f"studies/{STUDY}/series/{SERIES}/metadata", keys.INDEX),
    (keys.instance_metadata(STUDY, SERIES, SOP), f"{INSTANCE}/metadata", keys.IMMUTABLE),
])
def test_json_objects(spec: ObjectSpec, key: str, cache: str) -> None:
    assert spec.key == key
    assert spec.content_type == "application/dicom+json"
    assert spec.content_encoding == "gzip"
    assert spec.cache_control == cache
    assert spec.headers()["Content-Encoding"] == "gzip"


def test_instance_prefix() -> None:
    assert keys.instance_prefix(STUDY, SERIES, SOP) == INSTANCE


# -- WADO-RS bulk ----------------------------------------------------------

def test_frame_key_and_type() -> None:
    spec = keys.frame(STUDY, SERIES, SOP, 3, "image/jp2", "1.2.840.10008.1.2.4.90")
    assert spec.key == f"{INSTANCE}/frames/3"
    assert spec.content_type.startswith('multipart/related; type="image/jp2"; ')
    assert "; transfer-syntax=1.2.840.10008.1.2.4.90;" in spec.content_type
    match = BOUNDARY_RE.search(spec.content_type)
    assert match and match.group(1) == keys.boundary_for(spec.key)
    assert spec.content_encoding is None
    assert spec.cache_control == keys.IMMUTABLE


def test_frames_of_one_instance_have_distinct_boundaries() -> None:
    one = keys.frame(STUDY, SERIES, SOP, 1, "application/octet-stream", "1.2.840.10008.1.2.1")
    two = keys.frame(STUDY, SERIES, SOP, 2, "application/octet-stream", "1.2.840.10008.1.2.1")
    assert one.key.endswith("/frames/1") and two.key.endswith("/frames/2")
    assert BOUNDARY_RE.search(one.content_type) != BOUNDARY_RE.search(two.content_type)


@pytest.mark.parametrize("number", [0, -1])
def test_frame_number_below_one_raises(number: int) -> None:
    with pytest.raises(ValueError, match="start at 1"):
        keys.frame(STUDY, SERIES, SOP, number, "image/jp2", "1.2.840.10008.1.2.4.90")


def test_instance_retrieve() -> None:
    spec = keys.instance(STUDY, SERIES, SOP)
    assert spec.key == INSTANCE
    assert 'type="application/dicom"' in spec.content_type
    assert spec.content_type.startswith("multipart/related;")
    assert "transfer-syntax" not in spec.content_type
    assert spec.content_type.endswith(f"boundary={keys.boundary_for(INSTANCE)}")
    assert spec.content_encoding is None
    assert spec.cache_control == keys.IMMUTABLE


def test_series_retrieve() -> None:
    spec = keys.series(STUDY, SERIES)
    assert spec.key == f"studies/{STUDY}/series/{SERIES}"
    assert 'type="application/dicom"' in spec.content_type
    assert spec.content_type.endswith(f"boundary={keys.boundary_for(spec.key)}")
    assert spec.content_encoding is None
    assert spec.cache_control == keys.INDEX


@pytest.mark.parametrize("path", ["7fe00010", "00540016.0.00181074", "00540016.12.00540016.0.00181074"])
def test_bulkdata_path_accepts(path: str) -> None:
    assert keys.bulkdata_path(path) == path


@pytest.mark.parametrize("path", [
    "../x", "", "7fe0001", "7fe000100", "7FE00010", "7fe00010/../x", "7fe00010.", "7fe00010.0",
    "7fe00010.a.00181074", "00540016..00181074", "7fe00010\n", "/7fe00010",
])
def test_bulkdata_path_rejects(path: str) -> None:
    with pytest.raises(ValueError, match="bad bulk data tag path"):
        keys.bulkdata_path(path)


def test_bulkdata_object() -> None:
    spec = keys.bulkdata(STUDY, SERIES, SOP, "00540016.0.00181074")
    assert spec.key == f"{INSTANCE}/bulkdata/00540016.0.00181074"
    assert 'type="application/octet-stream"' in spec.content_type
    assert spec.content_type.endswith(f"boundary={keys.boundary_for(spec.key)}")
    with pytest.raises(ValueError):
        keys.bulkdata(STUDY, SERIES, SOP, "../../x")


def test_bulkdata_uri_is_relative_to_series() -> None:
    series_key = keys.series(STUDY, SERIES).key
    spec = keys.bulkdata(STUDY, SERIES, SOP, "7fe00010")
    assert keys.bulkdata_uri(series_key, spec.key) == f"instances/{SOP}/bulkdata/7fe00010"


def test_bulkdata_uri_outside_series_raises() -> None:
    spec = keys.bulkdata(STUDY, SERIES, SOP, "7fe00010")
    with pytest.raises(ValueError, match="is not under"):
        keys.bulkdata_uri(f"studies/{STUDY}/series/9.9", spec.key)
    # a series UID that is a prefix of another must not match
    longer = keys.bulkdata(STUDY, "1.2.34", SOP, "7fe00010")
    with pytest.raises(ValueError):
        keys.bulkdata_uri(keys.series(STUDY, "1.2.3").key, longer.key)


# -- Rendered --------------------------------------------------------------

@pytest.mark.parametrize(("spec", "key", "cache"), [
    (keys.study_thumbnail(STUDY), f"studies/{STUDY}/thumbnail", keys.INDEX),
    (keys.series_thumbnail(STUDY, SERIES), f"studies/{STUDY}/series/{SERIES}/thumbnail", keys.INDEX),
    (keys.instance_thumbnail(STUDY, SERIES, SOP), f"{INSTANCE}/thumbnail", keys.IMMUTABLE),
])
def test_thumbnails(spec: ObjectSpec, key: str, cache: str) -> None:
    assert spec.key == key
    assert spec.content_type == "image/jpeg"
    assert spec.content_encoding is None
    assert spec.cache_control == cache


# -- Site records ----------------------------------------------------------

def test_site_records() -> None:
    record = keys.series_record(STUDY, SERIES)
    assert record.key == f"_site/series/{STUDY}/{SERIES}.json"
    assert (record.content_type, record.content_encoding) == ("application/json", "gzip")
    for spec, name in ((keys.manifest(), "manifest.json"),
                       (keys.conversion_report(), "conversion-report.json"),
                       (keys.validation_report(), "validation-report.json")):
        assert spec.key == keys.SITE_PREFIX + name
        assert spec.content_type == "application/json"
        assert spec.cache_control == keys.INDEX


