"""The IDC source: selection from idc-index's offline index; fetches from a moto bucket laid out like IDC."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from static_dicomweb.convert import convert
from static_dicomweb.sources import skip_localizers
from static_dicomweb.sources.idc import IdcCountError, IdcSource
from static_dicomweb.store import LocalStore

from .conftest import sample_files
from .test_s3 import moto_endpoint  # noqa: F401  (the moto server fixture)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def idc_bucket(moto_endpoint: str, sample_dir: Path) -> tuple[IdcSource, list[dict]]:  # noqa: F811
    import boto3

    client = boto3.client("s3", endpoint_url=moto_endpoint)
    client.create_bucket(Bucket="idc-open-data")
    rows = []
    for folder in sorted({p.parent for p in sample_files(sample_dir)}):
        series_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, str(folder)))
        files = sorted(folder.glob("*.dcm"))
        for f in files:  # instance files are named by a UUID, not by SOP Instance UID
            client.upload_file(str(f), "idc-open-data",
                               f"{series_uuid}/{uuid.uuid5(uuid.NAMESPACE_URL, str(f))}.dcm")
        import pydicom

        ds = pydicom.dcmread(files[0], stop_before_pixels=True)
        rows.append({"collection_id": "nlst", "analysis_result_id": float("nan"),
                     "PatientID": ds.PatientID, "StudyInstanceUID": ds.StudyInstanceUID,
                     "SeriesInstanceUID": ds.SeriesInstanceUID, "Modality": ds.Modality,
                     "instanceCount": len(files), "crdc_series_uuid": series_uuid,
                     "series_aws_url": f"s3://idc-open-data/{series_uuid}/*"})
    rows.append({**rows[0], "analysis_result_id": "totalsegmentator_ct_segmentations",
                 "Modality": "SEG", "SeriesInstanceUID": "1.2.3.4"})
    rows.append({**rows[0], "collection_id": "lidc_idri", "SeriesInstanceUID": "1.2.3.5"})
    return IdcSource("nlst", index=rows, client=client), rows


def test_lists_original_ct_of_the_collection(idc_bucket: tuple[IdcSource, list[dict]]) -> None:
    source, rows = idc_bucket
    refs = list(source.list_series())
    assert {r.series_uid for r in refs} == {r["SeriesInstanceUID"] for r in rows
                                           if r["collection_id"] == "nlst" and r["Modality"] == "CT"
                                           and r["analysis_result_id"] != r["analysis_result_id"]}
    assert all(r.location.startswith("s3://idc-open-data/") for r in refs)
    with_seg = IdcSource("nlst", index=rows, client=source.client, modalities=(),
                         include_analysis_results=True)
    assert "1.2.3.4" in {r.series_uid for r in with_seg.list_series()}
    assert all(r.instances >= 4 for r in skip_localizers(source.list_series()))


def test_fetch_converts_and_is_idempotent(idc_bucket: tuple[IdcSource, list[dict]],
                                          tmp_path: Path) -> None:
    source, _ = idc_bucket
    ref = next(r for r in source.list_series() if r.instances > 2)
    files = source.fetch(ref, tmp_path / "dl")
    assert len(files) == ref.instances
    result = convert(files, LocalStore(tmp_path / "site"))
    assert result.ok and {w.series for w in result.written} == {ref.series_uid}
    (tmp_path / "dl" / ref.series_uid / files[0].name).write_bytes(b"")  # ignored: marker says done
    assert source.fetch(ref, tmp_path / "dl") == files


def test_wrong_count_is_an_error(idc_bucket: tuple[IdcSource, list[dict]], tmp_path: Path) -> None:
    source, _ = idc_bucket
    ref = next(iter(source.list_series()))
    from dataclasses import replace

    with pytest.raises(IdcCountError, match=ref.series_uid):
        source.fetch(replace(ref, instances=ref.instances + 1), tmp_path)


@pytest.mark.slow
def test_real_offline_index_selects_nlst_ct() -> None:
    pytest.importorskip("idc_index")
    refs = list(skip_localizers(IdcSource("nlst", client=object()).list_series()))
    # IDC v25 (idc-index-data 25.0.5): 203,087 original NLST CT series, 133,494 of 4+ images
    assert len(refs) == 133_494
    assert all(r.modality == "CT" and r.instances >= 4 for r in refs[:1000])
