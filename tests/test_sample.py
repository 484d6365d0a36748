"""Tests for the synthetic CT data set generator (static_dicomweb_sample)."""

from __future__ import annotations

import re
import struct
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import parse_basic_offsets
from pydicom.uid import (
    UID,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)

from static_dicomweb_sample import (
    FRAME_COUNT,
    IMPLEMENTATION_CLASS_UID,
    LOCALIZER_IMAGES,
    PRIVATE_BULK_LENGTH,
    PRIVATE_CREATOR,
    UID_ROOT,
    UN_PRIVATE_CREATOR,
    SampleSpec,
    generate_sample,
    phantom_seed,
    phantom_volume,
    spine_mask,
)

SMALL = SampleSpec(slices=8, rows=64, columns=64)
NATIVE_ONLY = SampleSpec(slices=8, rows=64, columns=64, transfer_syntaxes=(ExplicitVRLittleEndian,))
UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    out = tmp_path_factory.mktemp("small")
    return out, generate_sample(out, SMALL)


@pytest.fixture(scope="module")
def datasets(small: tuple[Path, list[Path]]) -> dict[Path, Dataset]:
    return {p: pydicom.dcmread(p) for p in small[1]}


@pytest.fixture(scope="module")
def native_by_sop(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Dataset]:
    """The same data set written with Explicit VR LE only, keyed by SOP Instance UID."""
    out = tmp_path_factory.mktemp("native")
    result: dict[str, Dataset] = {}
    for p in generate_sample(out, NATIVE_ONLY):
        ds = pydicom.dcmread(p)
        result[ds.SOPInstanceUID] = ds
    return result


def _uids(ds: Dataset) -> Iterator[str]:
    for elem in ds.iterall():
        if elem.VR == "UI" and elem.value:
            values = elem.value if elem.VM > 1 else [elem.value]
            yield from (str(v) for v in values)


def _series_kind(ds: Dataset) -> str:
    if ds.SOPClassUID == EnhancedCTImageStorage:
        return "enhanced"
    if "LOCALIZER" in ds.ImageType:
        return "localizer"
    return "axial"


# --- files and determinism --------------------------------------------------


def test_deterministic_bytes(tmp_path: Path) -> None:
    first = generate_sample(tmp_path / "a", SMALL)
    second = generate_sample(tmp_path / "b", SMALL)
    rel_a = [p.relative_to(tmp_path / "a") for p in first]
    rel_b = [p.relative_to(tmp_path / "b") for p in second]
    assert rel_a == rel_b
    assert first == sorted(first)
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes(), a


def test_seed_changes_uids_and_pixels(tmp_path: Path, datasets: dict[Path, Dataset]) -> None:
    other = generate_sample(tmp_path, SampleSpec(slices=8, rows=64, columns=64, seed=7))
    other_uids = {pydicom.dcmread(p).SOPInstanceUID for p in other}
    assert len(other) == len(datasets)
    assert other_uids.isdisjoint({ds.SOPInstanceUID for ds in datasets.values()})
    assert not np.array_equal(phantom_volume(4, 32, 32, 0), phantom_volume(4, 32, 32, 7))


def test_layout_and_counts(small: tuple[Path, list[Path]], datasets: dict[Path, Dataset]) -> None:
    out, paths = small
    # 2 patients x (localizer 2 + axial 8 + bone 8) + 2 multi-frame instances
    assert len(paths) == 2 * (LOCALIZER_IMAGES + 2 * SMALL.slices) + 2
    per_series: Counter[tuple[str, str]] = Counter()
    studies: defaultdict[str, set[str]] = defaultdict(set)
    for p, ds in datasets.items():
        rel = p.relative_to(out).parts
        assert rel == (
            ds.PatientID,
            ds.StudyInstanceUID,
            ds.SeriesInstanceUID,
            f"{int(ds.InstanceNumber):04d}.dcm",
        )
        per_series[(ds.SeriesInstanceUID, _series_kind(ds))] += 1
        studies[ds.PatientID].add(ds.StudyInstanceUID)
    assert {k: len(v) for k, v in studies.items()} == {"SDW0-P001": 1, "SDW0-P002": 1}
    kinds = Counter(kind for (_, kind) in per_series)
    assert kinds == {"localizer": 2, "axial": 4, "enhanced": 2}
    for (_, kind), n in per_series.items():
        expected = {"localizer": LOCALIZER_IMAGES, "axial": SMALL.slices, "enhanced": 1}[kind]
        assert n == expected
    sops = [ds.SOPInstanceUID for ds in datasets.values()]
    assert len(set(sops)) == len(sops)


