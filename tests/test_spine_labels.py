"""Spine labels: vertebra levels, CT volumes from a site, SEG round trips, the TotalSegmentator import.

Test data: ``static_dicomweb_sample``'s phantom (64x64, 14 slices; one series Explicit VR Little
Endian, one RLE Lossless) and TotalSegmentator-like SEGs made of it with highdicom
(``tests/spine_fixtures.py``).  The IDC part runs against a moto bucket laid out like IDC's,
with index rows in idc-index's columns; one slow test reads the real offline index (v25).
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import re
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from static_dicomweb import keys
from static_dicomweb.convert import convert
from static_dicomweb.pipeline import aggregate_batches
from static_dicomweb.sources.idc import IdcSource
from static_dicomweb.spine.labels import (
    LEVEL_CODES,
    LEVELS,
    LOCALIZATION_SPINE_LABELS,
    MODELS,
    SPINE,
    SPINE_CPU_LABELS,
    label_value,
    level_from_text,
    model_labels,
    vertebra_level,
)
from static_dicomweb.spine.seg import (
    SegmentationError,
    check_references,
    label_volume,
    segment_values,
    write_seg,
)
from static_dicomweb.spine.totalseg import (
    ANALYSIS_RESULT_ID,
    import_totalseg,
    map_totalseg,
    map_totalseg_levels,
    select_totalseg,
)
from static_dicomweb.spine.volume import (
    SeriesNotInSiteError,
    SeriesVolume,
    SeriesVolumeError,
    read_series_volume,
    series_volume_from_files,
)
from static_dicomweb.store import LocalStore
from static_dicomweb_sample import SampleSpec, generate_sample, spine_mask, vertebra_levels

from .spine_fixtures import expected_levels, expected_spine, seg_bytes, totalseg_like_seg
from .test_s3 import moto_endpoint  # noqa: F401  (the moto server fixture)

SPEC = SampleSpec(patients=1, slices=14, rows=64, columns=64, multiframe=False, localizer=False,
                  transfer_syntaxes=(ExplicitVRLittleEndian, RLELossless))
MONAI_PYTHON = Path(__file__).resolve().parents[1] / "clients" / "monailabel" / ".venv" / "bin" / "python"


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """The phantom's two axial series: ``standard`` (native) and ``bone`` (RLE, signed)."""
    out = tmp_path_factory.mktemp("spine-sample")
    files = generate_sample(out, SPEC)
    by_series: dict[str, list[Path]] = {}
    for path in files:
        by_series.setdefault(str(dcmread(path, stop_before_pixels=True).SeriesDescription),
                             []).append(path)
    return {"standard": by_series["Axial 5.0 mm STANDARD"],
            "bone": by_series["Axial 5.0 mm BONE (signed)"]}


@pytest.fixture(scope="module")
def volume(phantom: dict[str, list[Path]]) -> SeriesVolume:
    return series_volume_from_files(phantom["standard"])


@pytest.fixture(scope="module")
def bone(phantom: dict[str, list[Path]]) -> SeriesVolume:
    return series_volume_from_files(phantom["bone"])


def _item(code: tuple[str, str, str] | None = None, label: str = "", description: str = "") -> Dataset:
    item = Dataset()
    item.SegmentNumber = 1
    if label:
        item.SegmentLabel = label
    if description:
        item.SegmentDescription = description
    if code:
        c = Dataset()
        c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning = code
        item.SegmentedPropertyTypeCodeSequence = [c]
    return item


# -- labels -------------------------------------------------------------------

def test_level_codes_are_dicom_cid_7603() -> None:
    assert len(LEVEL_CODES) == len(LEVELS) == 24
    for level, code in LEVEL_CODES.items():  # pydicom's code dictionary is DICOM PS3.16's
        assert getattr(codes.SCT, f"{level}Vertebra").value == code


@pytest.mark.parametrize("level", LEVELS)
def test_level_by_code(level: str) -> None:
    assert vertebra_level(_item((LEVEL_CODES[level], "SCT", f"{level} vertebra"))) == level
    assert vertebra_level(_item((LEVEL_CODES[level], "SCT", "whatever"), label="segment 1")) == level


