"""NbiaSource against a stand-in NBIA v4 server on 127.0.0.1 (tests/nbia_standin.py).

Test data provenance: synthetic series from ``static_dicomweb_sample`` (see
``nbia_standin.build_series``); nothing is downloaded and no real endpoint is called.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests

from static_dicomweb.errors import PermanentError, StaticDicomwebError
from static_dicomweb.sources import SeriesRef, skip_localizers
from static_dicomweb.sources.nbia import (
    COMPLETE_MARKER,
    DEFAULT_BASE_URL,
    CorruptArchiveError,
    InstanceCountError,
    NbiaRequestError,
    NbiaSource,
    SourceUnavailableError,
    UnsafeArchiveError,
    _parse_timestamp,
)

from .nbia_standin import NbiaStandin, StandinSeries, build_series

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> list[StandinSeries]:
    return build_series(tmp_path_factory.mktemp("nbia-sample"))


@pytest.fixture
def standin(dataset: list[StandinSeries]) -> Iterator[NbiaStandin]:
    with NbiaStandin(dataset) as server:
        yield server


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


def make_source(standin: NbiaStandin, session: requests.Session, **kwargs: object) -> NbiaSource:
    options: dict[str, object] = {"backoff": 0.001, "max_backoff": 0.01, "timeout": 5.0}
    options.update(kwargs)
    return NbiaSource(base_url=standin.url, session=session, **options)  # type: ignore[arg-type]


def nlst(dataset: list[StandinSeries]) -> list[StandinSeries]:
    return [s for s in dataset if s.collection == "NLST"]


def ref_of(series: StandinSeries, standin: NbiaStandin, session: requests.Session) -> SeriesRef:
    (ref,) = make_source(standin, session).list_series(series_uids=[series.uid])
    return ref


def axial(dataset: list[StandinSeries]) -> StandinSeries:
    return next(s for s in nlst(dataset) if len(s.files) == 3)


def axial_ref(dataset: list[StandinSeries], standin: NbiaStandin,
              session: requests.Session) -> tuple[StandinSeries, SeriesRef]:
    """The axial NLST series of the stand-in and the reference NBIA lists for it."""
    series = axial(dataset)
    return series, ref_of(series, standin, session)


def assert_same_files(paths: list[Path], series: StandinSeries) -> None:
    assert paths == sorted(paths)
    assert {p.name: p.read_bytes() for p in paths} == series.files


# -- listing ---------------------------------------------------------------------------------


def test_defaults_point_at_nlst_without_any_request() -> None:
    source = NbiaSource()
    assert source.collection == "NLST"
    assert source.base_url == DEFAULT_BASE_URL == "https://nlst.cancerimagingarchive.net/nbia-api/services/v4/"


def test_list_series_of_the_collection(standin: NbiaStandin, session: requests.Session,
                                       dataset: list[StandinSeries]) -> None:
    refs = list(make_source(standin, session).list_series())
    assert [r.series_uid for r in refs] == [s.uid for s in nlst(dataset)]
    assert {r.patient_id for r in refs} == {"SDW0-P001", "SDW0-P002"}
    first, expected = refs[0], nlst(dataset)[0]
    assert first == SeriesRef(series_uid=expected.uid, study_uid=expected.study_uid,
                              patient_id=expected.patient_id, modality="CT",
                              instances=len(expected.files),
                              location=f"{standin.url}getImage?SeriesInstanceUID={expected.uid}")
    (request,) = standin.requests
    assert request.endpoint == "getSeries"
    assert request.params == {"Collection": "NLST"}
    other = list(make_source(standin, session, collection="lidc-idri").list_series())
    assert {r.patient_id for r in other} == {"SDW0-P003"}


def test_list_series_filters(standin: NbiaStandin, session: requests.Session,
                             dataset: list[StandinSeries]) -> None:
    source = make_source(standin, session)
    by_patient = list(source.list_series(patient_ids=["sdw0-p002", "SDW0-P003"]))
    assert {r.patient_id for r in by_patient} == {"SDW0-P002"}  # P003 is not in NLST
    assert [r.params for r in standin.requests_to("getSeries")] == [
        {"Collection": "NLST", "PatientID": "sdw0-p002"}, {"Collection": "NLST", "PatientID": "SDW0-P003"}]
    wanted = [nlst(dataset)[1].uid, nlst(dataset)[0].uid]
    assert [r.series_uid for r in source.list_series(series_uids=wanted)] == wanted
    assert len(list(source.list_series(modality="CT"))) == len(nlst(dataset))
    assert list(source.list_series(modality="MR")) == []  # an empty 200, as NBIA answers
    # the sample's series hold 1-3 images: skip_localizers (the callers' filter) drops them all
    assert list(skip_localizers(source.list_series())) == []
    three = [r.series_uid for r in skip_localizers(source.list_series(), min_instances=3)]
    assert three == [s.uid for s in nlst(dataset) if len(s.files) >= 3]


def test_list_series_updated_since(standin: NbiaStandin, session: requests.Session,
                                   dataset: list[StandinSeries]) -> None:
    source = make_source(standin, session)
    since = datetime(2024, 1, 3, 10, 0)  # series 2 and later (NLST: 2 .. 5)
    refs = list(source.list_series(since=since))
    expected = [s.uid for s in nlst(dataset) if s.submitted >= since]
    assert [r.series_uid for r in refs] == expected
    (request,) = standin.requests
    assert request.endpoint == "getUpdatedSeries"
    assert request.params == {"fromDate": "02/01/2024"}  # dd/MM/yyyy, one day early, nothing else
    # a window [since, until) with aware datetimes (UTC) splits the series exactly
    until = datetime(2024, 1, 5, 10, 0, tzinfo=UTC)
    window = list(source.list_series(since=since.replace(tzinfo=UTC), until=until))
    later = list(source.list_series(since=until))
    assert [r.series_uid for r in window] + [r.series_uid for r in later] == expected
    assert [r.series_uid for r in window] == [s.uid for s in nlst(dataset)
                                              if since <= s.submitted < until.replace(tzinfo=None)]
    # until alone uses getSeries and cuts client side
    before = list(source.list_series(until=datetime(2024, 1, 2, 12, 0)))
    assert [r.series_uid for r in before] == [s.uid for s in nlst(dataset)[:2]]
    assert list(source.list_series(since=datetime(2030, 1, 1))) == []


def test_listing_retries_503_then_succeeds(standin: NbiaStandin, session: requests.Session,
                                           dataset: list[StandinSeries]) -> None:
    standin.faults.fail_next = 2
    refs = list(make_source(standin, session, max_attempts=3).list_series())
    assert len(refs) == len(nlst(dataset))
    assert len(standin.requests_to("getSeries")) == 3


def test_listing_gives_up_with_a_retryable_error(standin: NbiaStandin,
                                                 session: requests.Session) -> None:
    standin.faults.fail_next = 100
    with pytest.raises(SourceUnavailableError, match=r"HTTP 503.*after 3 attempt") as caught:
        list(make_source(standin, session, max_attempts=3).list_series())
    assert isinstance(caught.value, StaticDicomwebError)
    assert not isinstance(caught.value, PermanentError)
    assert len(standin.requests) == 3


def test_connection_refused_is_retryable(session: requests.Session) -> None:
    with NbiaStandin([]) as gone:
        url = gone.url
    source = NbiaSource(base_url=url, session=session, max_attempts=2, backoff=0.001, timeout=2.0)
    with pytest.raises(SourceUnavailableError, match="ConnectionError"):
        list(source.list_series())


def test_a_refused_request_is_permanent(standin: NbiaStandin, session: requests.Session,
                                        tmp_path: Path) -> None:
    ghost = SeriesRef(series_uid="1.2.3.4.5.6.7.8.9")
    with pytest.raises(NbiaRequestError, match=r"HTTP 400.*not been granted"):
        make_source(standin, session).fetch(ghost, tmp_path)
    assert len(standin.requests) == 1  # not retried
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("value", "expected"), [
    ("2024-01-31 12:34:56.0", datetime(2024, 1, 31, 12, 34, 56)),
    ("2024-01-31T12:34:56.123456789", datetime(2024, 1, 31, 12, 34, 56, 123456)),
    ("2024-01-31T12:34:56+01:00", datetime(2024, 1, 31, 11, 34, 56)),
    (1706704496000, datetime(2024, 1, 31, 12, 34, 56)),
    ("31/01/2024", None), ("", None), (None, None), (True, None),
])
def test_parse_timestamp(value: object, expected: datetime | None) -> None:
    assert _parse_timestamp(value) == expected


# -- fetching --------------------------------------------------------------------------------


def test_fetch_verifies_and_unpacks(standin: NbiaStandin, session: requests.Session,
                                    dataset: list[StandinSeries], tmp_path: Path,
                                    caplog: pytest.LogCaptureFixture) -> None:
    series = nlst(dataset)[0]
    ref = ref_of(series, standin, session)
    caplog.set_level(logging.INFO, logger="static_dicomweb.sources.nbia")
    paths = make_source(standin, session).fetch(ref, tmp_path)
    assert_same_files(paths, series)
    assert all(p.parent == tmp_path / series.uid for p in paths)
    assert not (tmp_path / series.uid / "LICENSE").exists()  # NBIA's license member is not DICOM
    assert (tmp_path / series.uid / COMPLETE_MARKER).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [series.uid]  # no .zip, .part left
    (download,) = standin.requests_to("getImage")
    assert download.params == {"SeriesInstanceUID": series.uid}
    assert "Range" not in download.headers
    assert any("bytes" in r.getMessage() and " s" in r.getMessage() for r in caplog.records)


def test_second_fetch_makes_no_request(standin: NbiaStandin, session: requests.Session,
                                       dataset: list[StandinSeries], tmp_path: Path) -> None:
    series, ref = axial_ref(dataset, standin, session)
    source = make_source(standin, session)
    first = source.fetch(ref, tmp_path)
    seen = len(standin.requests)
    assert source.fetch(ref, tmp_path) == first
    assert len(standin.requests) == seen
    # an unpack that never finished (no marker) is done again
    (tmp_path / series.uid / COMPLETE_MARKER).unlink()
    (tmp_path / series.uid / "stray.tmp").write_bytes(b"half")
    again = source.fetch(ref, tmp_path)
    assert again == first
    assert not (tmp_path / series.uid / "stray.tmp").exists()
    assert len(standin.requests_to("getImage")) == 2


def test_keep_zip(standin: NbiaStandin, session: requests.Session, dataset: list[StandinSeries],
                  tmp_path: Path) -> None:
    series = axial(dataset)
    make_source(standin, session, keep_zip=True).fetch(ref_of(series, standin, session), tmp_path)
    assert (tmp_path / f"{series.uid}.zip").read_bytes() == standin.zip_of(series.uid)


def test_resume_after_a_dropped_connection(standin: NbiaStandin, session: requests.Session,
                                           dataset: list[StandinSeries], tmp_path: Path) -> None:
    series, ref = axial_ref(dataset, standin, session)
    standin.faults.drop_next_downloads = 1
    paths = make_source(standin, session).fetch(ref, tmp_path)
    first, second = standin.requests_to("getImage")
    assert "Range" not in first.headers
    half = len(standin.zip_of(series.uid)) // 2
    assert second.headers["Range"] == f"bytes={half}-"
    assert_same_files(paths, series)


def test_range_ignored_restarts_from_zero(standin: NbiaStandin, session: requests.Session,
                                          dataset: list[StandinSeries], tmp_path: Path) -> None:
    series, ref = axial_ref(dataset, standin, session)
    standin.faults.drop_next_downloads = 1
    standin.faults.ignore_range = True
    paths = make_source(standin, session).fetch(ref, tmp_path)
    assert [("Range" in r.headers) for r in standin.requests_to("getImage")] == [False, True]
    assert_same_files(paths, series)


def test_a_partial_file_from_an_earlier_run_is_resumed(standin: NbiaStandin,
                                                       session: requests.Session,
                                                       dataset: list[StandinSeries],
                                                       tmp_path: Path) -> None:
    series, ref = axial_ref(dataset, standin, session)
    data = standin.zip_of(series.uid)
    (tmp_path / f"{series.uid}.zip.part").write_bytes(data[:100])
    assert_same_files(make_source(standin, session).fetch(ref, tmp_path), series)
    (download,) = standin.requests_to("getImage")
    assert download.headers["Range"] == "bytes=100-"


def test_drop_without_content_length_is_caught_by_verification(
        standin: NbiaStandin, session: requests.Session, dataset: list[StandinSeries],
        tmp_path: Path) -> None:
    # like NBIA: a streamed ZIP without Content-Length; a cut looks like a clean end
    series, ref = axial_ref(dataset, standin, session)
    standin.faults.send_length = False
    standin.faults.drop_next_downloads = 1
    paths = make_source(standin, session).fetch(ref, tmp_path)
    assert len(standin.requests_to("getImage")) == 2
    assert_same_files(paths, series)


def test_download_retries_503(standin: NbiaStandin, session: requests.Session,
                              dataset: list[StandinSeries], tmp_path: Path) -> None:
    series, ref = axial_ref(dataset, standin, session)
    standin.faults.fail_next = 2
    assert_same_files(make_source(standin, session, max_attempts=3).fetch(ref, tmp_path), series)
    assert len(standin.requests_to("getImage")) == 3


def test_corrupt_zip_names_the_series(standin: NbiaStandin, session: requests.Session,
                                      dataset: list[StandinSeries], tmp_path: Path) -> None:
    series, ref = axial_ref(dataset, standin, session)
    standin.faults.corrupt_zip = True
    with pytest.raises(CorruptArchiveError, match=rf"series {series.uid}: not a ZIP") as caught:
        make_source(standin, session, verify_attempts=2).fetch(ref, tmp_path)
    assert isinstance(caught.value, PermanentError)
    assert len(standin.requests_to("getImage")) == 2  # downloaded again once, then given up
    assert list(tmp_path.iterdir()) == []


def test_wrong_instance_count_is_permanent(standin: NbiaStandin, session: requests.Session,
                                           dataset: list[StandinSeries], tmp_path: Path) -> None:
    series = axial(dataset)
    standin.faults.image_count_delta = 1
    ref = ref_of(series, standin, session)
    assert ref.instances == 4
    with pytest.raises(InstanceCountError, match=rf"series {series.uid}: NBIA lists 4 instance\(s\) "
                                                 rf"but the archive holds 3 DICOM file") as caught:
        make_source(standin, session, verify_attempts=1).fetch(ref, tmp_path)
    assert isinstance(caught.value, PermanentError)
    assert (caught.value.expected, caught.value.found) == (4, 3)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("member", ["../evil.dcm", "/tmp/evil.dcm", "a/../../evil.dcm",
                                    "..\\evil.dcm", "C:/evil.dcm"])
def test_path_traversal_member_is_rejected(standin: NbiaStandin, session: requests.Session,
                                           dataset: list[StandinSeries], tmp_path: Path,
                                           member: str) -> None:
    series, ref = axial_ref(dataset, standin, session)
    standin.faults.extra_member = (member, b"not for you")
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeArchiveError, match=rf"series {series.uid}: member") as caught:
        make_source(standin, session).fetch(ref, dest)
    assert isinstance(caught.value, PermanentError)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["dest"]


def test_downloads_respect_the_concurrency_limit(standin: NbiaStandin, session: requests.Session,
                                                 dataset: list[StandinSeries],
                                                 tmp_path: Path) -> None:
    source = make_source(standin, session, concurrency=2)
    refs = list(source.list_series())[:4]
    standin.faults.download_delay = 0.15
    errors: list[BaseException] = []

    def fetch(ref: SeriesRef) -> None:
        try:
            source.fetch(ref, tmp_path)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=fetch, args=(r,)) for r in refs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert errors == []
    assert standin.max_active_downloads == 2
    assert all((tmp_path / r.series_uid / COMPLETE_MARKER).is_file() for r in refs)


def test_invalid_series_uid_is_refused_before_any_request(standin: NbiaStandin,
                                                          session: requests.Session,
                                                          tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="not digits and dots"):
        make_source(standin, session).fetch(SeriesRef(series_uid="1.2/../../etc"), tmp_path)
    assert standin.requests == []


def test_since_in_another_time_zone(standin: NbiaStandin, session: requests.Session) -> None:
    since = datetime(2024, 1, 3, 1, 30, tzinfo=timezone(timedelta(hours=5)))  # 2024-01-02 20:30 UTC
    list(make_source(standin, session).list_series(since=since))
    assert standin.requests[0].params == {"fromDate": "01/01/2024"}
