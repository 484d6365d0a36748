"""TCIA's NBIA REST API (v4) as a :class:`~static_dicomweb.sources.Source`: NLST by default.

Three endpoints of the public, token-free NBIA v4 API are used (checked against the
server's source, ``CBIIT/NBIA-TCIA``, ``software/nbia-api/src/gov/nih/nci/nbia/restAPI/v4/``):

``getSeries?Collection=&PatientID=&StudyInstanceUID=&Modality=&SeriesInstanceUID=``
    A JSON array of series objects (``SeriesInstanceUID``, ``StudyInstanceUID``,
    ``Modality``, ``Collection``, ``PatientID``, ``ImageCount``, ``TimeStamp`` — the
    series' latest submission time, a ``java.sql.Timestamp`` printed as
    ``2020-01-31 12:34:56.0`` — ``DateReleased``, ``FileSize``, ...).  Every parameter is
    optional; ``Collection`` and ``PatientID`` match case-insensitively.  No match is an
    empty ``200`` answer (no body), not ``[]``.
``getUpdatedSeries?fromDate=dd/MM/yyyy``
    The series of *public* collections whose ``MaxSubmissionTimestamp`` is after midnight
    of ``fromDate`` (day, month, year — unlike the other NBIA dates), with the same
    fields, the time stamp named ``MaxSubmissionTimestamp``.  It answers ``400`` to any
    other parameter, so collection, patient and modality are filtered here.
``getImage?SeriesInstanceUID=``
    A ZIP of the series, streamed as it is built (no ``Content-Length``, no ``Range``
    support): a ``LICENSE`` text member, then ``00000001.dcm``, ``00000002.dcm``, ....  A
    series the caller may not read is a ``400`` with a message.  When reading a file
    fails half-way the server still closes the ZIP properly, so a short but valid archive
    is possible: the instance count is what catches it.

Downloads resume with ``Range: bytes=N-`` where a server honours it (a ``200`` answer
restarts from zero, as NBIA's will), are verified (a ZIP whose CRCs hold, as many DICOM
files as ``ImageCount``), are unpacked without ever writing outside the destination, and
are idempotent: a series folder that holds the ``.complete`` marker is not fetched again.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import logging
import random
import shutil
import stat
import threading
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any, Final, TypeVar
from urllib.parse import urlencode

import requests
import urllib3

from static_dicomweb import __version__
from static_dicomweb.errors import (
    InvalidUIDError,
    PermanentError,
    RejectedInstanceError,
    StaticDicomwebError,
)
from static_dicomweb.keys import validate_uid
from static_dicomweb.sources import SeriesRef

__all__ = [
    "COMPLETE_MARKER",
    "DEFAULT_BASE_URL",
    "CorruptArchiveError",
    "InstanceCountError",
    "NbiaRequestError",
    "NbiaSource",
    "SourceUnavailableError",
    "UnsafeArchiveError",
]

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL: Final[str] = "https://nlst.cancerimagingarchive.net/nbia-api/services/v4/"
"""NLST's NBIA server (public, no token needed)."""

COMPLETE_MARKER: Final[str] = ".complete"
"""Written last into ``dest/<SeriesInstanceUID>/``: the series there is complete and verified."""

_CHUNK: Final[int] = 1 << 20
_PROGRESS_EVERY: Final[int] = 64 << 20
_MAX_RETRY_AFTER: Final[float] = 600.0
# getUpdatedSeries takes a day and compares with the server's local, naive time stamps:
# ask for one day more than the window and cut the window here (duplicates, never losses).
_SINCE_MARGIN: Final[timedelta] = timedelta(days=1)
_TIMESTAMP_FIELDS: Final[tuple[str, ...]] = ("TimeStamp", "MaxSubmissionTimestamp")
_USER_AGENT: Final[str] = f"static-dicomweb/{__version__} (+requests)"
_TRANSIENT_REQUEST_ERRORS: Final = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)

_STREAM_ERRORS: Final = (
    *_TRANSIENT_REQUEST_ERRORS,
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    ConnectionError,
    TimeoutError,
)

_T = TypeVar("_T")