@pytest.mark.parametrize(("text", "level"), [
    ("vertebrae_T5", "T5"), ("T5 vertebra", "T5"), ("Vertebrae T10", "T10"), ("Th12", "T12"),
    ("TH1", "T1"), ("C1", "C1"), ("L5", "L5"), ("t05", "T5"), ("cervical vertebrae 1 (C1)", "C1"),
    ("thoracic vertebra 11", "T11"), ("lumbar vertebrae 5 (L5)", "L5"), ("spine", SPINE),
    ("Vertebral column", SPINE), ("vertebrae_S1", None), ("S1 vertebra", None), ("sacrum", None),
    ("heart", None), ("spinal cord", None), ("spinal_cord", None), ("T13", None), ("L6", None),
    ("C8", None), ("T0", None), ("rib_left_5", None), ("", None),
])
def test_level_by_text(text: str, level: str | None) -> None:
    assert level_from_text(text) == level
    # MONAI Label codes every segment as Spleen (78961009) and puts its name in the meaning
    assert vertebra_level(_item(("78961009", "SCT", text), label=text)) == level
    assert vertebra_level(_item(description=text)) == level


def test_code_wins_over_label(caplog: pytest.LogCaptureFixture) -> None:
    # the mix-up of an early IDC conversion config: text "Vertebrae T10", code of T1
    with caplog.at_level(logging.WARNING):
        level = vertebra_level(_item(("64864005", "SCT", "T1 vertebra"), label="Vertebrae T10"))
    assert level == "T1" and "using the code" in caplog.text


def test_non_vertebra_codes_are_not_levels() -> None:
    for code in (codes.SCT.Heart, codes.SCT.Aorta, codes.SCT.Sacrum, codes.SCT.SpinalCord):
        assert vertebra_level(_item((code.value, "SCT", code.meaning))) is None
    assert vertebra_level(_item(("421060004", "SCT", "Spine"))) == SPINE
    assert vertebra_level(_item(("14806007", "LN", "C1 vertebra"))) == "C1"  # text decides
    assert vertebra_level(_item(("14806007", "LN", "x"))) is None


def test_model_label_values() -> None:
    assert dict(SPINE_CPU_LABELS) == {"spine": 1}
    assert LOCALIZATION_SPINE_LABELS["C1"] == 1 and LOCALIZATION_SPINE_LABELS["C7"] == 7
    assert LOCALIZATION_SPINE_LABELS["T1"] == 8 and LOCALIZATION_SPINE_LABELS["T12"] == 19
    assert LOCALIZATION_SPINE_LABELS["L1"] == 20 and LOCALIZATION_SPINE_LABELS["L5"] == 24
    assert all(label_value(level, SPINE_CPU_LABELS) == 1 for level in (*LEVELS, SPINE))
    assert [label_value(level, LOCALIZATION_SPINE_LABELS) for level in LEVELS] == list(range(1, 25))
    assert label_value(SPINE, LOCALIZATION_SPINE_LABELS) is None
    monai_names = {"Th5": 12, "C3": 3}  # MONAI Label's own spelling as a label set
    assert label_value("T5", monai_names) == 12
    assert model_labels("spine_cpu") is MODELS["spine_cpu"]
    with pytest.raises(ValueError, match="localization_spine"):
        model_labels("spleen")


def test_vertebra_levels_of_the_phantom() -> None:
    for seed in range(4):
        levels = vertebra_levels(16, 32, 32, seed)
        assert np.array_equal(levels > 0, spine_mask(16, 32, 32, seed) > 0)
        per_slice = [int(levels[z].max()) for z in range(16)]
        values = [v for v in per_slice if v]
        assert values[0] == 8 and values == sorted(values)  # T1 first, then caudally
        runs = [values.count(v) for v in sorted(set(values))]
        assert all(r == 3 for r in runs[1:-1])  # a vertebra = 3 slices between discs
    assert int(vertebra_levels(12, 32, 32, 0, top_level="L4").max()) == 24  # clipped at L5
    assert int(vertebra_levels(12, 32, 32, 0, top_level="C1")[0].max()) == 1
    with pytest.raises(ValueError, match="top_level"):
        vertebra_levels(4, 32, 32, 0, top_level="S1")


