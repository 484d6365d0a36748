"""A stand-in for TCIA's NBIA REST API v4 on 127.0.0.1, with fault injection.

It answers the three endpoints :mod:`static_dicomweb.sources.nbia` uses, shaped after the
server's source (``CBIIT/NBIA-TCIA``, ``software/nbia-api/src/gov/nih/nci/nbia/restAPI/v4/``):

- ``getSeries`` filters on ``Collection`` and ``PatientID`` (case-insensitively),
  ``StudyInstanceUID``, ``Modality`` and ``SeriesInstanceUID``; no match is an empty 200;
- ``getUpdatedSeries?fromDate=dd/MM/yyyy`` lists series whose ``MaxSubmissionTimestamp``
  is after midnight of that day, and answers 400 to any other parameter, as NBIA does;
- ``getImage?SeriesInstanceUID=`` serves the series as a ZIP (``LICENSE`` first, then
  ``00000001.dcm``...), deterministic bytes so that ranges of two answers fit together; a
  series it does not know is a 400 with NBIA's message.  Unlike NBIA it sends a
  ``Content-Length`` and honours ``Range: bytes=N-`` (both can be switched off).

Knobs (attributes of :attr:`NbiaStandin.faults`, changed between requests): the next N
requests fail with ``503`` and ``Retry-After: 0``; the next N downloads close the
connection after half of the body; ``Range`` is ignored; the ZIP is replaced by bytes that
are not a ZIP; ``ImageCount`` is off by some number; an extra member (e.g. ``../evil.dcm``)
is added to every ZIP; downloads are slowed down (to observe concurrency).

Test data provenance: the DICOM files come from :func:`static_dicomweb_sample.generate_sample`
(deterministic, synthetic); nothing is downloaded.
"""

from __future__ import annotations

import io
import json
import threading
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import parse_qs, urlsplit

import pydicom

from static_dicomweb_sample import SampleSpec, generate_sample

API_PREFIX = "/nbia-api/services/v4/"
LICENSE_TEXT = b"Creative Commons Attribution 4.0 International License (stand-in text)\n"
ZIP_DATE = (2024, 1, 1, 0, 0, 0)
NOT_A_ZIP = b"<html><body>Proxy error: this is not a ZIP</body></html>\n" * 8


@dataclass
class StandinSeries:
    """One series the stand-in serves."""

    uid: str
    study_uid: str
    patient_id: str
    modality: str
    collection: str
    description: str
    #: Latest submission time (NBIA's ``TimeStamp`` / ``MaxSubmissionTimestamp``), server-local.
    submitted: datetime
    #: Member name in the ZIP -> the original Part 10 bytes.
    files: dict[str, bytes]

    def row(self, *, updated: bool, count_delta: int = 0) -> dict[str, object]:
        stamp = f"{self.submitted:%Y-%m-%d %H:%M:%S}.0"  # java.sql.Timestamp.toString()
        row: dict[str, object] = {
            "SeriesInstanceUID": self.uid,
            "StudyInstanceUID": self.study_uid,
            "Modality": self.modality,
            "SeriesDescription": self.description,
            "BodyPartExamined": "CHEST",
            "Collection": self.collection,
            "PatientID": self.patient_id,
            "Manufacturer": "static-dicomweb",
            "ImageCount": len(self.files) + count_delta,
            "FileSize": sum(len(b) for b in self.files.values()),
            "DateReleased": f"{self.submitted + timedelta(days=1):%Y-%m-%d %H:%M:%S}.0",
            "LicenseName": "Creative Commons Attribution 4.0 International License",
        }
        row["MaxSubmissionTimestamp" if updated else "TimeStamp"] = stamp
        if updated:
            row["ReleasedStatus"] = "Yes"
        return row

    def zip_bytes(self, extra: tuple[str, bytes] | None = None) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            members = [("LICENSE", LICENSE_TEXT), *sorted(self.files.items())]
            if extra is not None:
                members.append(extra)
            for name, data in members:
                info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                archive.writestr(info, data)
        return buffer.getvalue()


