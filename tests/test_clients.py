"""Round trip through the real dicomweb-client against ``serve``: every row of the site contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.data import get_testdata_file

from static_dicomweb import multipart
from static_dicomweb.convert import convert
from static_dicomweb.reader import SYNTAXES
from static_dicomweb.serve import serve_in_thread
from static_dicomweb.store import LocalStore
from static_dicomweb.thumbnail import decode_frame

from .conftest import sample_files

pytestmark = pytest.mark.integration


def _first(attrs: dict, tag: str):  # type: ignore[type-arg]
    return attrs[tag]["Value"][0]


def _frame_media(meta: dict) -> tuple[tuple[str, str], ...] | None:  # type: ignore[type-arg]
    info = SYNTAXES[_first(meta, "00020010")]
    return None if info.native else ((info.media_type, info.frame_syntax),)


def check_series_round_trip(client: DICOMwebClient, base_url: str,
                            sources: dict[str, tuple[Path, pydicom.Dataset]],
                            study: str, series: str) -> int:
    """Every read a client makes of one series; returns the number of frames compared."""
    rows = client.search_for_instances(study_instance_uid=study, series_instance_uid=series)
    metas = client.retrieve_series_metadata(study, series)
    assert {_first(r, "00080018") for r in rows} == {_first(m, "00080018") for m in metas}
    retrieved = client.retrieve_series(study, series)
    assert len(retrieved) == len(metas)
    for ds in retrieved:
        path, source = sources[ds.SOPInstanceUID]
        assert ds == source, f"{path}: series retrieve differs"
        assert ds.file_meta == source.file_meta
    compared = 0
    for meta in metas:
        sop = _first(meta, "00080018")
        path, source = sources[sop]
        instance = client.retrieve_instance(study, series, sop)
        assert instance == source, f"{path}: instance retrieve differs"
        raw = requests.get(f"{base_url}/studies/{study}/series/{series}/instances/{sop}", timeout=30)
        ((_headers, payload),) = multipart.split(raw.content, raw.headers["Content-Type"])
        assert payload == path.read_bytes(), f"{path}: Part 10 bytes differ"
        if "7FE00010" not in meta:
            continue
        expected = source.pixel_array
        count = int(source.get("NumberOfFrames") or 1)
        if count == 1:
            expected = expected[np.newaxis]
        info = SYNTAXES[_first(meta, "00020010")]
        for number in range(1, count + 1):
            (frame,) = client.retrieve_instance_frames(study, series, sop, frame_numbers=[number],
                                                       media_types=_frame_media(meta))
            pixels = decode_frame(meta, frame, info.frame_syntax, info.native)
            np.testing.assert_array_equal(pixels, expected[number - 1], err_msg=f"{path} frame {number}")
            compared += 1
    return compared


def test_sample_site_round_trip(sample_dir: Path, site_url: str) -> None:
    check_site_round_trip(sample_dir, site_url)


def check_site_round_trip(sample_dir: Path, site_url: str) -> None:
    """The strict read-back of a whole site of ``sample_dir`` at ``site_url`` through dicomweb-client.

    QIDO at every level (root series as MONAI Label searches), series and instance
    retrieve against the source files element for element and byte for byte,
    every frame's decoded pixels against the source's.
    """
    client = DICOMwebClient(site_url)
    sources = {}
    for path in sample_files(sample_dir):
        ds = pydicom.dcmread(path)
        sources[ds.SOPInstanceUID] = (path, ds)
    studies = client.search_for_studies()
    root_series = client.search_for_series()
    assert len(studies) == len({ds.StudyInstanceUID for _, ds in sources.values()})
    assert len(root_series) == len({ds.SeriesInstanceUID for _, ds in sources.values()})
    syntaxes, frames = set(), 0
    for study_row in studies:
        study = _first(study_row, "0020000D")
        for row in client.search_for_series(study_instance_uid=study):
            series = _first(row, "0020000E")
            assert any(_first(r, "0020000E") == series for r in root_series)
            frames += check_series_round_trip(client, site_url, sources, study, series)
        assert len(client.search_for_instances(study_instance_uid=study)) == _first(study_row, "00201208")
    for _, ds in sources.values():
        syntaxes.add(ds.file_meta.TransferSyntaxUID)
    assert len(syntaxes) >= 4, syntaxes
    assert frames >= len(sources)


def test_utf8_names_survive(site_url: str) -> None:
    client = DICOMwebClient(site_url)
    names = {r["00100010"]["Value"][0]["Alphabetic"] for r in client.search_for_studies()}
    assert any(not n.isascii() for n in names), names


REAL_FILES = [
    "693_UNCR.dcm", "693_UNCI.dcm", "693_J2KR.dcm", "eCT_Supplemental.dcm", "explicit_VR-UN.dcm",
    "CT_small.dcm", "MR_small_bigendian.dcm", "MR_small_jpeg_ls_lossless.dcm", "JPEG-LL.dcm",
    "SC_rgb_rle_2frame.dcm", "image_dfl.dcm", "liver.dcm", "emri_small_jpeg_2k_lossless.dcm",
    "SC_rgb_small_odd.dcm", "JPGLosslessP14SV1_1s_1f_8b.dcm", "MR2_J2KR.dcm", "RG1_J2KR.dcm",
]


@pytest.mark.parametrize("name", REAL_FILES)
def test_real_file_round_trip(name: str, tmp_path: Path) -> None:
    source = Path(get_testdata_file(name))  # type: ignore[arg-type]
    result = convert([source], LocalStore(tmp_path / "site"))
    assert result.ok, result.rejected
    server, url = serve_in_thread(str(tmp_path / "site"))
    try:
        ds = pydicom.dcmread(source)
        client = DICOMwebClient(url)
        (row,) = client.search_for_series()
        frames = check_series_round_trip(client, url, {ds.SOPInstanceUID: (source, ds)},
                                         _first(row, "0020000D"), _first(row, "0020000E"))
        assert frames == int(ds.get("NumberOfFrames") or 1)
    finally:
        server.shutdown()
        server.server_close()


def test_slicer_import_requests(sample_dir: Path, site_url: str) -> None:
    """What 3D Slicer's DICOMweb import asks for: the study's series, series metadata, series Part 10."""
    client = DICOMwebClient(site_url)
    sources = {}
    for path in sample_files(sample_dir):
        ds = pydicom.dcmread(path)
        sources[ds.SOPInstanceUID] = ds
    study = next(iter(sources.values())).StudyInstanceUID
    for row in client.search_for_series(study_instance_uid=study):
        series = _first(row, "0020000E")
        metadata = client.retrieve_series_metadata(study, series)
        instances = client.retrieve_series(study, series)
        assert {_first(m, "00080018") for m in metadata} == {ds.SOPInstanceUID for ds in instances}
        assert all(ds == sources[ds.SOPInstanceUID] for ds in instances)