class SourceUnavailableError(StaticDicomwebError):
    """NBIA could not be reached or kept failing (connection errors, timeouts, 429, 5xx).

    Not a :class:`~static_dicomweb.errors.PermanentError`: raised once this client's own
    retries are spent, so a later task retry may well succeed.
    """


class NbiaRequestError(PermanentError):
    """NBIA answered a request with an error that a retry cannot fix (4xx but 429).

    Parameters
    ----------
    what
        The request, in words (endpoint and parameters).
    status
        The HTTP status code (0 when the request could not be built).
    detail
        The start of the answer's body, or why the request could not be made.

    """

    def __init__(self, what: str, status: int, detail: str) -> None:
        super().__init__(f"{what}: HTTP {status}: {detail}" if status else f"{what}: {detail}")
        self.status = status


class CorruptArchiveError(RejectedInstanceError):
    """The ZIP of a series is not a ZIP, or its CRCs do not hold, after every re-download."""


class UnsafeArchiveError(RejectedInstanceError):
    """The ZIP of a series holds a member that would be written outside its folder."""


class InstanceCountError(RejectedInstanceError):
    """The ZIP of a series holds another number of DICOM files than NBIA's ``ImageCount``.

    Parameters
    ----------
    path
        The ZIP file.
    series_uid
        The Series Instance UID.
    expected
        ``ImageCount`` as NBIA listed it.
    found
        DICOM files in the archive.

    """

    def __init__(self, path: str, series_uid: str, expected: int, found: int) -> None:
        super().__init__(path, f"series {series_uid}: NBIA lists {expected} instance(s) "
                               f"but the archive holds {found} DICOM file(s)")
        self.series_uid = series_uid
        self.expected = expected
        self.found = found


class _TransientError(Exception):
    """One attempt failed in a way that another attempt may fix."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class _BadArchiveError(Exception):
    """A downloaded archive failed verification; a fresh download may fix it."""

    def __init__(self, error: RejectedInstanceError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True)
class _SeriesFilter:
    """What :meth:`NbiaSource.list_series` keeps of NBIA's rows (None: anything)."""

    collection: str  # case-folded
    patients: set[str] | None  # case-folded, as NBIA compares them
    uids: set[str] | None
    modality: str | None
    lower: datetime | None  # naive UTC, inclusive
    upper: datetime | None  # naive UTC, exclusive

    def keeps(self, row: Mapping[str, Any], ref: SeriesRef) -> bool:
        """Whether a row (and the series it names) passes every filter."""
        collection = row.get("Collection")
        if collection is not None and str(collection).casefold() != self.collection:
            return False
        if self.patients is not None and ref.patient_id.casefold() not in self.patients:
            return False
        if self.uids is not None and ref.series_uid not in self.uids:
            return False
        if self.modality is not None and ref.modality != self.modality:
            return False
        changed = _changed_at(row)
        return changed is None or not (
            (self.lower is not None and changed < self.lower)
            or (self.upper is not None and changed >= self.upper))


