"""QIDO queries on a static site: the routing table, `serve`, dicomweb-client, the CloudFront Function."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient

from static_dicomweb.routing import edge_function, route

from .conftest import sample_files

CASES = json.loads((Path(__file__).parent / "edge" / "routing_cases.json").read_text())


@pytest.mark.parametrize("case", CASES, ids=[f"{c['path']}?{c['query']}" for c in CASES])
def test_routing_table(case: dict) -> None:  # type: ignore[type-arg]
    assert route(case["path"], {k: [v] for k, v in case["query"].items()}) == case["key"]


def test_cloudfront_function_routes_the_same_cases(tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    (tmp_path / "fn.js").write_text(edge_function())
    (tmp_path / "fn.prefixed.js").write_text(edge_function("/nlst"))
    edge = Path(__file__).parent / "edge"
    out = subprocess.run([node, str(edge / "check_cloudfront_function.cjs"),
                          str(tmp_path / "fn.js"), str(edge / "routing_cases.json")],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert f"# pass {len(CASES) + 1}" in out.stdout


def _sources(sample_dir: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in sample_files(sample_dir)]


def _uids(rows: list[dict], tag: str) -> set[str]:  # type: ignore[type-arg]
    return {r[tag]["Value"][0] for r in rows}


@pytest.mark.integration
def test_the_four_filters_answer_exactly(sample_dir: Path, site_url: str) -> None:
    client = DICOMwebClient(site_url)
    sources = _sources(sample_dir)
    patient = sources[0].PatientID
    study = sources[0].StudyInstanceUID
    series = sources[0].SeriesInstanceUID
    assert _uids(client.search_for_studies(search_filters={"PatientID": patient}), "0020000D") == {
        ds.StudyInstanceUID for ds in sources if ds.PatientID == patient}
    assert _uids(client.search_for_studies(search_filters={"StudyInstanceUID": study}),
                 "0020000D") == {study}
    assert _uids(client.search_for_series(search_filters={"Modality": "CT"}), "0020000E") == {
        ds.SeriesInstanceUID for ds in sources if ds.Modality == "CT"}
    assert _uids(client.search_for_series(search_filters={"SeriesInstanceUID": series}),
                 "0020000E") == {series}
    assert _uids(client.search_for_series(search_filters={"StudyInstanceUID": study}), "0020000E") == {
        ds.SeriesInstanceUID for ds in sources if ds.StudyInstanceUID == study}
    assert _uids(client.search_for_series(search_filters={"PatientID": patient}), "0020000E") == {
        ds.SeriesInstanceUID for ds in sources if ds.PatientID == patient}
    assert client.search_for_studies(search_filters={"PatientID": "nobody"}) == []
    assert client.search_for_series(search_filters={"Modality": "MR"}) == []


@pytest.mark.integration
def test_paging_ends_with_the_right_count(sample_dir: Path, site_url: str) -> None:
    client = DICOMwebClient(site_url)
    sources = _sources(sample_dir)
    n_series = len({ds.SeriesInstanceUID for ds in sources})
    assert len(client.search_for_series(get_remaining=True)) == n_series
    assert len(client.search_for_studies(get_remaining=True)) == len({ds.StudyInstanceUID for ds in sources})
    ct = {ds.SeriesInstanceUID for ds in sources if ds.Modality == "CT"}
    assert _uids(client.search_for_series(search_filters={"Modality": "CT"}, get_remaining=True),
                 "0020000E") == ct
    paged = client.search_for_series(limit=100, get_remaining=True)
    assert len(paged) == n_series


def test_common_modalities_are_answered_even_when_empty(site_dir: Path) -> None:
    # S3 answers a missing key with 403/404; MONAI Label asks series?Modality=SEG on every site
    from static_dicomweb.store import LocalStore

    store = LocalStore(site_dir)
    key = route("series", {"Modality": ["SEG"]})
    assert store.headers(key) is not None
    assert json.loads(gzip.decompress(store.get(key))) == []
