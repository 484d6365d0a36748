"""Tests for reading Part 10 files (static_dicomweb.reader) on real pydicom test files."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import random
import struct
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import cast

import pydicom
import pytest
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, encapsulate_extended, generate_frames
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import dcmwrite, write_file_meta_info
from pydicom.uid import UID

from static_dicomweb import reader
from static_dicomweb.errors import PermanentError, RejectedInstanceError
from static_dicomweb.reader import (
    EXPLICIT_BE,
    EXPLICIT_LE,
    IMPLICIT_LE,
    SYNTAXES,
    SourceInstance,
    _read_header,
    read_instance,
    syntax_info,
)

RLE = "1.2.840.10008.1.2.5"
ROOT = Path(__file__).resolve().parent.parent
MPEG2 = "1.2.840.10008.1.2.4.100"

pytestmark = pytest.mark.filterwarnings(
    "ignore:Invalid value for VR UI", "ignore:The value length", "ignore:Expected .* VR, but found",
    "ignore:End of file reached before delimiter")


def data_file(name: str) -> Path:
    path = get_testdata_file(name)
    assert path is not None, name
    return Path(path)


def load(name: str) -> Dataset:
    return pydicom.dcmread(data_file(name))


def write(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def modified(tmp_path: Path, name: str, change: Callable[[Dataset], None]) -> Path:
    ds = load(name)
    change(ds)
    return write(ds, tmp_path / f"modified-{name}")


def with_meta_syntax(tmp_path: Path, name: str, syntax: str) -> Path:
    """``name`` with its file meta claiming ``syntax`` while the data set stays as it is."""
    ds = load(name)
    meta = ds.file_meta
    meta.TransferSyntaxUID = UID(syntax)
    head = DicomBytesIO()
    head.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(head, meta, enforce_standard=True)
    del ds.file_meta
    ds.preamble = None
    body = io.BytesIO()
    dcmwrite(body, ds, implicit_vr=False, little_endian=True, enforce_file_format=False)
    path = tmp_path / f"claims-{syntax}.dcm"
    path.write_bytes(head.getvalue() + body.getvalue())
    return path


def rejected(path: Path, data: bytes | None = None) -> RejectedInstanceError:
    with pytest.raises(RejectedInstanceError) as info:
        read_instance(path, data)
    error = info.value
    assert str(error).startswith(f"{path}: ")
    assert error.path == str(path)
    assert isinstance(error, PermanentError)
    return error


# -- accepted files ----------------------------------------------------------

def test_ct_small_is_read() -> None:
    path = data_file("CT_small.dcm")
    inst = read_instance(path)
    ds = load("CT_small.dcm")
    assert isinstance(inst, SourceInstance)
    assert inst.path == str(path)
    assert inst.p10 == path.read_bytes()
    assert (inst.study, inst.series, inst.sop, inst.sop_class) == (
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.SOPClassUID)
    assert inst.syntax.uid == EXPLICIT_LE
    assert inst.syntax.native
    assert len(inst.sha256) == 64
    assert inst.number_of_frames == 1


def test_read_from_bytes_uses_the_bytes(tmp_path: Path) -> None:
    data = data_file("CT_small.dcm").read_bytes()
    inst = read_instance(tmp_path / "not-on-disk.dcm", data)
    assert inst.p10 == data
    assert inst.path == str(tmp_path / "not-on-disk.dcm")


def test_sha256_depends_on_bytes(tmp_path: Path) -> None:
    a = read_instance(data_file("CT_small.dcm"))
    b = read_instance(data_file("CT_small.dcm"))
    c = read_instance(modified(tmp_path, "CT_small.dcm", lambda ds: setattr(ds, "PatientID", "other")))
    assert a.sha256 == b.sha256 != c.sha256


def test_native_single_frame_equals_pixel_data() -> None:
    inst = read_instance(data_file("CT_small.dcm"))
    assert inst.frames == [load("CT_small.dcm").PixelData]
    assert len(inst.frames[0]) == 128 * 128 * 2


def test_native_multi_frame_rgb() -> None:
    ds = load("SC_rgb_2frame.dcm")
    inst = read_instance(data_file("SC_rgb_2frame.dcm"))
    assert inst.number_of_frames == 2
    first, second = inst.frames
    assert len(first) == len(second) == ds.Rows * ds.Columns * 3
    assert bytes(first) + bytes(second) == ds.PixelData
    assert bytes(first) != bytes(second)


def test_native_odd_length_frame_drops_padding() -> None:
    ds = load("SC_rgb_small_odd.dcm")
    (frame,) = read_instance(data_file("SC_rgb_small_odd.dcm")).frames
    size = ds.Rows * ds.Columns * ds.SamplesPerPixel * ds.BitsAllocated // 8
    assert size % 2 == 1
    assert frame == ds.PixelData[:size]


def test_implicit_little_endian() -> None:
    inst = read_instance(data_file("MR_small_implicit.dcm"))
    assert inst.syntax.uid == IMPLICIT_LE
    assert inst.frames == read_instance(data_file("MR_small.dcm")).frames


def test_big_endian_frames_equal_little_endian() -> None:
    big = read_instance(data_file("MR_small_bigendian.dcm"))
    little = read_instance(data_file("MR_small.dcm"))
    assert big.syntax.uid == EXPLICIT_BE
    assert big.syntax.frame_syntax == EXPLICIT_LE
    assert big.frames == little.frames
    assert big.frames[0] != load("MR_small_bigendian.dcm").PixelData  # byte-swapped


def test_deflated_frames() -> None:
    inst = read_instance(data_file("image_dfl.dcm"))
    assert inst.syntax.uid == "1.2.840.10008.1.2.1.99"
    ds = load("image_dfl.dcm")
    (frame,) = inst.frames
    assert frame == ds.PixelData[:ds.Rows * ds.Columns * ds.BitsAllocated // 8]


def test_one_bit_multi_frame_seg() -> None:
    ds = load("liver.dcm")
    inst = read_instance(data_file("liver.dcm"))
    count = int(ds.NumberOfFrames)
    assert ds.BitsAllocated == 1 and count > 1
    size = -(-ds.Rows * ds.Columns // 8)
    assert [len(f) for f in inst.frames] == [size] * count
    assert b"".join(inst.frames) == ds.PixelData[:size * count]


def _bits(data: bytes | memoryview, start: int, count: int) -> list[int]:
    return [(data[(start + i) // 8] >> ((start + i) % 8)) & 1 for i in range(count)]


def test_one_bit_frames_not_on_byte_boundaries(tmp_path: Path) -> None:
    """3x3 frames: 9 bits each, so frame 2 starts in the middle of a byte."""
    ds = load("liver.dcm")
    del ds.PerFrameFunctionalGroupsSequence
    ds.Rows, ds.Columns, ds.NumberOfFrames = 3, 3, 3
    packed = bytes([0b10110101, 0b01101110, 0b11010011, 0b00000101])  # 27 bits used
    ds.PixelData = packed
    inst = read_instance(write(ds, tmp_path / "odd-bits.dcm"))
    assert [len(f) for f in inst.frames] == [2, 2, 2]
    for number, frame in enumerate(inst.frames):
        assert _bits(frame, 0, 9) == _bits(packed, 9 * number, 9)
        assert _bits(frame, 9, 7) == [0] * 7  # padding bits are zero


def test_encapsulated_rle_frames_match_pydicom() -> None:
    ds = load("SC_rgb_rle_2frame.dcm")
    inst = read_instance(data_file("SC_rgb_rle_2frame.dcm"))
    assert inst.syntax.uid == RLE and not inst.syntax.native
    assert inst.syntax.frame_syntax == RLE
    assert inst.frames == list(generate_frames(ds.PixelData, number_of_frames=2))


def test_encapsulated_j2k_without_offset_table() -> None:
    ds = load("emri_small_jpeg_2k_lossless.dcm")
    inst = read_instance(data_file("emri_small_jpeg_2k_lossless.dcm"))
    count = int(ds.NumberOfFrames)
    assert inst.frames == list(generate_frames(ds.PixelData, number_of_frames=count))
    assert len(inst.frames) == count
    assert all(frame[:2] == b"\xff\x4f" for frame in inst.frames)  # J2K codestream SOC


def rle_frames() -> list[bytes]:
    return list(generate_frames(load("SC_rgb_rle_2frame.dcm").PixelData, number_of_frames=2))


def test_basic_offset_table_with_fragmented_frames(tmp_path: Path) -> None:
    frames = rle_frames()
    ds = load("SC_rgb_rle_2frame.dcm")
    ds.PixelData = encapsulate(frames, fragments_per_frame=3, has_bot=True)
    inst = read_instance(write(ds, tmp_path / "bot.dcm"))
    assert inst.frames == frames
    assert inst.frames == list(generate_frames(ds.PixelData, number_of_frames=2))


def test_extended_offset_table(tmp_path: Path) -> None:
    frames = rle_frames()
    ds = load("SC_rgb_rle_2frame.dcm")
    data, offsets, lengths = encapsulate_extended(frames)
    ds.PixelData = data
    ds.ExtendedOffsetTable = offsets
    ds.ExtendedOffsetTableLengths = lengths
    inst = read_instance(write(ds, tmp_path / "eot.dcm"))
    assert inst.frames == frames
    assert inst.frames == list(generate_frames(data, number_of_frames=2,
                                               extended_offsets=(offsets, lengths)))


def test_extended_offset_table_on_j2k_frames(tmp_path: Path) -> None:
    ds = load("emri_small_jpeg_2k_lossless.dcm")
    frames = list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))
    ds.PixelData, ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = encapsulate_extended(frames)
    assert read_instance(write(ds, tmp_path / "eot-j2k.dcm")).frames == frames


def test_file_without_preamble_is_reencoded_as_part10(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    ds = load("CT_small.dcm")
    del ds.file_meta
    ds.preamble = None
    path = tmp_path / "bare.dcm"
    dcmwrite(path, ds, implicit_vr=False, little_endian=True, enforce_file_format=False)
    raw = path.read_bytes()
    assert raw[128:132] != b"DICM"
    inst = read_instance(path)
    assert inst.p10[:128] == b"\x00" * 128
    assert inst.p10[128:132] == b"DICM"
    again = pydicom.dcmread(io.BytesIO(inst.p10))
    assert again.file_meta.TransferSyntaxUID == EXPLICIT_LE
    assert again.file_meta.MediaStorageSOPInstanceUID == inst.sop
    assert again.file_meta.MediaStorageSOPClassUID == inst.sop_class
    assert again.PixelData == load("CT_small.dcm").PixelData
    assert inst.frames == [load("CT_small.dcm").PixelData]
    assert "no Part 10 header" in caplog.text


def test_implicit_file_without_preamble(tmp_path: Path) -> None:
    ds = load("CT_small.dcm")
    del ds.file_meta
    ds.preamble = None
    path = tmp_path / "bare-implicit.dcm"
    dcmwrite(path, ds, implicit_vr=True, little_endian=True, enforce_file_format=False)
    inst = read_instance(path)
    assert inst.syntax.uid == IMPLICIT_LE
    assert pydicom.dcmread(io.BytesIO(inst.p10)).file_meta.TransferSyntaxUID == IMPLICIT_LE


def test_no_pixel_data_has_no_frames() -> None:
    inst = read_instance(data_file("rtplan.dcm"))  # RT Plan: no image
    assert inst.sop_class == "1.2.840.10008.5.1.4.1.1.481.5"
    assert inst.number_of_frames == 0
    assert inst.frames == []


def test_image_attributes_without_pixel_data_are_rejected(tmp_path: Path) -> None:
    path = modified(tmp_path, "CT_small.dcm", lambda ds: delattr(ds, "PixelData"))
    assert "(7FE0,0010)" in rejected(path).reason


# -- rejected files ----------------------------------------------------------

def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.dcm"
    path.write_bytes(b"")
    assert "empty" in rejected(path).reason


def test_missing_file(tmp_path: Path) -> None:
    assert "cannot be read" in rejected(tmp_path / "absent.dcm").reason


def test_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "random.dcm"
    path.write_bytes(random.Random(1).randbytes(4000))
    assert "not" in rejected(path).reason


def test_text_file(tmp_path: Path) -> None:
    path = tmp_path / "readme.dcm"
    path.write_bytes(b"This is not DICOM at all.\n" * 20)
    assert "not" in rejected(path).reason


def test_preamble_and_garbage(tmp_path: Path) -> None:
    path = tmp_path / "garbage.dcm"
    path.write_bytes(b"\x00" * 128 + b"DICM" + random.Random(2).randbytes(300))
    rejected(path)


def test_truncated_file(tmp_path: Path) -> None:
    raw = data_file("CT_small.dcm").read_bytes()
    path = tmp_path / "truncated.dcm"
    path.write_bytes(raw[:len(raw) // 2])
    error = rejected(path)
    assert "truncated.dcm" in str(error)
    assert "truncated" in error.reason and "(7FE0,0010)" in error.reason


@pytest.mark.parametrize("fraction", [0.05, 0.2, 0.5, 0.9, 0.99])
def test_truncated_encapsulated_is_rejected(tmp_path: Path, fraction: float) -> None:
    raw = data_file("SC_rgb_rle_2frame.dcm").read_bytes()
    path = tmp_path / "cut.dcm"
    path.write_bytes(raw[:int(len(raw) * fraction)])
    rejected(path)


def test_truncated_encapsulated_reason_is_not_a_missing_uid(tmp_path: Path) -> None:
    raw = data_file("SC_rgb_rle_2frame.dcm").read_bytes()
    path = tmp_path / "cut.dcm"
    path.write_bytes(raw[:len(raw) - 100])
    assert "StudyInstanceUID" not in rejected(path).reason


@pytest.mark.parametrize("cut", [1000, 5000, 6290])
def test_truncated_before_pixel_data_is_rejected(tmp_path: Path, cut: int) -> None:
    """Cuts inside elements before (7FE0,0010), which pydicom reads as a shorter data set."""
    raw = data_file("CT_small.dcm").read_bytes()
    path = tmp_path / "cut-before-pixels.dcm"
    path.write_bytes(raw[:cut])
    rejected(path)


def test_segmentation_cut_at_an_element_boundary_is_rejected(tmp_path: Path) -> None:
    raw = data_file("liver.dcm").read_bytes()
    rows = raw.find(b"\x28\x00\x10\x00US")
    assert rows > 0
    path = tmp_path / "cut-seg.dcm"
    path.write_bytes(raw[:rows])
    rejected(path)


def test_truncated_native_pixel_data(tmp_path: Path) -> None:
    path = modified(tmp_path, "CT_small.dcm", lambda ds: setattr(ds, "PixelData", ds.PixelData[:100]))
    reason = rejected(path).reason
    assert "truncated" in reason and "32768" in reason


def test_too_few_encapsulated_frames(tmp_path: Path) -> None:
    path = modified(tmp_path, "SC_rgb_rle_2frame.dcm", lambda ds: setattr(ds, "NumberOfFrames", 3))
    assert "NumberOfFrames" in rejected(path).reason


@pytest.mark.parametrize("keyword", ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
                                     "SOPClassUID"])
def test_missing_uid(tmp_path: Path, keyword: str) -> None:
    path = modified(tmp_path, "CT_small.dcm", lambda ds: delattr(ds, keyword))
    assert keyword in rejected(path).reason


def test_empty_uid(tmp_path: Path) -> None:
    path = modified(tmp_path, "CT_small.dcm", lambda ds: setattr(ds, "SeriesInstanceUID", ""))
    assert "SeriesInstanceUID" in rejected(path).reason


@pytest.mark.parametrize("value", ["1.2/../3", "1.2.3..", "1." + "2" * 68, "../../etc", "1.2.a"])
def test_unsafe_sop_instance_uid(tmp_path: Path, value: str) -> None:
    path = modified(tmp_path, "CT_small.dcm", lambda ds: setattr(ds, "SOPInstanceUID", value))
    error = rejected(path)
    assert "SOPInstanceUID" in error.reason
    assert "(0008,0018)" in error.reason


def test_unsafe_study_uid(tmp_path: Path) -> None:
    path = modified(tmp_path, "CT_small.dcm", lambda ds: setattr(ds, "StudyInstanceUID", "1/2"))
    assert "StudyInstanceUID" in rejected(path).reason


def test_unsupported_transfer_syntax(tmp_path: Path) -> None:
    path = with_meta_syntax(tmp_path, "CT_small.dcm", MPEG2)
    reason = rejected(path).reason
    assert "not supported" in reason and MPEG2 in reason


def test_native_pixels_under_encapsulated_syntax(tmp_path: Path) -> None:
    path = with_meta_syntax(tmp_path, "CT_small.dcm", RLE)
    reason = rejected(path).reason
    assert "native" in reason and "RLE Lossless" in reason


def test_encapsulated_pixels_under_native_syntax(tmp_path: Path) -> None:
    path = with_meta_syntax(tmp_path, "SC_rgb_rle_2frame.dcm", EXPLICIT_LE)
    assert b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff" in path.read_bytes()
    reason = rejected(path).reason
    assert "encapsulated" in reason and "Explicit VR Little Endian" in reason


def test_corrupt_bytes_never_escape_as_other_errors(tmp_path: Path) -> None:
    """Whatever a damaged file holds, the result is an instance or a RejectedInstanceError."""
    rng = random.Random(3)
    raw = bytearray(data_file("CT_small.dcm").read_bytes())
    header_end = 128 + 4 + 200
    for _ in range(60):
        damaged = bytearray(raw)
        for _ in range(4):
            damaged[rng.randrange(header_end, len(raw) - 32768)] = rng.randrange(256)
        with contextlib.suppress(RejectedInstanceError):
            read_instance(tmp_path / "damaged.dcm", bytes(damaged))


def test_unknown_vr_is_rejected(tmp_path: Path) -> None:
    raw = data_file("CT_small.dcm").read_bytes()
    tag = b"\x28\x00\x00\x01US"
    assert raw.count(tag) == 1
    path = tmp_path / "bad-vr.dcm"
    path.write_bytes(raw.replace(tag, b"\x28\x00\x00\x01\x55\x16"))
    rejected(path)


def test_corrupt_pixel_description(tmp_path: Path) -> None:
    path = modified(tmp_path, "CT_small.dcm", lambda ds: delattr(ds, "Rows"))
    assert "pixel description incomplete" in rejected(path).reason


# -- syntax_info -------------------------------------------------------------

def test_syntax_info_known() -> None:
    info = syntax_info("1.2.840.10008.1.2.4.90", "f.dcm")
    assert (info.media_type, info.native, info.frame_syntax) == ("image/jp2", False,
                                                                 "1.2.840.10008.1.2.4.90")
    native = syntax_info(IMPLICIT_LE, "f.dcm")
    assert (native.media_type, native.native, native.frame_syntax) == (
        "application/octet-stream", True, EXPLICIT_LE)


def test_syntax_info_unknown_names_file_and_uid() -> None:
    with pytest.raises(RejectedInstanceError, match=r"^f\.dcm: transfer syntax 1\.2\.3 is not supported"):
        syntax_info("1.2.3", "f.dcm")


@pytest.mark.parametrize("uid", sorted(SYNTAXES))
def test_every_listed_syntax_has_a_decoder_here(uid: str) -> None:
    """The test environment installs every plugin the package depends on."""
    info = syntax_info(uid, "f.dcm")
    assert info.uid == uid
    assert info.media_type.startswith(("image/", "application/octet-stream"))


def test_media_types_follow_ps3_18() -> None:
    expected = {"1.2.840.10008.1.2.4.50": "image/jpeg", "1.2.840.10008.1.2.4.57": "image/jpeg",
                "1.2.840.10008.1.2.4.70": "image/jpeg", "1.2.840.10008.1.2.4.80": "image/jls",
                "1.2.840.10008.1.2.4.81": "image/jls", "1.2.840.10008.1.2.4.90": "image/jp2",
                "1.2.840.10008.1.2.4.91": "image/jp2", "1.2.840.10008.1.2.4.201": "image/jphc",
                "1.2.840.10008.1.2.5": "image/dicom-rle"}
    for uid, media_type in expected.items():
        assert SYNTAXES[uid].media_type == media_type, uid



# -- the header reader for plain files ---------------------------------------------

def load_realistic() -> ModuleType:
    """``bench/realistic.py``, the generator of NLST-like headers (bench/ is not a package)."""
    if "realistic" not in sys.modules:
        spec = importlib.util.spec_from_file_location("realistic", ROOT / "bench" / "realistic.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["realistic"] = module  # its dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules["realistic"]


@pytest.fixture(scope="module")
def realistic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """NLST-like headers as CTP writes them (undefined lengths) and as pydicom does, small slices.

    Three series each: the last in Implicit VR Little Endian.
    """
    out = tmp_path_factory.mktemp("realistic")
    realistic = load_realistic()
    realistic.write_realistic(out / "ctp", series=3, slices=2, size=8, seed=1)
    realistic.write_realistic(out / "defined", series=3, slices=2, size=8, seed=2,
                              undefined_lengths=False)
    return out


def assert_same_element(mine: object, theirs: object, where: tuple[object, ...]) -> None:
    """The same element as pydicom reads it; sequences item by item, their raw elements too."""
    assert type(mine) is type(theirs), where
    if isinstance(theirs, RawDataElement):
        assert tuple(cast(RawDataElement, mine)) == tuple(theirs), where
        return
    assert isinstance(mine, DataElement) and isinstance(theirs, DataElement)
    assert (mine.tag, mine.VR, mine.file_tell, mine.is_undefined_length) == (
        theirs.tag, theirs.VR, theirs.file_tell, theirs.is_undefined_length), where
    if theirs.VR != "SQ":
        assert mine.value == theirs.value, where
        return
    assert mine.value.is_undefined_length == theirs.value.is_undefined_length, where
    assert len(mine.value) == len(theirs.value), where
    for index, (item, ref) in enumerate(zip(mine.value, theirs.value, strict=True)):
        assert_same_dataset(item, ref, (*where, index))


def assert_same_dataset(ds: Dataset, ref: Dataset, where: tuple[object, ...]) -> None:
    """The same elements, undecoded, encodings and item flags as pydicom's data set."""
    assert list(ds.keys()) == list(ref.keys()), where
    for tag in ref.keys():  # noqa: SIM118 (iterating a Dataset decodes its elements)
        assert_same_element(ds.get_item(tag), ref.get_item(tag), (*where, tag))
    assert ds.original_encoding == ref.original_encoding, where
    assert ds.original_character_set == ref.original_character_set, where
    assert ds._character_set == ref._character_set, where
    assert ds.is_undefined_length_sequence_item == ref.is_undefined_length_sequence_item, where
    assert getattr(ds, "file_tell", None) == getattr(ref, "file_tell", None), where
    assert getattr(ds, "seq_item_tell", None) == getattr(ref, "seq_item_tell", None), where


