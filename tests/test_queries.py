"""QIDO queries on a static site: the routing table, `serve`, dicomweb-client, the CloudFront Function."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient

from static_dicomweb import keys, routing
from static_dicomweb.aggregate import _put_json, aggregate_roots
from static_dicomweb.qido import series_row, study_row
from static_dicomweb.routing import EMPTY_KEY, edge_function, route
from static_dicomweb.store import LocalStore, Piece
from static_dicomweb.writer import Writer

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
    store = LocalStore(site_dir)
    key = route("series", {"Modality": ["SEG"]})
    assert store.headers(key) is not None
    assert json.loads(gzip.decompress(store.get(key))) == []


def _json_at(store: LocalStore, key: str) -> list[dict]:  # type: ignore[type-arg]
    return json.loads(gzip.decompress(store.get(key)))  # type: ignore[no-any-return]


def test_small_answers_share_one_empty_page(site_dir: Path) -> None:
    store = LocalStore(site_dir)
    assert _json_at(store, EMPTY_KEY) == []
    written = list(store.walk("_q/"))
    assert [k for k in written if k.startswith("_q/series/SeriesInstanceUID/")]
    assert [k for k in written if k.startswith("_q/studies/StudyInstanceUID/")]
    # no answer of the sample reaches 100 rows: none has a page of its own
    assert not [k for k in written if ".offset." in k]
    # series?StudyInstanceUID=S is the study's own index: nothing of it under _q/
    assert not [k for k in written if k.startswith("_q/series/StudyInstanceUID/")]
    for study in store.children("studies/"):
        key = route("series", {"StudyInstanceUID": [study]})
        assert key == f"studies/{study}/series"
        rows = _json_at(store, key)
        assert rows and {r["0020000D"]["Value"][0] for r in rows} == {study}
        assert route("series", {"StudyInstanceUID": [study], "offset": [str(len(rows))]}) == EMPTY_KEY


@pytest.mark.integration
def test_paging_by_rows_received_ends_for_every_filter(sample_dir: Path, site_url: str) -> None:
    client = DICOMwebClient(site_url)
    sources = _sources(sample_dir)
    ds = sources[0]
    series_of_study = {s.SeriesInstanceUID for s in sources if s.StudyInstanceUID == ds.StudyInstanceUID}
    series_of_patient = {s.SeriesInstanceUID for s in sources if s.PatientID == ds.PatientID}
    studies_of_patient = {s.StudyInstanceUID for s in sources if s.PatientID == ds.PatientID}
    for search, filters, tag, expected in (
            (client.search_for_series, {"SeriesInstanceUID": ds.SeriesInstanceUID}, "0020000E",
             [ds.SeriesInstanceUID]),
            (client.search_for_studies, {"StudyInstanceUID": ds.StudyInstanceUID}, "0020000D",
             [ds.StudyInstanceUID]),
            (client.search_for_series, {"StudyInstanceUID": ds.StudyInstanceUID}, "0020000E",
             sorted(series_of_study)),
            (client.search_for_series, {"PatientID": ds.PatientID}, "0020000E",
             sorted(series_of_patient)),
            (client.search_for_studies, {"PatientID": ds.PatientID}, "0020000D",
             sorted(studies_of_patient))):
        rows = search(search_filters=filters, get_remaining=True)  # type: ignore[operator]
        assert sorted(r[tag]["Value"][0] for r in rows) == expected, filters
    # a one-row answer is empty at every later offset, whatever the limit
    assert client.search_for_series(search_filters={"SeriesInstanceUID": ds.SeriesInstanceUID},
                                    offset=100, limit=100) == []


def _series_rows(study: str, count: int, patients: int = 1) -> list[dict]:  # type: ignore[type-arg]
    """QIDO rows of ``count`` CT series of ``study``, spread over patients P1 … P<patients>."""
    rows = []
    for n in range(1, count + 1):
        meta = {"0020000D": {"vr": "UI", "Value": [study]},
                "0020000E": {"vr": "UI", "Value": [f"{study}.{n}"]},
                "00200011": {"vr": "IS", "Value": [n]}, "00080060": {"vr": "CS", "Value": ["CT"]},
                "00100020": {"vr": "LO", "Value": [f"P{n % patients + 1}"]}}
        rows.append(series_row(meta, 3))
    return rows


def _aggregate_study(store: LocalStore, study: str, count: int, threads: int) -> None:
    rows = _series_rows(study, count)
    with Writer(store, threads) as writer:
        writer.submit(_put_json, store, keys.study_series(study), rows)
        aggregate_roots(store, [(study, study_row(rows), rows)], writer=writer)


def _tree(root: Path) -> dict[str, tuple[bytes, bytes]]:
    store = LocalStore(root)
    return {k: (store.get(k), json.dumps(store.headers(k), sort_keys=True).encode())
            for k in store.walk()}


@pytest.mark.parametrize("threads", [1, 4])
def test_pages_follow_the_count_and_stale_pages_go(tmp_path: Path, threads: int) -> None:
    store = LocalStore(tmp_path / "site")
    study = "1.2.3"
    pages = routing.pages_base("series", "StudyInstanceUID", study)
    assert pages is not None
    patient = route("series", {"PatientID": ["P1"]})
    _aggregate_study(store, study, 150, threads)
    for base in (pages, patient, routing.all_key("series")):
        assert len(_json_at(store, routing.page_key(base, 100))) == 50
        assert _json_at(store, routing.page_key(base, 150)) == []
    # every series is CT: the modality answer is the root index, byte for byte
    assert store.get(route("series", {"Modality": ["CT"]})) == store.get("series")
    assert store.headers(route("series", {"Modality": ["CT"]}))["x-amz-meta-rows"] == "150"  # type: ignore[index]
    _aggregate_study(store, study, 120, threads)  # fewer series: the old end page goes
    for base in (pages, patient, routing.all_key("series")):
        assert len(_json_at(store, routing.page_key(base, 100))) == 20
        assert _json_at(store, routing.page_key(base, 120)) == []
        assert store.headers(routing.page_key(base, 150)) is None
    assert len(_json_at(store, route("series", {"StudyInstanceUID": [study]}))) == 120
    # a rerun changes nothing, and one writer thread or four write the same bytes
    before = _tree(tmp_path / "site")
    _aggregate_study(store, study, 120, threads)
    assert _tree(tmp_path / "site") == before
    other = LocalStore(tmp_path / "other")
    _aggregate_study(other, study, 150, 5 - threads)
    _aggregate_study(other, study, 120, 5 - threads)
    assert _tree(tmp_path / "other") == before


class _CountingStore(LocalStore):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.written: list[str] = []

    def put(self, spec: keys.ObjectSpec, pieces: Sequence[Piece],
            meta: dict[str, str] | None = None) -> None:
        self.written.append(spec.key)
        super().put(spec, pieces, meta)


def test_pages_whose_rows_did_not_change_are_not_written_again(tmp_path: Path) -> None:
    store = _CountingStore(tmp_path / "site")
    _aggregate_study(store, "1.2.3", 250, 1)
    store.written.clear()
    _aggregate_study(store, "9.9", 1, 1)  # sorts after every row of 1.2.3: rows 0-249 stay put
    pages = {k for k in store.written if k.startswith("_q/series/all.offset.")}
    assert pages == {"_q/series/all.offset.200", "_q/series/all.offset.251"}
    assert store.headers("_q/series/all.offset.250") is None
    assert len(_json_at(store, "_q/series/all.offset.200")) == 51
    assert _json_at(store, "_q/series/all.offset.100")[0]["0020000E"]["Value"] == ["1.2.3.101"]
    # the CT answer holds every series: its pages follow the root's
    ct = route("series", {"Modality": ["CT"]})
    assert {k for k in store.written if k.startswith(f"{ct}.offset.")} == {
        f"{ct}.offset.200", f"{ct}.offset.251"}