# -- volumes ------------------------------------------------------------------

def test_volume_from_files(volume: SeriesVolume, bone: SeriesVolume) -> None:
    assert volume.shape == (14, 64, 64) and volume.hu.dtype == np.float32
    assert volume.spacing == pytest.approx((5.0, 350 / 64, 350 / 64))
    z = volume.positions[:, 2]
    assert np.all(np.diff(z) > 0) and volume.normal.tolist() == [0.0, 0.0, 1.0]
    assert [str(h.SOPInstanceUID) for h in volume.headers] == list(volume.sop_instance_uids)
    assert all("PixelData" not in h for h in volume.headers)
    from static_dicomweb_sample import phantom_volume

    hu = phantom_volume(14, 64, 64, 0).astype(np.float32)[np.argsort(np.argsort(-z))]
    assert np.array_equal(volume.hu, hu)  # unsigned + intercept -1024 → HU
    assert np.array_equal(bone.hu, hu)  # signed, RLE Lossless


def test_volume_from_site_matches_files(volume: SeriesVolume, phantom: dict[str, list[Path]],
                                        tmp_path: Path) -> None:
    for profile in ("default", "viewer"):  # Part 10 objects, or metadata and frames
        store = LocalStore(tmp_path / profile)
        assert convert(phantom["standard"] + phantom["bone"], store, profile=profile).ok
        for files in (phantom["standard"], phantom["bone"]):
            expected = series_volume_from_files(files)
            got = read_series_volume(store, expected.study_uid, expected.series_uid)
            assert got.sop_instance_uids == expected.sop_instance_uids
            assert np.array_equal(got.hu, expected.hu)
            assert np.array_equal(got.positions, expected.positions)
            assert got.spacing == expected.spacing
    with pytest.raises(SeriesNotInSiteError, match="no instances"):
        read_series_volume(store, volume.study_uid, "1.2.3")


def test_mixed_series_is_an_error(phantom: dict[str, list[Path]]) -> None:
    with pytest.raises(SeriesVolumeError, match="belongs to series"):
        series_volume_from_files(phantom["standard"] + phantom["bone"][:1])
    with pytest.raises(SeriesVolumeError, match="two slices at one position"):
        series_volume_from_files(phantom["standard"] + phantom["standard"][:1])


# -- SEG round trips ----------------------------------------------------------

@pytest.mark.parametrize("all_frames", [False, True])
@pytest.mark.parametrize("model", ["localization_spine", "spine_cpu"])
def test_write_seg_round_trip(volume: SeriesVolume, model: str, all_frames: bool) -> None:
    labels = model_labels(model)
    truth = expected_levels(volume) if model == "localization_spine" else expected_spine(volume)
    truth[-1] = 0  # an empty end slice: it still gets a frame
    seg = write_seg(volume, truth, labels, series_description=f"{model} labels",
                    algorithm_name="phantom truth", all_frames=all_frames)
    data = seg_bytes(seg)
    back = dcmread(io.BytesIO(data))
    assert [int(s.SegmentNumber) for s in back.SegmentSequence] == sorted(labels.values())
    assert [str(s.SegmentLabel) for s in back.SegmentSequence] == sorted(labels, key=labels.get)
    nonempty = sum(int(np.any(truth[z] == v)) for v in labels.values() for z in range(len(truth)))
    frames = len(labels) * volume.shape[0] if all_frames else nonempty + 1
    assert int(back.NumberOfFrames) == frames  # described segments need no frames
    assert back.ReferencedSeriesSequence[0].SeriesInstanceUID == volume.series_uid
    assert back.SegmentationType == "BINARY" and back.Modality == "SEG"
    assert np.array_equal(label_volume(back, volume, labels), truth)
    # highdicom reads it back too (dimension indices and frame references consistent)
    import highdicom as hd

    read = hd.seg.Segmentation.from_dataset(back).get_pixels_by_source_instance(
        source_sop_instance_uids=list(volume.sop_instance_uids), combine_segments=True,
        assert_missing_frames_are_empty=True)
    assert np.array_equal(read, truth)
    # deterministic: the same labels give the same UIDs and bytes; other labels other UIDs
    again = write_seg(volume, truth, labels, series_description=f"{model} labels",
                      algorithm_name="phantom truth", all_frames=all_frames)
    assert seg_bytes(again) == data
    other = truth.copy()
    other[other == other.max()] = 0
    changed = write_seg(volume, other, labels, series_description=f"{model} labels",
                        algorithm_name="phantom truth", all_frames=all_frames)
    assert changed.SeriesInstanceUID != seg.SeriesInstanceUID
    assert changed.SOPInstanceUID != seg.SOPInstanceUID