def build_series(out: Path) -> list[StandinSeries]:
    """Three synthetic patients: P001 and P002 in NLST, P003 in another collection.

    Series ``i`` (in patient, study, series order) was last submitted on 2024-01-(i+1) at
    10:00, server time.
    """
    paths = generate_sample(out, SampleSpec(patients=3, slices=3, rows=32, columns=32))
    by_series: dict[Path, list[Path]] = {}
    for path in paths:
        by_series.setdefault(path.parent, []).append(path)
    series: list[StandinSeries] = []
    for index, (folder, files) in enumerate(sorted(by_series.items())):
        first = pydicom.dcmread(files[0], stop_before_pixels=True)
        patient = str(first.PatientID)
        series.append(StandinSeries(
            uid=str(first.SeriesInstanceUID),
            study_uid=str(first.StudyInstanceUID),
            patient_id=patient,
            modality=str(first.Modality),
            collection="NLST" if not patient.endswith("3") else "LIDC-IDRI",
            description=str(first.get("SeriesDescription", "")),
            submitted=datetime(2024, 1, 1, 10, 0) + timedelta(days=index),
            files={f"{n:08d}.dcm": p.read_bytes() for n, p in enumerate(sorted(files), start=1)},
        ))
        assert folder.name == series[-1].uid
    return series


@dataclass
class Faults:
    """What the stand-in does wrong; counters go down as they are used."""

    fail_next: int = 0
    drop_next_downloads: int = 0
    ignore_range: bool = False
    send_length: bool = True
    corrupt_zip: bool = False
    image_count_delta: int = 0
    extra_member: tuple[str, bytes] | None = None
    download_delay: float = 0.0


@dataclass(frozen=True)
class Recorded:
    """One request the stand-in received."""

    endpoint: str
    params: dict[str, str]
    headers: dict[str, str]