def test_part10_file_meta(datasets: dict[Path, Dataset]) -> None:
    for p, ds in datasets.items():
        raw = p.read_bytes()
        assert raw[128:132] == b"DICM"
        meta = ds.file_meta
        assert meta.MediaStorageSOPClassUID == ds.SOPClassUID
        assert meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
        assert meta.FileMetaInformationVersion == b"\x00\x01"
        assert meta.TransferSyntaxUID in SMALL.transfer_syntaxes
        implicit, little = ds.original_encoding
        assert little is True
        assert implicit is (meta.TransferSyntaxUID == ImplicitVRLittleEndian)
        assert ds.PixelData


def test_implicit_files_are_truly_implicit(datasets: dict[Path, Dataset]) -> None:
    implicit = [p for p, ds in datasets.items() if ds.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian]
    assert implicit
    for p in implicit:
        raw = p.read_bytes()
        # (0002,0000) UL group length: 132 + 8 (tag, VR, length) + 4 (value)
        assert raw[132:138] == b"\x02\x00\x00\x00UL"
        body = 144 + struct.unpack("<I", raw[140:144])[0]
        group, element, length = struct.unpack("<HHI", raw[body : body + 8])
        assert group == 0x0008 and element in (0x0005, 0x0008)
        assert not raw[body + 4 : body + 6].isalpha()  # no explicit VR
        assert length < 1000


def test_uids_valid(datasets: dict[Path, Dataset]) -> None:
    for ds in datasets.values():
        uids = list(_uids(ds)) + list(_uids(ds.file_meta))
        assert len(uids) >= 8
        for value in uids:
            assert len(value) <= 64, value
            assert UID_RE.match(value), value
            assert UID(value).is_valid, value
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
            assert str(ds[keyword].value).startswith(UID_ROOT)


def test_transfer_syntaxes_all_occur(datasets: dict[Path, Dataset]) -> None:
    used = {ds.file_meta.TransferSyntaxUID for ds in datasets.values()}
    assert used == set(SMALL.transfer_syntaxes)
    # single-frame series i uses transfer_syntaxes[i % len] (patient, SeriesNumber order)
    series: dict[tuple[str, int], UID] = {}
    for ds in datasets.values():
        if ds.SOPClassUID == CTImageStorage:
            series[(ds.PatientID, int(ds.SeriesNumber))] = ds.file_meta.TransferSyntaxUID
    ordered = [series[k] for k in sorted(series)]
    n = len(SMALL.transfer_syntaxes)
    assert ordered == [SMALL.transfer_syntaxes[i % n] for i in range(len(ordered))]


# --- content ------------------------------------------------------------------


def test_pixels_match_phantom(datasets: dict[Path, Dataset]) -> None:
    volumes = {
        j: phantom_volume(SMALL.slices, SMALL.rows, SMALL.columns, phantom_seed(SMALL.seed, j))
        for j in range(SMALL.patients * SMALL.studies_per_patient)
    }
    checked = 0
    for ds in datasets.values():
        arr = ds.pixel_array
        signed = ds.PixelRepresentation == 1
        assert arr.dtype == (np.int16 if signed else np.uint16)
        if _series_kind(ds) != "axial":
            continue
        hu = volumes[int(ds.StudyID) - 1][int(ds.InstanceNumber) - 1]
        expected = hu if signed else hu.astype(np.int32) + 1024
        np.testing.assert_array_equal(arr, expected)
        assert np.array_equal(arr * float(ds.RescaleSlope) + float(ds.RescaleIntercept), hu)
        checked += 1
    assert checked == 4 * SMALL.slices


def test_lossless_round_trip_all_instances(
    datasets: dict[Path, Dataset], native_by_sop: dict[str, Dataset]
) -> None:
    # Same seed → same UIDs whatever the transfer syntax: compare with native encoding.
    # Only the JPEG 2000 multi-frame instance has no native twin: compare it with
    # the native multi-frame instance, which shows the same frames.
    mf_native = next(d for d in native_by_sop.values() if d.SOPClassUID == EnhancedCTImageStorage)
    missing = set()
    for ds in datasets.values():
        ref = native_by_sop.get(ds.SOPInstanceUID)
        if ref is None:
            missing.add(ds.file_meta.TransferSyntaxUID)
            assert ds.SOPClassUID == EnhancedCTImageStorage
            np.testing.assert_array_equal(ds.pixel_array, mf_native.pixel_array)
            continue
        assert ref.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        np.testing.assert_array_equal(ds.pixel_array, ref.pixel_array)
        assert ds.SeriesInstanceUID == ref.SeriesInstanceUID
    assert missing == {JPEG2000Lossless}
    assert len(native_by_sop) == len(datasets) - 1