def test_write_seg_refuses_foreign_values(volume: SeriesVolume) -> None:
    labels = expected_levels(volume)
    with pytest.raises(ValueError, match="not the model's"):
        write_seg(volume, labels, SPINE_CPU_LABELS, series_description="x", algorithm_name="x")
    with pytest.raises(ValueError, match="are"):
        write_seg(volume, labels[1:], LOCALIZATION_SPINE_LABELS, series_description="x",
                  algorithm_name="x")
    with pytest.raises(ValueError, match=r"1\.\.N"):
        write_seg(volume, labels, {"T1": 8}, series_description="x", algorithm_name="x")


def test_label_volume_merges_for_spine_cpu(volume: SeriesVolume) -> None:
    seg = dcmread(io.BytesIO(seg_bytes(write_seg(
        volume, expected_levels(volume), LOCALIZATION_SPINE_LABELS,
        series_description="levels", algorithm_name="phantom truth"))))
    assert np.array_equal(label_volume(seg, volume, SPINE_CPU_LABELS), expected_spine(volume))


@pytest.mark.clients
@pytest.mark.parametrize("model", ["localization_spine", "spine_cpu"])
def test_monai_label_reads_the_written_seg(volume: SeriesVolume, model: str, tmp_path: Path) -> None:
    if not MONAI_PYTHON.exists():
        pytest.skip("MONAI Label's venv is absent (clients/monailabel/setup.sh)")
    truth = expected_levels(volume) if model == "localization_spine" else expected_spine(volume)
    truth[0] = truth[-1] = 0  # empty end slices: MultiClassReader must still span the volume
    path = tmp_path / "seg.dcm"
    path.write_bytes(seg_bytes(write_seg(volume, truth, model_labels(model),
                                         series_description="labels", algorithm_name="truth")))
    script = ("import sys, numpy, pydicom, pydicom_seg\n"
              "r = pydicom_seg.MultiClassReader().read(pydicom.dcmread(sys.argv[1]))\n"
              "numpy.save(sys.argv[2], r.data)\n"
              "print(*r.origin, *r.spacing)\n")
    done = subprocess.run([str(MONAI_PYTHON), "-c", script, str(path), str(tmp_path / "mc.npy")],
                          capture_output=True, text=True, timeout=120, check=True)
    data = np.load(tmp_path / "mc.npy")  # MONAI Label's labels: voxel value = Segment Number
    assert data.shape == volume.shape and np.array_equal(data, truth)
    origin_spacing = [float(v) for v in done.stdout.split()]
    assert origin_spacing[:3] == pytest.approx(volume.positions[0].tolist())
    assert origin_spacing[3:] == pytest.approx([volume.spacing[2], volume.spacing[1], volume.spacing[0]])


# -- TotalSegmentator ---------------------------------------------------------

@pytest.mark.parametrize(("style", "with_codes"), [("idc", True), ("totalsegmentator", True),
                                                   ("idc", False), ("totalsegmentator", False)])