@dataclass
class _State:
    series: list[StandinSeries]
    faults: Faults = field(default_factory=Faults)
    requests: list[Recorded] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    active_downloads: int = 0
    max_active_downloads: int = 0
    zips: dict[str, bytes] = field(default_factory=dict)

    def archive(self, series: StandinSeries) -> bytes:
        """What ``getImage`` sends for ``series``: its ZIP (built once per extra member), or not a ZIP."""
        if self.faults.corrupt_zip:
            return NOT_A_ZIP
        key = f"{series.uid}|{self.faults.extra_member!r}"
        with self.lock:
            if key not in self.zips:
                self.zips[key] = series.zip_bytes(self.faults.extra_member)
            return self.zips[key]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        state = self.server.state
        split = urlsplit(self.path)
        query = parse_qs(split.query, keep_blank_values=True)
        params = {k: v[0] for k, v in query.items()}
        endpoint = split.path.removeprefix(API_PREFIX) if split.path.startswith(API_PREFIX) else split.path
        with state.lock:
            state.requests.append(Recorded(endpoint, params, {k: v for k, v in self.headers.items()}))
            failing = state.faults.fail_next > 0
            if failing:
                state.faults.fail_next -= 1
        if failing:
            self._send(503, b"Service Unavailable", "text/plain", {"Retry-After": "0"})
        elif endpoint == "getSeries":
            self._get_series(params)
        elif endpoint == "getUpdatedSeries":
            self._get_updated_series(params)
        elif endpoint == "getImage":
            self._get_image(params)
        else:
            self._send(404, b"Not Found", "text/plain")

    def _send(self, status: int, body: bytes, content_type: str,
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, rows: list[dict[str, object]]) -> None:
        if not rows:  # NBIA's formatResponse: Response.ok().build()
            self._send(200, b"", "application/json")
        else:
            self._send(200, json.dumps(rows).encode(), "application/json")

    def _get_series(self, params: dict[str, str]) -> None:
        state = self.server.state

        def keep(s: StandinSeries) -> bool:
            return all((
                "Collection" not in params or s.collection.upper() == params["Collection"].upper(),
                "PatientID" not in params or s.patient_id.upper() == params["PatientID"].upper(),
                "StudyInstanceUID" not in params or s.study_uid == params["StudyInstanceUID"],
                "Modality" not in params or s.modality == params["Modality"],
                "SeriesInstanceUID" not in params or s.uid == params["SeriesInstanceUID"],
            ))

        delta = state.faults.image_count_delta
        self._json([s.row(updated=False, count_delta=delta) for s in state.series if keep(s)])

    def _get_updated_series(self, params: dict[str, str]) -> None:
        state = self.server.state
        extra = sorted(set(params) - {"fromDate", "format"})
        if extra:
            message = (f"Invalid query parameter: '{extra[0]}'. Allowed parameters are: "
                       f"[fromDate, format]")
            self._send(400, message.encode(), "text/plain")
            return
        try:
            since = datetime.strptime(params.get("fromDate", "01/01/1900"), "%d/%m/%Y")
        except ValueError:
            self._send(400, b"fromDate must be dd/MM/yyyy", "text/plain")
            return
        delta = state.faults.image_count_delta
        self._json([s.row(updated=True, count_delta=delta) for s in state.series if s.submitted > since])

    def _get_image(self, params: dict[str, str]) -> None:
        state = self.server.state
        uid = params.get("SeriesInstanceUID")
        if uid is None:
            self._send(400, b"A parameter, SeriesInstanceUID, is required for this API call.",
                       "application/json")
            return
        found = [s for s in state.series if s.uid == uid]
        if not found:
            self._send(400, (f"The user has not been granted the access to image with given "
                             f"SeriesInstanceUID,{uid}. Please contact System Admin to resolve "
                             f"this issue.").encode(), "application/json")
            return
        data = state.archive(found[0])
        start = self._range_start(len(data))
        if start is None:
            self._send(416, b"", "text/plain", {"Content-Range": f"bytes */{len(data)}"})
            return
        self._download(uid, data, start)

    def _range_start(self, size: int) -> int | None:
        """The first byte to send: ``N`` of ``Range: bytes=N-`` (the only form taken), else 0.

        None when the range is another form or starts past the end (a 416).
        """
        range_header = self.headers.get("Range")
        if not range_header or self.server.state.faults.ignore_range:
            return 0
        first, _, last = range_header.strip().removeprefix("bytes=").partition("-")
        if not first.isdigit() or last or int(first) >= size:
            return None
        return int(first)

    def _download(self, uid: str, data: bytes, start: int) -> None:
        """Send ``data[start:]`` as the series' attachment, with the download faults (a cut, a delay)."""
        state = self.server.state
        faults = state.faults
        body = data[start:]
        with state.lock:
            drop = faults.drop_next_downloads > 0
            if drop:
                faults.drop_next_downloads -= 1
            state.active_downloads += 1
            state.max_active_downloads = max(state.max_active_downloads, state.active_downloads)
        try:
            self.send_response(206 if start else 200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Disposition", f'attachment; filename="{uid}.zip"')
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            if faults.send_length:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if faults.download_delay:
                threading.Event().wait(faults.download_delay)
            if drop:
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
            else:
                self.wfile.write(body)
        finally:
            with state.lock:
                state.active_downloads -= 1


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: _State


class NbiaStandin:
    """The stand-in server, started in a thread on 127.0.0.1 (a free port).

    Parameters
    ----------
    series
        What it serves (see :func:`build_series`).

    """

    def __init__(self, series: Sequence[StandinSeries]) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.state = _State(series=list(series))
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="nbia-standin", daemon=True)
        port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{port}{API_PREFIX}"

    @property
    def faults(self) -> Faults:
        return self._server.state.faults

    @property
    def series(self) -> list[StandinSeries]:
        return self._server.state.series

    @property
    def requests(self) -> list[Recorded]:
        with self._server.state.lock:
            return list(self._server.state.requests)

    @property
    def max_active_downloads(self) -> int:
        return self._server.state.max_active_downloads

    def requests_to(self, endpoint: str) -> list[Recorded]:
        return [r for r in self.requests if r.endpoint == endpoint]

    def zip_of(self, uid: str) -> bytes:
        return next(s for s in self.series if s.uid == uid).zip_bytes()

    def start(self) -> NbiaStandin:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> NbiaStandin:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