class NbiaSource:
    """Series of one collection on an NBIA server (REST API v4), listed and downloaded.

    Parameters
    ----------
    collection
        The NBIA collection (``Collection``), matched case-insensitively as NBIA does.
    base_url
        The API root, ending in ``/v4/`` (tests point it at a local stand-in).
    session
        The HTTP session to use (connection pooling, proxies, adapters); a plain
        :class:`requests.Session` when ``None``.  It is never modified.
    timeout
        ``requests`` timeout: seconds, or ``(connect, read)``; ``read`` bounds each wait
        for bytes of a download, not the whole download.
    max_attempts
        Attempts per request (>= 1) before :class:`SourceUnavailableError`: connection
        errors, timeouts, dropped downloads, ``429`` and ``5xx`` are retried with
        exponential backoff and jitter, or after ``Retry-After`` when the server sends one.
    backoff
        First backoff delay in seconds; it doubles per attempt, up to ``max_backoff``, and
        a random 50–100 % of it is waited.
    max_backoff
        Longest backoff delay in seconds (``Retry-After`` may ask for longer, up to 10 min).
    concurrency
        Most downloads in flight at once through this source (a polite limit), or a
        :class:`threading.BoundedSemaphore` to share one limit between several sources.
    verify_attempts
        Downloads of a series (>= 1) whose archive fails verification (not a ZIP, a CRC
        error, a wrong number of DICOM files) before the fetch fails with a
        :class:`~static_dicomweb.errors.PermanentError`.
    keep_zip
        Keep ``dest/<SeriesInstanceUID>.zip`` after unpacking (deleted by default).

    Notes
    -----
    Nothing is requested before :meth:`list_series` or :meth:`fetch` is called.  Localizers
    (1–3 images) are left out by callers with :func:`~static_dicomweb.sources.skip_localizers`.

    """

    def __init__(
        self,
        collection: str = "NLST",
        *,
        base_url: str = DEFAULT_BASE_URL,
        session: requests.Session | None = None,
        timeout: float | tuple[float, float] = (10.0, 120.0),
        max_attempts: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        concurrency: int | threading.BoundedSemaphore = 4,
        verify_attempts: int = 2,
        keep_zip: bool = False,
    ) -> None:
        if not collection:
            raise ValueError("collection must not be empty")
        if max_attempts < 1 or verify_attempts < 1:
            raise ValueError("max_attempts and verify_attempts must be >= 1")
        self.collection = collection
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.verify_attempts = verify_attempts
        self.keep_zip = keep_zip
        self._session = session if session is not None else requests.Session()
        if isinstance(concurrency, int):
            if concurrency < 1:
                raise ValueError("concurrency must be >= 1")
            self._slots = threading.BoundedSemaphore(concurrency)
        else:
            self._slots = concurrency

    def __repr__(self) -> str:
        return f"NbiaSource({self.collection!r}, base_url={self.base_url!r})"

    # -- listing ---------------------------------------------------------------------------

    def list_series(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        patient_ids: Iterable[str] | None = None,
        series_uids: Iterable[str] | None = None,
        modality: str | None = None,
    ) -> Iterator[SeriesRef]:
        """Series of the collection, optionally only those submitted in ``[since, until)``.

        Parameters
        ----------
        since
            Only series whose latest submission (``TimeStamp``) is at or after this time:
            asked of ``getUpdatedSeries`` (by day, one day early) and cut here.
        until
            Only series whose latest submission is before this time (cut here).
        patient_ids
            Only these Patient IDs (compared case-insensitively, as NBIA does).
        series_uids
            Only these Series Instance UIDs.
        modality
            Only this Modality (e.g. ``"CT"``), matched exactly.

        Yields
        ------
        SeriesRef
            One per series, in the server's order, each once; ``instances`` is NBIA's
            ``ImageCount`` and ``location`` the series' ``getImage`` URL.

        Raises
        ------
        SourceUnavailableError
            NBIA could not be reached after ``max_attempts`` attempts.
        NbiaRequestError
            NBIA refused a request.

        Notes
        -----
        Time stamps are NBIA's naive server times, compared as if they were UTC with
        ``since``/``until`` (aware values are converted to UTC first).  Consecutive windows
        therefore split the series exactly by that time stamp; a series whose time stamp
        cannot be read is kept in every window.

        """
        patients = _unique(patient_ids)
        uids = _unique(series_uids)
        wanted = _SeriesFilter(
            collection=self.collection.casefold(),
            patients={p.casefold() for p in patients} if patients is not None else None,
            uids=set(uids) if uids is not None else None,
            modality=modality,
            lower=_naive_utc(since) if since is not None else None,
            upper=_naive_utc(until) if until is not None else None,
        )
        seen: set[str] = set()
        for row in self._rows(wanted.lower, patients, uids, modality):
            ref = self._ref(row)
            if ref is not None and ref.series_uid not in seen and wanted.keeps(row, ref):
                seen.add(ref.series_uid)
                yield ref

    def _rows(self, since: datetime | None, patients: list[str] | None, uids: list[str] | None,
              modality: str | None) -> Iterator[dict[str, Any]]:
        """The raw series objects of every query needed (filters are applied by the caller)."""
        if since is not None:
            yield from self._query("getUpdatedSeries",
                                   {"fromDate": (since - _SINCE_MARGIN).strftime("%d/%m/%Y")})
            return
        base = {"Collection": self.collection}
        if modality is not None:
            base["Modality"] = modality
        if uids is not None:
            for uid in uids:
                yield from self._query("getSeries", {**base, "SeriesInstanceUID": uid})
        elif patients is not None:
            for patient in patients:
                yield from self._query("getSeries", {**base, "PatientID": patient})
        else:
            yield from self._query("getSeries", base)

    def _ref(self, row: Mapping[str, Any]) -> SeriesRef | None:
        try:
            uid = validate_uid(row.get("SeriesInstanceUID"), what="SeriesInstanceUID")
        except InvalidUIDError as exc:
            logger.warning("NBIA %s lists a series that cannot be stored (%s); skipped",
                           self.collection, exc)
            return None
        return SeriesRef(
            series_uid=uid,
            study_uid=str(row.get("StudyInstanceUID") or ""),
            patient_id=str(row.get("PatientID") or ""),
            modality=str(row.get("Modality") or ""),
            instances=_count(row.get("ImageCount")),
            location=f"{self._url('getImage')}?{urlencode({'SeriesInstanceUID': uid})}",
        )

    def _query(self, endpoint: str, params: Mapping[str, str]) -> list[dict[str, Any]]:
        url = self._url(endpoint)
        what = f"NBIA {endpoint}?{urlencode(params)}"

        def once() -> list[dict[str, Any]]:
            with self._send(url, params, {"Accept": "application/json"}, stream=False) as resp:
                if resp.status_code == 204:
                    return []
                if resp.status_code != 200:
                    raise NbiaRequestError(what, resp.status_code, _snippet(resp.content))
                body = resp.content.strip()
            if not body:  # NBIA answers "no match" with an empty 200
                return []
            try:
                data = json.loads(body)
            except ValueError as exc:
                raise _TransientError(f"the answer is not JSON: {_snippet(body)}") from exc
            if not isinstance(data, list):
                raise NbiaRequestError(what, 200, f"expected a JSON array, got {_snippet(body)}")
            return [row for row in data if isinstance(row, dict)]

        started = time.monotonic()
        rows = self._retrying(what, once)
        logger.info("%s: %d series in %.2f s", what, len(rows), time.monotonic() - started)
        return rows

    # -- fetching --------------------------------------------------------------------------

    def fetch(self, ref: SeriesRef, dest: Path) -> list[Path]:
        """Download, verify and unpack one series into ``dest/<SeriesInstanceUID>/``.

        Parameters
        ----------
        ref
            The series (``instances`` > 0 is checked against the DICOM files received).
        dest
            The download folder (created if needed); it receives ``<uid>.zip.part`` while
            downloading, ``<uid>.zip`` until unpacked and the folder ``<uid>/``.

        Returns
        -------
        list of pathlib.Path
            The series' DICOM files, sorted.  Other archive members (NBIA's ``LICENSE``)
            are not written.

        Raises
        ------
        SourceUnavailableError
            NBIA could not be reached, or kept dropping the download, ``max_attempts`` times.
        NbiaRequestError
            NBIA refused the download (e.g. a series that is not public).
        CorruptArchiveError
            Every one of ``verify_attempts`` downloads was not a valid ZIP.
        InstanceCountError
            Every one of ``verify_attempts`` downloads held another number of DICOM files
            than ``ref.instances``.
        UnsafeArchiveError
            The archive names a member with an absolute path, a drive or ``..``.
        InvalidUIDError
            ``ref.series_uid`` is not a UID (it names files and folders here).

        Notes
        -----
        Idempotent: a folder with its :data:`COMPLETE_MARKER` is returned without any
        request; a partial ``.zip.part`` is resumed; a folder without the marker (an
        interrupted unpack) is replaced.  At most ``concurrency`` downloads of this source
        run at once; fetching the *same* series concurrently into the same ``dest`` is not
        supported.

        """
        uid = validate_uid(ref.series_uid, what="SeriesInstanceUID")
        dest = Path(dest)
        series_dir = dest / uid
        done = _completed(series_dir)
        if done is not None:
            logger.info("series %s: already complete in %s (%d files)", uid, series_dir, len(done))
            return done
        dest.mkdir(parents=True, exist_ok=True)
        zip_path = dest / f"{uid}.zip"
        verify_round = 1
        while True:
            if not zip_path.exists():
                with self._slots:
                    self._download(uid, zip_path)
            try:
                files = self._unpack(ref, uid, zip_path, series_dir)
            except _BadArchiveError as bad:
                zip_path.unlink(missing_ok=True)
                if verify_round >= self.verify_attempts:
                    raise bad.error from None
                logger.warning("%s; downloading it again (%d/%d)", bad.error, verify_round + 1,
                               self.verify_attempts)
                verify_round += 1
                time.sleep(self._backoff_delay(verify_round - 1))
                continue
            except UnsafeArchiveError:
                zip_path.unlink(missing_ok=True)
                raise
            if not self.keep_zip:
                zip_path.unlink(missing_ok=True)
            return files

    def _download(self, uid: str, zip_path: Path) -> None:
        """Stream the series' ZIP into ``<zip>.part`` (resuming), then rename it to ``zip_path``."""
        part = zip_path.with_name(zip_path.name + ".part")
        url = self._url("getImage")
        params = {"SeriesInstanceUID": uid}
        what = f"NBIA getImage of series {uid}"
        started = time.monotonic()
        received = 0

        def once() -> int:
            nonlocal received
            offset = part.stat().st_size if part.exists() else 0
            headers = {"Accept-Encoding": "identity"}
            if offset:
                headers["Range"] = f"bytes={offset}-"
            with self._send(url, params, headers, stream=True) as resp:
                status = resp.status_code
                if status == 416:
                    part.unlink(missing_ok=True)
                    raise _TransientError(f"the server refused bytes={offset}-; restarting from zero", 0.0)
                if status not in (200, 206):
                    raise NbiaRequestError(what, status, _snippet(resp.content))
                if status == 206:
                    start, total = _content_range(resp.headers.get("Content-Range"))
                    if start != offset:
                        part.unlink(missing_ok=True)
                        raise _TransientError(f"Content-Range {resp.headers.get('Content-Range')!r} does "
                                         f"not continue at byte {offset}; restarting from zero", 0.0)
                    mode = "ab"
                    logger.info("series %s: resuming at byte %d", uid, offset)
                else:
                    if offset:
                        logger.info("series %s: the server ignored Range; restarting from zero", uid)
                    offset, mode = 0, "wb"
                    total = _count_or_none(resp.headers.get("Content-Length"))
                encoding = resp.headers.get("Content-Encoding", "identity").strip().lower()
                if encoding not in ("", "identity"):
                    if status == 206:  # byte ranges of an encoded body: cannot be appended
                        part.unlink(missing_ok=True)
                        raise _TransientError(f"a {encoding}-encoded range; restarting from zero", 0.0)
                    total = None  # Content-Length counts encoded bytes
                size = offset
                next_log = size + _PROGRESS_EVERY
                chunks = _chunks(resp)
                with part.open(mode) as out:
                    while True:
                        try:
                            chunk = next(chunks, b"")
                        except _STREAM_ERRORS as exc:
                            raise _TransientError(f"connection lost after byte {size} "
                                                  f"({type(exc).__name__})") from exc
                        if not chunk:
                            break
                        out.write(chunk)
                        size += len(chunk)
                        received += len(chunk)
                        if size >= next_log:
                            logger.info("series %s: %d bytes so far", uid, size)
                            next_log = size + _PROGRESS_EVERY
            if total is not None and size != total:
                if size > total:
                    part.unlink(missing_ok=True)
                raise _TransientError(f"got {size} of {total} bytes")
            part.replace(zip_path)
            return size

        size = self._retrying(what, once)
        seconds = time.monotonic() - started
        logger.info("series %s: downloaded %d bytes (%d received) in %.2f s, %.2f MB/s", uid, size,
                    received, seconds, received / 1e6 / seconds if seconds > 0 else 0.0)

    def _unpack(self, ref: SeriesRef, uid: str, zip_path: Path, series_dir: Path) -> list[Path]:
        """Verify ``zip_path`` and extract its DICOM files into ``series_dir`` (marker last)."""
        problem = _archive_problem(zip_path)
        if problem is not None:
            raise _BadArchiveError(CorruptArchiveError(str(zip_path), f"series {uid}: {problem}"))
        staging = series_dir.with_name(series_dir.name + ".extracting")
        shutil.rmtree(staging, ignore_errors=True)
        try:
            with zipfile.ZipFile(zip_path) as archive:
                plan = _plan(archive, zip_path, uid)
                if ref.instances > 0 and len(plan) != ref.instances:
                    raise _BadArchiveError(InstanceCountError(str(zip_path), uid, ref.instances, len(plan)))
                staging.mkdir(parents=True)
                for info, relative in plan:
                    target = staging.joinpath(*relative.parts)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with archive.open(info) as src, target.open("xb") as out:
                        shutil.copyfileobj(src, out, _CHUNK)
            names = sorted(relative.as_posix() for _, relative in plan)
            marker = {"series_uid": uid, "instances": len(names), "files": names,
                      "archive_bytes": zip_path.stat().st_size, "source": ref.location}
            (staging / COMPLETE_MARKER).write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")
            if series_dir.exists():
                logger.info("series %s: replacing the incomplete folder %s", uid, series_dir)
                shutil.rmtree(series_dir)
            staging.rename(series_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        logger.info("series %s: %d DICOM file(s) in %s", uid, len(names), series_dir)
        return [series_dir / name for name in names]

    # -- HTTP ------------------------------------------------------------------------------

    def _url(self, endpoint: str) -> str:
        return self.base_url + endpoint

    def _send(self, url: str, params: Mapping[str, str], headers: Mapping[str, str], *,
              stream: bool) -> requests.Response:
        """One GET; retryable failures become :class:`_TransientError`, other answers are returned."""
        try:
            resp = self._session.get(url, params=dict(params), timeout=self.timeout, stream=stream,
                                     headers={"User-Agent": _USER_AGENT, **headers})
        except _TRANSIENT_REQUEST_ERRORS as exc:
            raise _TransientError(f"{type(exc).__name__}: {exc}") from exc
        except requests.exceptions.RequestException as exc:
            raise NbiaRequestError(f"GET {url}", 0, f"{type(exc).__name__}: {exc}") from exc
        if resp.status_code == 429 or resp.status_code >= 500:
            retry_after = _retry_after(resp.headers.get("Retry-After"))
            reason = f"HTTP {resp.status_code}"
            if not stream:
                reason += f": {_snippet(resp.content)}"
            resp.close()
            raise _TransientError(reason, retry_after)
        return resp

    def _retrying(self, what: str, once: Callable[[], _T]) -> _T:
        attempt = 1
        while True:
            try:
                return once()
            except _TransientError as exc:
                if attempt >= self.max_attempts:
                    raise SourceUnavailableError(
                        f"{what}: {exc.reason} (gave up after {attempt} attempt(s))") from exc
                delay = exc.retry_after if exc.retry_after is not None else self._backoff_delay(attempt)
                logger.warning("%s: %s; attempt %d of %d in %.2f s", what, exc.reason, attempt + 1,
                               self.max_attempts, delay)
                time.sleep(delay)
                attempt += 1

    def _backoff_delay(self, attempt: int) -> float:
        """Exponential backoff with jitter: 50–100 % of ``backoff * 2**(attempt-1)``, capped."""
        ceiling = min(self.max_backoff, self.backoff * 2.0 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)  # jitter, not cryptography


# -- helpers -------------------------------------------------------------------------------


def _unique(values: Iterable[str] | None) -> list[str] | None:
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]
    return list(dict.fromkeys(str(v) for v in values))