def test_map_totalseg(volume: SeriesVolume, style: str, with_codes: bool) -> None:
    source = dcmread(io.BytesIO(seg_bytes(totalseg_like_seg(volume, style=style,
                                                            vertebra_codes=with_codes))))
    numbers = segment_values(source, LOCALIZATION_SPINE_LABELS)
    assert numbers and all(n != v for n, v in numbers.items())  # not the model's numbering
    assert len(source.SegmentSequence) == len(numbers) + 4  # heart, aorta, sacrum, S1
    for model, truth in (("localization_spine", expected_levels(volume)),
                         ("spine_cpu", expected_spine(volume))):
        mapped, found = map_totalseg_levels(source, volume, model_labels(model))
        assert found == ["T1", "T2", "T3", "T4"]
        back = dcmread(io.BytesIO(seg_bytes(mapped)))
        assert [str(s.SegmentLabel) for s in back.SegmentSequence] == list(model_labels(model))
        assert back.ReferencedSeriesSequence[0].SeriesInstanceUID == volume.series_uid
        assert np.array_equal(label_volume(back, volume, model_labels(model)), truth)
        assert seg_bytes(map_totalseg(source, volume, model_labels(model))) == seg_bytes(mapped)


def test_totalseg_top_levels(volume: SeriesVolume) -> None:
    source = totalseg_like_seg(volume, top_level="T11")
    mapped, found = map_totalseg_levels(source, volume, LOCALIZATION_SPINE_LABELS)
    assert found == ["T11", "T12", "L1", "L2"]
    assert np.array_equal(label_volume(mapped, volume, LOCALIZATION_SPINE_LABELS),
                          expected_levels(volume, top_level="T11"))


def test_bad_segs_name_the_file(volume: SeriesVolume, bone: SeriesVolume, tmp_path: Path) -> None:
    other = tmp_path / "of-bone.dcm"
    other.write_bytes(seg_bytes(totalseg_like_seg(bone)))
    with pytest.raises(SegmentationError, match=re.escape(f"{other}: references series {bone.series_uid}")):
        label_volume(dcmread(other), volume, LOCALIZATION_SPINE_LABELS)
    with pytest.raises(SegmentationError, match=re.escape(str(other))):
        map_totalseg(dcmread(other), volume, SPINE_CPU_LABELS)
    empty = dcmread(io.BytesIO(seg_bytes(totalseg_like_seg(volume))))
    del empty.SegmentSequence
    path = tmp_path / "no-segments.dcm"
    empty.save_as(path, enforce_file_format=True)
    with pytest.raises(SegmentationError, match=re.escape(f"{path}: has no segments")):
        check_references(dcmread(path), volume)
    seg = dcmread(io.BytesIO(seg_bytes(totalseg_like_seg(volume))))
    seg.SegmentSequence = [s for s in seg.SegmentSequence if vertebra_level(s) is None]
    path = tmp_path / "no-vertebrae.dcm"
    seg.save_as(path, enforce_file_format=True)
    with pytest.raises(SegmentationError, match=re.escape(f"{path}: has no vertebra segments") + ".*heart"):
        map_totalseg(dcmread(path), volume, LOCALIZATION_SPINE_LABELS)
    only_spine = write_seg(volume, expected_spine(volume), SPINE_CPU_LABELS,
                           series_description="spine", algorithm_name="truth")
    with pytest.raises(SegmentationError, match="is a label of the model"):
        map_totalseg(only_spine, volume, LOCALIZATION_SPINE_LABELS)


def _row(ds: Dataset, count: int, url: str, **extra: object) -> dict[str, object]:
    return {"collection_id": "nlst", "analysis_result_id": float("nan"), "source_DOI": "",
            "PatientID": str(ds.PatientID), "StudyInstanceUID": str(ds.StudyInstanceUID),
            "SeriesInstanceUID": str(ds.SeriesInstanceUID), "Modality": str(ds.Modality),
            "SeriesNumber": str(ds.SeriesNumber), "SeriesDescription": str(ds.SeriesDescription),
            "instanceCount": count, "series_aws_url": url, **extra}