def test_header_reader_gives_what_pydicom_reads(sample_dir: Path, realistic_dir: Path) -> None:
    """Wherever ``_read_header`` reads a file itself, it gives ``dcmread(stop_before_pixels)``.

    The same elements (undecoded: VR, length, value, offset; sequences of undefined length
    parsed into the same items), file meta, encodings and the offset where reading stopped;
    over every pydicom test file, the sample's series and NLST-like headers.
    """
    paths = [Path(p) for p in get_testdata_files() if Path(p).is_file()]
    paths += sorted(sample_dir.rglob("*.dcm"))
    paths += sorted(realistic_dir.rglob("*.dcm"))
    read = []
    for path in paths:
        raw = path.read_bytes()
        if raw[128:132] != b"DICM":
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = _read_header(raw)
            if got is None:
                continue
            fp = io.BytesIO(raw)
            ref = pydicom.dcmread(fp, stop_before_pixels=True)
        ds, stopped, syntax = got
        assert syntax == str(ref.file_meta.TransferSyntaxUID), path
        assert stopped == fp.tell(), path
        assert_same_dataset(ds, ref, (path,))
        assert ds.preamble == ref.preamble, path
        assert list(ds.file_meta.keys()) == list(ref.file_meta.keys()), path
        for tag in ref.file_meta.keys():  # noqa: SIM118
            assert ds.file_meta[tag].value == ref.file_meta[tag].value, (path, tag)
        read.append(path)
    assert len(read) > 80
    assert {EXPLICIT_LE, IMPLICIT_LE} <= {
        str(pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID) for p in read}
    assert set(realistic_dir.rglob("*.dcm")) <= set(read)  # CTP's sequences stay on this path