def _naive_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


def _parse_timestamp(value: object) -> datetime | None:
    """NBIA's time stamp (``2020-01-31 12:34:56.0``; also ISO 8601 or epoch milliseconds)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(value / 1000.0, UTC).replace(tzinfo=None)
        except (OverflowError, OSError, ValueError):
            return None
    text = str(value).strip()
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return _naive_utc(parsed)


def _changed_at(row: Mapping[str, Any]) -> datetime | None:
    for field in _TIMESTAMP_FIELDS:
        parsed = _parse_timestamp(row.get(field))
        if parsed is not None:
            return parsed
    return None


def _count(value: object) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(value, 0)
    parsed = _count_or_none(value)
    return parsed if parsed is not None else 0


def _count_or_none(value: object) -> int | None:
    if value is None:
        return None
    try:
        number = int(str(value).strip())
    except ValueError:
        return None
    return number if number >= 0 else None


def _snippet(body: bytes | str, limit: int = 200) -> str:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = " ".join(text.split())
    return repr(text[:limit] + ("…" if len(text) > limit else ""))


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date), capped at 10 minutes."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER)


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """``bytes START-END/TOTAL`` → ``(START, TOTAL)``; ``None`` for what is missing."""
    if not value:
        return None, None
    unit, _, spec = value.strip().partition(" ")
    span, _, total = spec.partition("/")
    start, _, _end = span.partition("-")
    if unit.lower() != "bytes":
        return None, None
    return _count_or_none(start), _count_or_none(total) if total != "*" else None


def _chunks(resp: requests.Response) -> Iterator[bytes]:
    """The body as it arrives: what was received before a drop is kept (``read1``)."""
    read1 = getattr(resp.raw, "read1", None)
    if read1 is None:  # urllib3 < 2.3: iter_content drops a partial last chunk
        yield from resp.iter_content(chunk_size=_CHUNK)
        return
    while chunk := read1(_CHUNK, decode_content=True):
        yield chunk


def _archive_problem(path: Path) -> str | None:
    """Why ``path`` is not a sound ZIP, or ``None`` when every member's CRC holds."""
    try:
        if not zipfile.is_zipfile(path):
            return f"not a ZIP archive ({path.stat().st_size} bytes)"
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, NotImplementedError,
            ValueError) as exc:
        return f"unreadable ZIP archive ({type(exc).__name__}: {exc})"
    if bad is not None:
        return f"member {bad!r} fails its CRC check"
    return None