def test_select_totalseg_offline_rows(volume: SeriesVolume, bone: SeriesVolume) -> None:
    ct, other = volume.headers[0], bone.headers[0]
    seg = {**_row(ct, 1, "s3://idc-open-data/a/*"), "Modality": "SEG",
           "analysis_result_id": ANALYSIS_RESULT_ID, "source_DOI": "10.5281/zenodo.8347011",
           "SeriesInstanceUID": "1.2.3.200", "SeriesNumber": "200",
           "SeriesDescription": "TotalSegmentator(v1.5.6) Segmentation of Series 2"}
    rows = [_row(ct, 14, "s3://idc-open-data/c/*"), _row(other, 14, "s3://idc-open-data/b/*"), seg,
            {**seg, "SeriesInstanceUID": "1.2.3.300", "SeriesNumber": "300",
             "SeriesDescription": "TotalSegmentator(v1.5.6) Segmentation of Series 3"},
            {**seg, "SeriesInstanceUID": "1.2.3.9", "analysis_result_id": "nlstseg",
             "source_DOI": "10.5281/zenodo.17362625"}]
    refs = select_totalseg([volume.series_uid, "1.2.9.9"], index=rows)
    assert [(r.ct.series_uid, r.seg.series_uid, r.linked_by) for r in refs] == [
        (volume.series_uid, "1.2.3.200", "SeriesNumber")]
    assert refs[0].seg.location == "s3://idc-open-data/a/" and refs[0].ct.instances == 14
    exact = select_totalseg([volume.series_uid, bone.series_uid], index=rows, seg_index=[
        {"SeriesInstanceUID": "1.2.3.200", "segmented_SeriesInstanceUID": bone.series_uid}])
    assert {(r.ct.series_uid, r.seg.series_uid, r.linked_by) for r in exact} == {
        (bone.series_uid, "1.2.3.200", "segmented_SeriesInstanceUID"),
        (bone.series_uid, "1.2.3.300", "SeriesNumber")}
    import pandas as pd

    frame = select_totalseg([volume.series_uid], index=pd.DataFrame(rows))
    assert [r.seg.series_uid for r in frame] == ["1.2.3.200"]


@pytest.mark.slow
def test_select_totalseg_real_offline_index() -> None:
    pytest.importorskip("idc_index")
    # IDC v25: patient 100002 has 7 CT series in 3 studies, every one Series Number 1, and two
    # TotalSegmentator SEGs per study ("Segmentation of Series 1"): 14 candidates, no exact link
    refs = select_totalseg(["1.2.840.113654.2.55.97114726565566537928831413367474015470",
                            "1.2.840.113654.2.55.283399418711252976131557177419186072875"])
    assert {r.seg.series_uid for r in refs} == {
        "1.2.276.0.7230010.3.1.3.313263360.20363.1706320514.804396",
        "1.2.276.0.7230010.3.1.3.313263360.40027.1706310312.485948",
        "1.2.276.0.7230010.3.1.3.313263360.36062.1706312432.260006",
        "1.2.276.0.7230010.3.1.3.313263360.92.1706319211.325280"}
    assert all(r.linked_by == "SeriesNumber" and r.seg.location.startswith("s3://idc-open-data/")
               and r.seg.instances == 1 for r in refs)


