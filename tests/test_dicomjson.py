"""Tests for DICOM JSON encoding (static_dicomweb.dicomjson)."""

from __future__ import annotations

import base64
import gzip
import io
import json
import logging
import secrets
import struct
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.sequence import Sequence

from static_dicomweb import dicomjson
from static_dicomweb.dicomjson import JsonDict, dataset_to_json, decode, encode, first, gzip_bytes

LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}


class Recorder:
    """A bulk data handler that remembers what it was given."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes]] = []

    def __call__(self, path: str, data: bytes) -> str:
        self.calls.append((path, data))
        return f"bulk/{path}"


def one(ds: Dataset, tag: str, bulk: dicomjson.BulkHandler | None = None) -> JsonDict:
    out = dataset_to_json(ds, bulk)
    assert list(out) == [tag]
    attr: JsonDict = out[tag]
    return attr


def explicit_le(*elements: tuple[int, str, bytes]) -> Dataset:
    """A dataset parsed from raw Explicit VR Little Endian bytes (keeps invalid values as read)."""
    raw = b""
    for tag, vr, value in elements:
        layout = "<HH2s2xI" if vr in LONG_VRS else "<HH2sH"
        raw += struct.pack(layout, tag >> 16, tag & 0xFFFF, vr.encode(), len(value)) + value
    return read_dataset(io.BytesIO(raw), is_implicit_VR=False, is_little_endian=True)


# -- person names ----------------------------------------------------------

def test_pn_alphabetic() -> None:
    ds = Dataset()
    ds.PatientName = "Doe^Jane"
    assert one(ds, "00100010") == {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]}


def test_pn_three_groups() -> None:
    ds = Dataset()
    ds.PatientName = "A^B=C^D=E^F"
    assert one(ds, "00100010")["Value"] == [
        {"Alphabetic": "A^B", "Ideographic": "C^D", "Phonetic": "E^F"}]


def test_pn_ideographic_only() -> None:
    ds = Dataset()
    ds.PatientName = "=C^D"
    assert one(ds, "00100010")["Value"] == [{"Ideographic": "C^D"}]


def test_pn_multiple_values() -> None:
    ds = Dataset()
    ds.add_new(0x00081070, "PN", ["A^B", "C^D"])  # OperatorsName
    assert one(ds, "00081070")["Value"] == [{"Alphabetic": "A^B"}, {"Alphabetic": "C^D"}]


def test_utf8_names_and_text_round_trip_through_part10() -> None:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Müller^Jürgen=山田^太郎=やまだ^たろう"
    ds.StudyDescription = "Ünïcödé – 日本語"
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, implicit_vr=False, little_endian=True, enforce_file_format=False)
    raw = buf.getvalue()
    assert "Müller".encode() in raw
    back = pydicom.dcmread(io.BytesIO(raw), force=True)
    out = dataset_to_json(back)
    assert out["00100010"]["Value"] == [{"Alphabetic": "Müller^Jürgen", "Ideographic": "山田^太郎",
                                         "Phonetic": "やまだ^たろう"}]
    assert out["00081030"]["Value"] == ["Ünïcödé – 日本語"]
    assert out["00080005"]["Value"] == ["ISO_IR 192"]
    encoded = encode(out)
    assert "山田^太郎".encode() in encoded  # UTF-8, not \\u escapes
    assert json.loads(encoded.decode("utf-8")) == out


def data_file(name: str) -> Path:
    path = get_testdata_file(name)
    assert isinstance(path, str), name
    return Path(path)


def part10_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, implicit_vr=False, little_endian=True, enforce_file_format=False)
    return buf.getvalue()


def from_bytes(raw: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(raw), force=True)


def test_same_bytes_under_another_character_set_decode_differently() -> None:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Zoë^Top"
    utf8 = part10_bytes(ds)
    latin1 = utf8.replace(b"ISO_IR 192", b"ISO_IR 100")
    assert latin1 != utf8
    for raw in (utf8, latin1, utf8):
        expected = str(from_bytes(raw).PatientName)
        assert dataset_to_json(from_bytes(raw))["00100010"]["Value"] == [{"Alphabetic": expected}]
    assert expected == "Zoë^Top"


def test_sequence_items_decoded_with_their_own_files_character_set() -> None:
    item = Dataset()
    item.PatientName = "Émile^Nested"
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.OtherPatientIDsSequence = Sequence([item])
    utf8 = part10_bytes(ds)
    latin1 = utf8.replace(b"ISO_IR 192", b"ISO_IR 100")
    for raw in (latin1, utf8):
        expected = str(from_bytes(raw).OtherPatientIDsSequence[0].PatientName)
        got = dataset_to_json(from_bytes(raw))["00101002"]["Value"][0]["00100010"]["Value"]
        assert got == [{"Alphabetic": expected}]
    assert expected == "Émile^Nested"


@pytest.mark.parametrize(("charset", "name", "kept"), [
    ("ISO_IR 192", b"Bad\xffName^Jo", False),
    (["ISO 2022 IR 6", "ISO 2022 IR 87"], b"Yamada^Tarou=\x1b$B\xff\xfe\x1b(B", False),
    ("ISO_IR 100", "Müller^Jürgen".encode("latin-1"), True),
    ("ISO_IR 192", "Müller^Jürgen=山田^太郎".encode(), True),
    (["ISO 2022 IR 6", "ISO 2022 IR 87"], b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B", True),
], ids=["utf8-0xff", "jis-invalid", "latin1", "utf8", "jis"])
def test_strings_that_do_not_decode_are_kept_byte_exact(tmp_path: Path, charset: str | list[str],
                                                         name: bytes, kept: bool) -> None:
    """A value whose bytes do not decode in its character set is InlineBinary, never U+FFFD."""
    from static_dicomweb import keys
    from static_dicomweb.convert import convert
    from static_dicomweb.store import LocalStore
    from static_dicomweb.validate import validate

    ds = pydicom.dcmread(data_file("CT_small.dcm"))
    ds.SpecificCharacterSet = charset
    ds.PatientName = "placeholder"
    ds["PatientName"].value = name  # the bytes as they are, whatever the character set says
    ds.StudyDescription = "placeholder"
    ds["StudyDescription"].value = name.replace(b"^", b" ").replace(b"=", b" ")
    path = tmp_path / "named.dcm"
    ds.save_as(path, enforce_file_format=True)
    site = tmp_path / "site"
    result = convert([path], LocalStore(site))
    assert result.ok, result.rejected
    (w,) = result.written
    store = LocalStore(site)
    (meta,) = decode(store.get(keys.instance_metadata(w.study, w.series, w.sop).key))
    (row,) = decode(store.get("studies"))
    assert name in path.read_bytes()
    padded = name + b" " * (len(name) % 2)
    for attrs in (meta, row):
        if kept:
            assert "InlineBinary" not in attrs["00100010"]
            assert attrs["00100010"]["Value"] == [dicomjson._person_name(
                pydicom.dcmread(path).PatientName)]
            assert "\ufffd" not in json.dumps(attrs["00100010"])
        else:
            assert attrs["00100010"] == {"vr": "PN",
                                         "InlineBinary": base64.b64encode(padded).decode()}
    if not kept:
        assert base64.b64decode(meta["00081030"]["InlineBinary"]).rstrip(b" ") == \
            name.replace(b"^", b" ").replace(b"=", b" ")
    assert validate(str(site), keep=False).ok


def test_repeated_conversion_of_equal_files_is_equal() -> None:
    raw = data_file("MR_small.dcm").read_bytes()
    first_ = dataset_to_json(from_bytes(raw), Recorder())
    second = dataset_to_json(from_bytes(raw), Recorder())
    assert encode(first_) == encode(second)
    assert raw.count(b"CompressedSamples^MR1") == 1
    changed = from_bytes(raw.replace(b"CompressedSamples^MR1", b"CompressedSamples^XX1"))
    name = dataset_to_json(changed, Recorder())["00100010"]["Value"]
    assert name == [{"Alphabetic": "CompressedSamples^XX1"}]


# -- numbers ---------------------------------------------------------------

def test_ds_and_is_are_json_numbers() -> None:
    ds = Dataset()
    ds.add_new(0x00280030, "DS", ["1.50", "2"])  # PixelSpacing
    ds.add_new(0x00200013, "IS", "7")  # InstanceNumber
    out = dataset_to_json(ds)
    assert out["00280030"] == {"vr": "DS", "Value": [1.5, 2]}
    assert isinstance(out["00280030"]["Value"][1], int)
    assert out["00200013"] == {"vr": "IS", "Value": [7]}
    assert encode(out["00280030"]) == b'{"Value":[1.5,2],"vr":"DS"}'


def test_ds_exponent_and_negative() -> None:
    ds = Dataset()
    ds.add_new(0x00181050, "DS", ["-0.25", "1e3", "2.5E-3"])
    assert one(ds, "00181050")["Value"] == [-0.25, 1000, 0.0025]


@pytest.mark.filterwarnings("ignore:Invalid value for VR")
def test_invalid_ds_and_is_become_null(caplog: pytest.LogCaptureFixture) -> None:
    # values unique to this run, so no earlier conversion has seen (and cached) them
    bad_ds, bad_is = f"z{secrets.token_hex(3)} ".encode(), f"y{secrets.token_hex(2)} ".encode()
    ds = explicit_le((0x00181050, "DS", bad_ds), (0x00200013, "IS", bad_is))
    with caplog.at_level(logging.WARNING, logger="static_dicomweb.dicomjson"):
        out = dataset_to_json(ds)
    assert out["00181050"] == {"vr": "DS", "Value": [None]}
    assert out["00200013"] == {"vr": "IS", "Value": [None]}
    assert "00181050" in caplog.text and "not a number" in caplog.text


def test_invalid_ds_among_valid_values() -> None:
    ds = explicit_le((0x00280030, "DS", b"1.5\\abc "))
    assert one(ds, "00280030")["Value"] == [1.5, None]


@pytest.mark.filterwarnings("ignore:Invalid value for VR")
def test_nan_ds_becomes_null_and_encodes() -> None:
    ds = Dataset()
    ds.add_new(0x00181050, "DS", "NaN")
    out = dataset_to_json(ds)
    assert out["00181050"]["Value"] == [None]
    assert encode(out) == b'{"00181050":{"Value":[null],"vr":"DS"}}'


def test_binary_numbers() -> None:
    ds = Dataset()
    ds.Rows = 512
    ds.add_new(0x00189219, "FD", [0.5, -2.0])
    ds.add_new(0x00700052, "SL", [-3, 4])
    out = dataset_to_json(ds)
    assert out["00280010"] == {"vr": "US", "Value": [512]}
    assert out["00189219"] == {"vr": "FD", "Value": [0.5, -2]}
    assert out["00700052"] == {"vr": "SL", "Value": [-3, 4]}


def test_ambiguous_vr_resolved_from_pixel_representation() -> None:
    unsigned = Dataset()
    unsigned.PixelRepresentation = 0
    unsigned.SmallestImagePixelValue = 5
    signed = Dataset()
    signed.PixelRepresentation = 1
    signed.SmallestImagePixelValue = -5
    assert dataset_to_json(unsigned)["00280106"] == {"vr": "US", "Value": [5]}
    assert dataset_to_json(signed)["00280106"] == {"vr": "SS", "Value": [-5]}


# -- other VRs -------------------------------------------------------------

def test_at_values() -> None:
    ds = Dataset()
    ds.add_new(0x00209165, "AT", [0x00100010, 0x7FE00010])  # DimensionIndexPointer
    assert one(ds, "00209165") == {"vr": "AT", "Value": ["00100010", "7FE00010"]}


def test_strings_keep_multiple_values_and_empty_ones() -> None:
    ds = Dataset()
    ds.ImageType = ["ORIGINAL", "", "AXIAL"]
    ds.StudyDescription = "a\\b"  # LO splits
    ds.add_new(0x00204000, "LT", "line\\with backslash")  # LT never splits
    out = dataset_to_json(ds)
    assert out["00080008"]["Value"] == ["ORIGINAL", None, "AXIAL"]
    assert out["00204000"]["Value"] == ["line\\with backslash"]


@pytest.mark.parametrize(("keyword", "vr"), [
    ("PatientName", "PN"), ("PatientID", "LO"), ("InstanceNumber", "IS"), ("SliceThickness", "DS"),
    ("StudyDate", "DA"), ("ReferencedImageSequence", "SQ"), ("Rows", "US"),
])
def test_empty_elements_have_only_vr(keyword: str, vr: str) -> None:
    ds = Dataset()
    setattr(ds, keyword, [] if vr == "SQ" else None)
    (attr,) = dataset_to_json(ds).values()
    assert attr == {"vr": vr}


def test_empty_binary_has_only_vr() -> None:
    ds = Dataset()
    ds.add_new(0x00091002, "OB", b"")
    recorder = Recorder()
    assert one(ds, "00091002", recorder) == {"vr": "OB"}
    assert recorder.calls == []


# -- sequences and bulk data -----------------------------------------------

def nested() -> Dataset:
    inner = Dataset()
    inner.add_new(0x00181074, "DS", "100")  # RadionuclideTotalDose
    inner.add_new(0x00091010, "OB", bytes(range(256)) * 8)  # 2048 bytes
    second = Dataset()
    second.add_new(0x00181072, "TM", "120000")
    ds = Dataset()
    ds.add_new(0x00540016, "SQ", Sequence([inner, second]))
    return ds


def test_sequence_items_nested() -> None:
    out = dataset_to_json(nested())
    seq = out["00540016"]
    assert seq["vr"] == "SQ"
    first_item, second_item = seq["Value"]
    assert first_item["00181074"] == {"vr": "DS", "Value": [100]}
    assert second_item == {"00181072": {"vr": "TM", "Value": ["120000"]}}


def test_nested_bulk_data_gets_tag_path() -> None:
    recorder = Recorder()
    out = dataset_to_json(nested(), recorder)
    assert recorder.calls == [("00540016.0.00091010", bytes(range(256)) * 8)]
    item = out["00540016"]["Value"][0]
    assert item["00091010"] == {"vr": "OB", "BulkDataURI": "bulk/00540016.0.00091010"}


def test_inline_binary_up_to_the_limit() -> None:
    data = bytes(range(256)) * 4  # exactly 1024 bytes
    assert len(data) == dicomjson.INLINE_BINARY_LIMIT
    ds = Dataset()
    ds.add_new(0x00091002, "OB", data)
    recorder = Recorder()
    attr = one(ds, "00091002", recorder)
    assert attr == {"vr": "OB", "InlineBinary": base64.b64encode(data).decode()}
    assert recorder.calls == []


def test_binary_over_the_limit_goes_to_the_handler() -> None:
    data = bytes(1025)
    ds = Dataset()
    ds.add_new(0x00091002, "OB", data)
    recorder = Recorder()
    assert one(ds, "00091002", recorder) == {"vr": "OB", "BulkDataURI": "bulk/00091002"}
    assert recorder.calls == [("00091002", data)]


def test_binary_without_handler_is_inline() -> None:
    data = bytes(5000)
    ds = Dataset()
    ds.add_new(0x00091002, "OB", data)
    assert base64.b64decode(one(ds, "00091002")["InlineBinary"]) == data


def test_pixel_data_is_always_bulk_with_a_handler() -> None:
    ds = Dataset()
    ds.BitsAllocated = 8
    ds.add_new(0x7FE00010, "OB", b"\x01\x02\x03\x04")
    recorder = Recorder()
    out = dataset_to_json(ds, recorder)
    assert out["7FE00010"] == {"vr": "OB", "BulkDataURI": "bulk/7fe00010"}
    assert recorder.calls == [("7fe00010", b"\x01\x02\x03\x04")]
    assert dataset_to_json(ds)["7FE00010"]["InlineBinary"] == base64.b64encode(b"\x01\x02\x03\x04").decode()


def test_pixel_data_ob_or_ow_resolved_from_bits_allocated() -> None:
    ds = Dataset()
    ds.BitsAllocated = 16
    ds.PixelData = bytes(8)
    ds["PixelData"].VR = "OB or OW"
    assert dataset_to_json(ds)["7FE00010"]["vr"] == "OW"


def test_un_is_binary() -> None:
    ds = explicit_le((0x00091001, "UN", b"\x00\x01"))
    assert one(ds, "00091001") == {"vr": "UN", "InlineBinary": "AAE="}


# -- object shape ----------------------------------------------------------

def unordered() -> Dataset:
    """Elements added out of tag order, with two group lengths."""
    ds = Dataset()
    ds.PatientID = "p"
    ds.add_new(0x00080000, "UL", 10)
    ds.add_new(0x00100000, "UL", 10)
    ds.Modality = "CT"
    ds.add_new(0x00090010, "LO", "CREATOR")
    return ds


def test_group_length_dropped() -> None:
    out = dataset_to_json(unordered())
    assert sorted(out) == ["00080060", "00090010", "00100020"]
    assert all(key == key.upper() and len(key) == 8 for key in out)
    assert encode(out).startswith(b'{"00080060":')


def test_keys_in_tag_order() -> None:
    assert list(dataset_to_json(unordered())) == ["00080060", "00090010", "00100020"]


def test_real_file_metadata_is_json_clean() -> None:
    ds = pydicom.dcmread(data_file("CT_small.dcm"))
    recorder = Recorder()
    out = dataset_to_json(ds, recorder)
    paths = [path for path, _ in recorder.calls]
    assert paths[-1] == "7fe00010"
    assert all(len(data) > dicomjson.INLINE_BINARY_LIMIT for _, data in recorder.calls)
    for path in paths:
        assert out[path.upper()]["BulkDataURI"] == f"bulk/{path}"
    assert out["00100010"]["Value"] == [{"Alphabetic": "CompressedSamples^CT1"}]
    assert out["00280010"] == {"vr": "US", "Value": [128]}
    assert json.loads(encode(out)) == out


# -- encode / gzip / decode ------------------------------------------------

def test_encode_is_deterministic_and_compact() -> None:
    a = {"b": [1, 2.5, None], "a": {"z": "é", "y": True}}
    b = {"a": {"y": True, "z": "é"}, "b": [1, 2.5, None]}
    assert encode(a) == encode(b) == '{"a":{"y":true,"z":"é"},"b":[1,2.5,null]}'.encode()


def test_encode_refuses_nan() -> None:
    with pytest.raises(ValueError):
        encode({"x": float("nan")})


def test_gzip_bytes_is_deterministic() -> None:
    data = encode({"a": list(range(1000))})
    one_, two = gzip_bytes(data), gzip_bytes(data)
    assert one_ == two
    assert one_[:2] == b"\x1f\x8b"
    assert one_[4:8] == b"\x00\x00\x00\x00"  # MTIME 0
    assert one_[3] & 0x08 == 0  # no FNAME
    assert gzip.decompress(one_) == data


def test_decode_gzip_and_plain() -> None:
    obj = {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Ä"}]}}
    assert decode(encode(obj)) == obj
    assert decode(gzip_bytes(encode(obj))) == obj
    assert decode(gzip.compress(encode(obj))) == obj


def test_first() -> None:
    attrs = {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "A"}, {"Alphabetic": "B"}]},
             "00100020": {"vr": "LO"}}
    assert first(attrs, "00100010") == {"Alphabetic": "A"}
    assert first(attrs, "00100020", "none") == "none"
    assert first(attrs, "00100030") is None


# -- the cache of repeated elements, on NLST-like headers ---------------------------------

class _NoCache(dict[tuple[object, ...], JsonDict]):
    """A cache that keeps nothing: every element goes through pydicom's conversion."""

    def __setitem__(self, key: tuple[object, ...], value: JsonDict) -> None:
        pass