def test_bit_depths(datasets: dict[Path, Dataset]) -> None:
    kinds = set()
    for ds in datasets.values():
        assert ds.BitsAllocated == 16 and ds.SamplesPerPixel == 1
        assert ds.PhotometricInterpretation == "MONOCHROME2"
        if ds.PixelRepresentation == 0:
            assert (ds.BitsStored, ds.HighBit) == (12, 11)
            assert int(ds.pixel_array.max()) <= 4095
        else:
            assert (ds.BitsStored, ds.HighBit) == (16, 15)
            assert ds.RescaleIntercept == 0
            assert ds.pixel_array.min() < 0
        if ds.SOPClassUID == CTImageStorage:
            assert ds.RescaleIntercept == (-1024 if ds.PixelRepresentation == 0 else 0)
            assert ds.RescaleSlope == 1 and ds.RescaleType == "HU"
        kinds.add(int(ds.PixelRepresentation))
    assert kinds == {0, 1}


def test_realistic_ct_tags(datasets: dict[Path, Dataset]) -> None:
    common = [
        "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
        "StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName", "StudyID",
        "StudyDescription", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription",
        "Manufacturer", "SOPClassUID", "SOPInstanceUID", "InstanceNumber", "ImageType",
        "FrameOfReferenceUID", "KVP", "Rows", "Columns",
    ]  # fmt: skip
    single = [
        "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness",
        "SliceLocation", "RescaleIntercept", "RescaleSlope", "RescaleType", "WindowCenter",
        "WindowWidth",
    ]  # fmt: skip
    for ds in datasets.values():
        for keyword in common + (single if ds.SOPClassUID == CTImageStorage else []):
            assert keyword in ds, keyword
        assert ds.Modality == "CT" and ds.BodyPartExamined == "CHEST"
        assert (ds.Rows, ds.Columns) == (SMALL.rows, SMALL.columns)
        if ds.SOPClassUID == CTImageStorage:
            assert len(ds.WindowCenter) == 2 and len(ds.WindowWidth) == 2
            assert len(ds.ImagePositionPatient) == 3 and len(ds.ImageOrientationPatient) == 6


def test_utf8_names_round_trip(datasets: dict[Path, Dataset]) -> None:
    names = {}
    for p, ds in datasets.items():
        names[ds.PatientID] = str(ds.PatientName)
        if not str(ds.PatientName).isascii():
            assert ds.SpecificCharacterSet == "ISO_IR 192"
            assert str(ds.PatientName).encode("utf-8") in p.read_bytes()
    assert names["SDW0-P001"] == "Müller^Jürgen"
    assert names["SDW0-P002"] == "Yamada^Tarou=山田^太郎=やまだ^たろう"
    ds = next(d for d in datasets.values() if d.PatientID == "SDW0-P002")
    assert ds.PatientName.ideographic == "山田^太郎"
    assert ds.PatientName.phonetic == "やまだ^たろう"