@pytest.mark.integration
def test_import_totalseg_into_a_site(moto_endpoint: str, volume: SeriesVolume,  # noqa: F811
                                     bone: SeriesVolume, phantom: dict[str, list[Path]],
                                     tmp_path: Path) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=moto_endpoint)
    client.create_bucket(Bucket="idc-open-data")

    def upload(files: list[Path] | list[bytes]) -> str:
        folder = str(uuid.uuid4())
        for item in files:
            body = item.read_bytes() if isinstance(item, Path) else item
            client.put_object(Bucket="idc-open-data", Key=f"{folder}/{uuid.uuid4()}.dcm", Body=body)
        return f"s3://idc-open-data/{folder}/*"

    good = totalseg_like_seg(volume)
    # NLST-like ambiguity: the BONE series gets Series Number 2 too, and its SEG is a candidate
    decoy = totalseg_like_seg(bone, series_uid="1.2.826.0.1.3680043.8.498.2.1",
                              sop_uid="1.2.826.0.1.3680043.8.498.2.2")
    ct, other = volume.headers[0], bone.headers[0]
    seg_row = {"Modality": "SEG", "analysis_result_id": ANALYSIS_RESULT_ID, "SeriesNumber": "200",
               "SeriesDescription": "TotalSegmentator(v1.5.6) Segmentation of Series 2"}
    rows = [_row(ct, 14, upload(phantom["standard"])),
            _row(other, 14, upload(phantom["bone"]), SeriesNumber="2"),
            _row(ct, 1, upload([seg_bytes(good)]), **seg_row,
                 SeriesInstanceUID=str(good.SeriesInstanceUID)),
            _row(ct, 1, upload([seg_bytes(decoy)]), **seg_row,
                 SeriesInstanceUID=str(decoy.SeriesInstanceUID))]
    source = IdcSource("nlst", index=rows, client=client)

    store = LocalStore(tmp_path / "site")  # the CT series is not in the site yet: fetched too
    summary = import_totalseg([volume.series_uid], store, tmp_path / "work", source=source,
                              index=rows)
    assert [(i["ct_series"], i["source_seg"], i["vertebrae"]) for i in summary["imported"]] == [
        (volume.series_uid, str(good.SeriesInstanceUID), ["T1", "T2", "T3", "T4"])]
    assert [s["series"] for s in summary["skipped"]] == [str(decoy.SeriesInstanceUID)]
    reason = summary["skipped"][0]["reason"]
    assert "work/totalseg" in reason and f"references series {bone.series_uid}" in reason
    assert summary["rejected"] == [] and summary["instances"] == 15  # 14 CT slices + the SEG
    aggregate_batches([summary], store)

    imported = summary["imported"][0]
    meta_key = keys.instance_metadata(volume.study_uid, imported["seg_series"],
                                      imported["seg_instance"]).key
    meta = json.loads(gzip.decompress(store.get(meta_key)))[0]
    assert meta["00080060"]["Value"] == ["SEG"]
    referenced = meta["00081115"]["Value"][0]
    assert referenced["0020000E"]["Value"] == [volume.series_uid]
    assert len(referenced["0008114A"]["Value"]) == 14
    series_rows = json.loads(gzip.decompress(store.get(keys.study_series(volume.study_uid).key)))
    assert {r["00080060"]["Value"][0] for r in series_rows} == {"CT", "SEG"}

    # the labels read back from the site are the phantom's vertebrae, in the model's values
    site_volume = read_series_volume(store, volume.study_uid, volume.series_uid)
    body = store.get(keys.instance(volume.study_uid, imported["seg_series"],
                                   imported["seg_instance"]).key)
    from static_dicomweb.multipart import p10_part_span

    head, tail = p10_part_span(keys.instance(volume.study_uid, imported["seg_series"],
                                             imported["seg_instance"]).key)
    seg = dcmread(io.BytesIO(body[head:len(body) - tail]))
    assert np.array_equal(label_volume(seg, site_volume, LOCALIZATION_SPINE_LABELS),
                          expected_levels(volume))

    # a rerun (CT now in the site) writes the same SEG: same UIDs, same bytes, no conflict
    again = import_totalseg([volume.series_uid], store, tmp_path / "work2", source=source,
                            index=rows)
    assert again["imported"][0]["seg_instance"] == imported["seg_instance"]
    assert again["rejected"] == [] and again["instances"] == 1
    spine = import_totalseg([volume.series_uid, "1.2.9.9"], store, tmp_path / "work3",
                            source=source, index=rows, model="spine_cpu")
    assert spine["imported"][0]["seg_instance"] != imported["seg_instance"]
    assert {"series": "1.2.9.9", "reason": "no TotalSegmentator SEG in the index"} in spine["skipped"]