@pytest.fixture(scope="module")
def realistic_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """NLST-like slices (bench/realistic.py): CTP's undefined lengths and defined ones, three
    series each (the last Implicit VR), three slices a series, in series order."""
    from .test_reader import load_realistic

    out = tmp_path_factory.mktemp("realistic")
    realistic = load_realistic()
    paths: list[Path] = realistic.write_realistic(out / "ctp", series=3, slices=3, size=8, seed=1)
    paths += realistic.write_realistic(out / "defined", series=3, slices=3, size=8, seed=2,
                                       undefined_lengths=False)
    return paths


def _read(path: Path) -> Dataset:
    from static_dicomweb.reader import read_instance

    return read_instance(path, path.read_bytes()).dataset


@pytest.mark.filterwarnings("ignore")
def test_cached_json_is_pydicoms_conversion(realistic_files: list[Path],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """With the cache warm (slices of the same series, pydicom's files twice), every data set
    gives the JSON (and bulk data calls) of converting each element with pydicom, uncached.

    On NLST-like headers (UN elements of known and unknown private creators, an Implicit VR
    series, sequences of undefined and defined length, nested, UTF-8) and pydicom's test files.
    """
    sources: list[tuple[Path, bool]] = [(p, True) for p in realistic_files]
    for name in sorted(get_testdata_files()):
        sources += [(Path(name), False)] * 2
    compared = 0
    for path, ours in sources:
        if ours:
            def read(path: Path = path) -> Dataset:
                return _read(path)
        else:
            def read(path: Path = path) -> Dataset:
                return pydicom.dcmread(path, stop_before_pixels=True, force=True)
        try:
            read()
        except Exception:  # pydicom's test files include broken ones on purpose
            continue
        cached_calls, reference_calls = Recorder(), Recorder()
        try:
            cached = encode(dataset_to_json(read(), cached_calls))
        except Exception:  # a file that does not convert at all: not this test's
            continue
        with monkeypatch.context() as patch:
            patch.setattr(dicomjson, "_ATTRIBUTES", _NoCache())
            reference = encode(dataset_to_json(read(), reference_calls))
        assert cached == reference, path
        assert cached_calls.calls == reference_calls.calls, path
        compared += 1
    assert compared > len(realistic_files) + 100


def test_repeated_elements_of_realistic_headers_are_not_converted_again(
        realistic_files: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """From a series' second slice on, pydicom converts only what changes from slice to slice.

    UN elements, every element of the Implicit VR series and the elements of sequence items
    repeat their bytes and come from the cache (sequences themselves are always walked).
    """
    converted: list[str] = []
    element_to_json = dicomjson.element_to_json

    def counting(elem: pydicom.DataElement, *args: object, **kwargs: object) -> JsonDict:
        if elem.VR != "SQ":
            converted.append(f"{elem.tag} {elem.VR}")
        return element_to_json(elem, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(dicomjson, "element_to_json", counting)
    series: dict[Path, int] = {}
    for path in realistic_files:
        converted.clear()
        out = dataset_to_json(_read(path))
        series[path.parent] = series.get(path.parent, 0) + 1
        if series[path.parent] > 1:
            assert len(converted) <= 25, (path, len(out), converted)
    assert len(series) == 6


def test_un_element_cached_per_private_creator() -> None:
    """The same UN bytes at the same tag under another creator: pydicom's VR, not the cached one.

    A known creator's element gets its dictionary VR (here DS, a number); an unknown one's stays
    UN (InlineBinary).
    """
    value = b"12.5"
    known = explicit_le((0x00190010, "LO", b"GEMS_ACQU_01"), (0x00191024, "UN", value))
    unknown = explicit_le((0x00190010, "LO", b"SOMEONE_ELSE"), (0x00191024, "UN", value))
    for _ in range(2):
        assert dataset_to_json(known)["00191024"] == {"vr": "DS", "Value": [12.5]}
        assert dataset_to_json(unknown)["00191024"] == {
            "vr": "UN", "InlineBinary": base64.b64encode(value).decode()}
        known, unknown = (explicit_le((0x00190010, "LO", b"GEMS_ACQU_01"), (0x00191024, "UN", value)),
                          explicit_le((0x00190010, "LO", b"SOMEONE_ELSE"), (0x00191024, "UN", value)))


def test_encode_attributes_writes_the_bytes_of_encode(realistic_files: list[Path]) -> None:
    """The JSON of attribute objects shared between slices is reused, and is what encode writes.

    From a series' second slice on most attribute objects are shared; one of them is also put
    under another key, and under a key that JSON escapes: each member names its own key.
    """
    shared: JsonDict | None = None
    for path in realistic_files:
        attrs = dataset_to_json(_read(path))
        assert dicomjson.encode_attributes(attrs) == encode(attrs), path
        shared = attrs["00080060"]
    assert shared is not None and id(shared) in dicomjson._MEMBERS
    moved = {"00080060": shared, "00080061": shared, 'a "key"\n': shared}
    assert dicomjson.encode_attributes(moved) == encode(moved)
    assert dicomjson.encode_attributes(moved) == encode(moved)