def _member_path(info: zipfile.ZipInfo, zip_path: Path, uid: str) -> PurePosixPath:
    """The member's path relative to the series folder; refuses anything that could escape it."""
    name = info.filename
    normalized = name.replace("\\", "/")
    parts = [p for p in normalized.split("/") if p not in ("", ".")]
    if ("\x00" in name or normalized.startswith("/") or (len(normalized) > 1 and normalized[1] == ":")
            or ".." in parts or not parts):
        raise UnsafeArchiveError(str(zip_path), f"series {uid}: member {name!r} would be written "
                                                f"outside the series folder")
    mode = info.external_attr >> 16
    if mode and stat.S_ISLNK(mode):
        raise UnsafeArchiveError(str(zip_path), f"series {uid}: member {name!r} is a symbolic link")
    return PurePosixPath(*parts)


def _is_dicom(archive: zipfile.ZipFile, info: zipfile.ZipInfo, relative: PurePosixPath) -> bool:
    """A Part 10 file (``DICM`` at byte 128) or, without a preamble, a member named ``*.dcm``."""
    if relative.suffix.lower() == ".dcm":
        return True
    with archive.open(info) as src:
        head = src.read(132)
    return head[128:132] == b"DICM"


def _plan(archive: zipfile.ZipFile, zip_path: Path,
          uid: str) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """The DICOM members to extract and where; every member's name is checked first."""
    members: list[tuple[zipfile.ZipInfo, PurePosixPath]] = []
    seen: set[str] = set()
    for info in archive.infolist():
        relative = _member_path(info, zip_path, uid)
        if info.is_dir():
            continue
        key = relative.as_posix().casefold()
        if key in seen:
            raise _BadArchiveError(CorruptArchiveError(str(zip_path), f"series {uid}: member "
                                                                 f"{info.filename!r} appears twice"))
        seen.add(key)
        members.append((info, relative))
    plan = []
    for info, relative in members:
        if _is_dicom(archive, info, relative):
            plan.append((info, relative))
        else:
            logger.debug("series %s: skipping non-DICOM member %r", uid, info.filename)
    return plan


def _completed(series_dir: Path) -> list[Path] | None:
    """The files of a completely fetched series folder, or ``None`` if it is not complete."""
    marker = series_dir / COMPLETE_MARKER
    if not marker.is_file():
        return None
    try:
        names = json.loads(marker.read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        logger.warning("%s is unreadable; fetching the series again", marker)
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        logger.warning("%s is malformed; fetching the series again", marker)
        return None
    files = [series_dir / n for n in names]
    missing = [f for f in files if not f.is_file()]
    if missing:
        logger.warning("%s: %d of its files are missing (e.g. %s); fetching the series again",
                       series_dir, len(missing), missing[0].name)
        return None
    return sorted(files)