def test_header_reader_reads_undefined_length_sequences(realistic_dir: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """CTP's delimited sequences, nested ones and UN ones of undefined length, read by the
    header reader itself (pydicom's ``read_sequence`` is not needed for them)."""
    def not_needed(*args: object) -> None:
        raise AssertionError("pydicom's read_sequence was used")

    monkeypatch.setattr(reader, "read_sequence", not_needed)
    for path in sorted((realistic_dir / "ctp").rglob("*.dcm")):
        got = _read_header(path.read_bytes())
        assert got is not None, path
        sequences = [e for e in got[0].elements() if isinstance(e, DataElement) and e.VR == "SQ"]
        assert sequences and all(e.is_undefined_length for e in sequences), path
        nested = [e for s in sequences for item in s.value for e in item.elements()
                  if isinstance(e, DataElement) and e.VR == "SQ"]
        assert nested, path


def test_header_reader_leaves_unusual_files_to_pydicom() -> None:
    for name in ("MR_small_bigendian.dcm", "image_dfl.dcm", "emri_small_jpeg_2k_lossless.dcm"):
        assert _read_header(data_file(name).read_bytes()) is None, name
    raw = data_file("CT_small.dcm").read_bytes()
    assert _read_header(raw) is not None
    assert _read_header(raw[:1000]) is None  # cut short: pydicom decides what that is


def _explicit(group: int, element: int, vr: bytes, value: bytes, *, undefined: bool = False) -> bytes:
    """One Explicit VR Little Endian element (of undefined length when ``undefined``)."""
    if vr in (b"SQ", b"OB", b"UN"):
        length = 0xFFFFFFFF if undefined else len(value)
        return struct.pack("<HH2sHL", group, element, vr, 0, length) + value
    return struct.pack("<HH2sH", group, element, vr, len(value)) + value


def _item(content: bytes, *, length: int | None = None, delimited: bool = True) -> bytes:
    """A sequence item: of ``length`` (default: its content's), or undefined and ``delimited``."""
    if length is None:
        return struct.pack("<HHL", 0xFFFE, 0xE000, len(content)) + content
    end = struct.pack("<HHL", 0xFFFE, 0xE00D, 0) if delimited else b""
    return struct.pack("<HHL", 0xFFFE, 0xE000, length) + content + end


def _with_sequence(items: bytes, *, meta: bytes = b"") -> bytes:
    """A Part 10 file whose data set holds a sequence of undefined length of ``items``."""
    syntax = _explicit(0x0002, 0x0010, b"UI", b"1.2.840.10008.1.2.1\x00")
    body = (_explicit(0x0008, 0x0016, b"UI", b"1.2.840.10008.5.1.4.1.1.7\x00")
            + _explicit(0x0008, 0x0018, b"UI", b"1.2.3.4\x00")
            + _explicit(0x0008, 0x1140, b"SQ", items, undefined=True)
            + _explicit(0x0010, 0x0010, b"PN", b"Doe^Jane"))
    return b"\x00" * 128 + b"DICM" + syntax + meta + body


def test_header_reader_reads_items_of_both_lengths_and_leaves_odd_ones_to_pydicom() -> None:
    """Items of defined and undefined length are read here.  An item delimitation inside an item of
    defined length, or an item of undefined length that the file ends in, is left to pydicom's
    ``read_sequence``; a sequence in the file meta information to ``dcmread``."""
    element = _explicit(0x0008, 0x1155, b"UI", b"1.2.3.5\x00")
    end = struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
    delimiter = struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
    cases = {"plain": _item(element) + _item(element, length=0xFFFFFFFF) + end,
             "delimiter inside": _item(element + delimiter) + end,
             "not delimited": _item(element, length=0xFFFFFFFF, delimited=False)}
    for case, items in cases.items():
        raw = _with_sequence(items)
        own = reader._sequence_items(raw, len(raw) - len(items) - 16, False, "iso8859")
        assert (own is not None) == (case == "plain"), case
        got = _read_header(raw)
        if got is not None:  # else pydicom could not read the sequence either: dcmread decides
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ref = pydicom.dcmread(io.BytesIO(raw), stop_before_pixels=True)
            assert_same_dataset(got[0], ref, (case,))
    in_meta = _explicit(0x0002, 0x0100, b"SQ", _item(element) + end, undefined=True)
    assert _read_header(_with_sequence(cases["plain"], meta=in_meta)) is None