def test_multiframe(datasets: dict[Path, Dataset], small: tuple[Path, list[Path]]) -> None:
    enhanced = [(p, ds) for p, ds in datasets.items() if ds.SOPClassUID == EnhancedCTImageStorage]
    assert {ds.file_meta.TransferSyntaxUID for _, ds in enhanced} == {
        ExplicitVRLittleEndian,
        JPEG2000Lossless,
    }
    hu = phantom_volume(max(SMALL.slices, 8), SMALL.rows, SMALL.columns, phantom_seed(0, 0))
    step = max(1, SMALL.slices // 8)
    expected = hu[np.arange(8) * step].astype(np.int32) + 1024
    for _, ds in enhanced:
        assert ds.NumberOfFrames == FRAME_COUNT == 8
        assert ds.pixel_array.shape == (8, SMALL.rows, SMALL.columns)
        np.testing.assert_array_equal(ds.pixel_array, expected)
        assert len(ds.PerFrameFunctionalGroupsSequence) == 8
        shared = ds.SharedFunctionalGroupsSequence[0]
        assert shared.PixelMeasuresSequence[0].PixelSpacing
        positions = [
            float(f.PlanePositionSequence[0].ImagePositionPatient[2])
            for f in ds.PerFrameFunctionalGroupsSequence
        ]
        assert positions == sorted(positions, reverse=True) and len(set(positions)) == 8
        assert ds.StudyInstanceUID == next(
            d.StudyInstanceUID for d in datasets.values() if d.PatientID == "SDW0-P001"
        )
        if ds.file_meta.TransferSyntaxUID == JPEG2000Lossless:
            offsets = parse_basic_offsets(ds.PixelData)
            assert len(offsets) == 8 and offsets[0] == 0
            assert offsets == sorted(offsets)


def test_localizer(datasets: dict[Path, Dataset]) -> None:
    localizers = [ds for ds in datasets.values() if _series_kind(ds) == "localizer"]
    assert len(localizers) == 2 * LOCALIZER_IMAGES
    for ds in localizers:
        assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        assert ds.SeriesNumber == 1
        assert ds.pixel_array.std() > 0


def test_private_bulk_and_un(datasets: dict[Path, Dataset]) -> None:
    with_private = [ds for ds in datasets.values() if (0x0009, 0x0010) in ds]
    assert with_private
    for ds in with_private:
        block = ds.private_block(0x0009, PRIVATE_CREATOR)
        assert block[0x01].VR == "LO" or ds.original_encoding[0]
        assert len(block[0x02].value) == PRIVATE_BULK_LENGTH
        assert ds[0x0011, 0x0010].value == UN_PRIVATE_CREATOR
    explicit_un = [ds for ds in with_private if not ds.original_encoding[0] and ds[0x0011, 0x1001].VR == "UN"]
    assert explicit_un
    for ds in explicit_un:
        assert ds.private_block(0x0009, PRIVATE_CREATOR)[0x02].VR == "OB"
        assert ds[0x0011, 0x1001].value.startswith(b"UN payload")


def test_options(tmp_path: Path) -> None:
    spec = SampleSpec(
        patients=1,
        studies_per_patient=2,
        slices=3,
        rows=32,
        columns=48,
        transfer_syntaxes=(DeflatedExplicitVRLittleEndian, RLELossless),
        multiframe=False,
        localizer=False,
        seed=3,
    )
    paths = generate_sample(tmp_path, spec)
    assert len(paths) == 2 * 2 * 3
    dss = [pydicom.dcmread(p) for p in paths]
    assert all(ds.SOPClassUID == CTImageStorage for ds in dss)
    assert all("LOCALIZER" not in ds.ImageType for ds in dss)
    assert {ds.file_meta.TransferSyntaxUID for ds in dss} == set(spec.transfer_syntaxes)
    assert len({ds.StudyInstanceUID for ds in dss}) == 2
    for ds in dss:
        assert ds.pixel_array.shape == (32, 48)
        hu = phantom_volume(3, 32, 48, phantom_seed(3, int(ds.StudyID) - 1))[ds.InstanceNumber - 1]
        assert np.array_equal(ds.pixel_array * 1.0 + float(ds.RescaleIntercept), hu)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"patients": 0},
        {"studies_per_patient": 0},
        {"slices": 0},
        {"rows": 8},
        {"columns": 4097},
        {"seed": -1},
        {"transfer_syntaxes": ()},
        {"transfer_syntaxes": ("1.2.840.10008.1.2.4.50",)},
    ],
)
def test_spec_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SampleSpec(**kwargs)  # type: ignore[arg-type]


# --- phantom ------------------------------------------------------------------


def test_phantom_volume() -> None:
    vol = phantom_volume(8, 64, 64, seed=0)
    assert vol.shape == (8, 64, 64) and vol.dtype == np.int16
    assert np.array_equal(vol, phantom_volume(8, 64, 64, seed=0))
    assert vol.min() >= -1024 and vol.max() <= 3071
    assert abs(float(vol[:, 0, 0].mean()) + 1000) < 40  # air in the corner
    center = vol[:, 24:40, 28:36]  # mediastinum / heart: soft tissue
    assert 0 < float(np.median(center)) < 100
    assert (vol < -700).mean() > 0.2  # air + lungs
    assert (vol > 600).any()  # cortical bone
    # slices only depend on their index
    assert np.array_equal(phantom_volume(12, 64, 64, 0)[:8], vol)


def test_spine_mask() -> None:
    shape = (12, 64, 64)
    vol = phantom_volume(*shape, seed=5)
    mask = spine_mask(*shape, seed=5)
    assert mask.shape == shape and mask.dtype == np.uint8
    assert set(np.unique(mask).tolist()) == {0, 1}
    assert mask.sum() > 0
    assert np.all(vol[mask == 1] > 150)
    per_slice = mask.reshape(shape[0], -1).sum(axis=1)
    # vertebral bodies separated by discs: some slices empty, most not
    assert (per_slice == 0).sum() >= 2 and (per_slice > 0).sum() >= 6
    disc = int(np.flatnonzero(per_slice == 0)[0])
    vertebra = int(np.flatnonzero(per_slice > 0)[0])
    body = mask[vertebra] == 1
    assert 40 < float(np.median(vol[disc][body])) < 130  # disc ~80 HU
    # posterior in the body: below the image centre row
    rows = np.nonzero(mask)[1]
    assert rows.min() > shape[1] // 2
    assert np.array_equal(mask, spine_mask(*shape, seed=5))
