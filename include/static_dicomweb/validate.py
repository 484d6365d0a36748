"""Validation of a site against the site contract and PS3.18.

Reads a site the way a client does (through its store: a folder or
``s3://bucket/prefix``; or from an HTTP base URL) and reports each finding
with the key it is about.  A site
conforms when there is no finding of severity ``error``.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import logging
import posixpath
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from . import keys, multipart
from .dicomjson import JsonDict, first
from .errors import KeyNotFoundError, StoreError
from .qido import INSTANCE_ATTRS, SERIES_ATTRS, STUDY_ATTRS
from .reader import SYNTAXES
from .store import Store, open_store
from .thumbnail import decode_frame

log = logging.getLogger(__name__)

NUMBER_VRS = frozenset({"DS", "FL", "FD", "IS", "SL", "SS", "SV", "UL", "US", "UV"})
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
ALL_VRS = NUMBER_VRS | BINARY_VRS | frozenset({
    "AE", "AS", "AT", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "SQ", "ST", "TM", "UC", "UI",
    "UR", "UT"})
_TAG = re.compile(r"^[0-9A-F]{8}$")
STUDY_COMPUTED = ("00080056", "00080061", "00081190", "00201206", "00201208")
SERIES_COMPUTED = ("00080056", "00081190", "00201209")
INSTANCE_COMPUTED = ("00080056", "00081190", "00280008")


@dataclass(frozen=True)
class Response:
    """An object as a client receives it (body decoded from Content-Encoding)."""

    headers: dict[str, str]
    body: bytes


class SiteReader(Protocol):
    """Fetches site objects by key."""

    location: str

    def fetch(self, key: str) -> Response | None:
        """The object at ``key``, or None when there is none."""


class StoreReader:
    """Reads a site through its store (a folder, or S3), headers and bytes as S3 would serve them."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.location = store.url

    def fetch(self, key: str) -> Response | None:
        """Headers and decoded body of ``key``.

        Raises
        ------
        StoreError
            When the object's headers cannot be told (a folder object whose
            multipart body lost its boundary line: "headers lost").
        """
        headers = self.store.headers(key)
        if headers is None:
            return None
        try:
            body = self.store.get(key)
        except KeyNotFoundError:  # deleted between the two reads
            return None
        if headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        return Response(headers, body)


class HttpReader:
    """Reads a site over HTTP (any static host, ``serve``, S3 or CloudFront)."""

    def __init__(self, base_url: str, session: Any = None) -> None:
        import requests

        self.location = base_url.rstrip("/")
        self.session = session or requests.Session()

    def fetch(self, key: str) -> Response | None:
        """GET ``base/key``; requests decodes Content-Encoding."""
        resp = self.session.get(f"{self.location}/{key}", timeout=60)
        if resp.status_code == 404 or resp.status_code == 403:
            return None
        resp.raise_for_status()
        return Response({k.title(): v for k, v in resp.headers.items()}, resp.content)


@dataclass(frozen=True)
class Finding:
    """One problem, with the key (and tag) it is about."""

    severity: str
    key: str
    message: str


@dataclass
class Report:
    """Everything the validator checked and found."""

    site: str
    findings: list[Finding] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)
    thumbnails: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no finding is an error."""
        return not any(f.severity == "error" for f in self.findings)

    def error(self, key: str, message: str) -> None:
        """Record an error."""
        self.findings.append(Finding("error", key, message))

    def warning(self, key: str, message: str) -> None:
        """Record a warning."""
        self.findings.append(Finding("warning", key, message))

    def count(self, what: str, n: int = 1) -> None:
        """Count a checked object."""
        self.checked[what] = self.checked.get(what, 0) + n

    def to_json(self) -> JsonDict:
        """The report as JSON (``_site/validation-report.json``)."""
        return {"site": self.site, "ok": self.ok, "checked": dict(sorted(self.checked.items())),
                "errors": sum(f.severity == "error" for f in self.findings),
                "warnings": sum(f.severity == "warning" for f in self.findings),
                "findings": [asdict(f) for f in self.findings]}


def check_json_model(obj: Any, key: str, report: Report, path: str = "") -> None:
    """Check PS3.18 Annex F rules on one DICOM JSON dataset object."""
    if not isinstance(obj, dict):
        report.error(key, f"{path or 'dataset'} is not a JSON object")
        return
    tags = list(obj)
    if tags != sorted(tags):
        report.error(key, f"{path or 'dataset'}: attributes are not sorted by tag")
    for tag, attr in obj.items():
        where = f"{path}{tag}"
        if not _TAG.match(tag):
            report.error(key, f"{where}: not eight upper-case hex digits")
        elif not isinstance(attr, dict) or attr.get("vr") not in ALL_VRS:
            report.error(key, f"{where}: missing or unknown vr")
        else:
            _check_attribute(attr, where, key, report)


def _check_attribute(attr: JsonDict, where: str, key: str, report: Report) -> None:
    """One attribute: at most one of Value, InlineBinary, BulkDataURI, each well formed."""
    vr = attr["vr"]
    present = [k for k in ("Value", "InlineBinary", "BulkDataURI") if k in attr]
    if len(present) > 1:
        report.error(key, f"{where}: has {' and '.join(present)}; at most one is allowed")
    if "InlineBinary" in attr:
        try:
            base64.b64decode(attr["InlineBinary"], validate=True)
        except (binascii.Error, TypeError):
            report.error(key, f"{where}: InlineBinary is not base64")
    if "BulkDataURI" in attr and not isinstance(attr["BulkDataURI"], str):
        report.error(key, f"{where}: BulkDataURI is not a string")
    values = attr.get("Value")
    if values is None:
        return
    if not isinstance(values, list):
        report.error(key, f"{where}: Value is not an array")
        return
    if vr in BINARY_VRS:
        report.error(key, f"{where}: {vr} must use InlineBinary or BulkDataURI, not Value")
    for index, value in enumerate(values):
        if value is not None:
            _check_value(vr, value, where, index, key, report)


def _check_value(vr: str, value: Any, where: str, index: int, key: str, report: Report) -> None:
    """One element of a Value array: the JSON type its VR calls for (Annex F.2.3)."""
    if vr == "PN":
        if not isinstance(value, dict) or not set(value) <= {"Alphabetic", "Ideographic", "Phonetic"}:
            report.error(key, f"{where}: PN value {index} is not a PersonName object")
    elif vr in NUMBER_VRS:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            report.error(key, f"{where}: {vr} value {index} is {value!r}, not a number")
    elif vr == "SQ":
        check_json_model(value, key, report, f"{where}.{index}.")
    elif not isinstance(value, str):
        report.error(key, f"{where}: {vr} value {index} is not a string")


def _check_required(row: JsonDict, attrs: tuple[tuple[str, str, bool], ...], computed: tuple[str, ...],
                    key: str, level: str, report: Report) -> None:
    missing = [t for t, _, req in attrs if req and t not in row] + [t for t in computed if t not in row]
    if missing:
        report.error(key, f"{level} row {first(row, '0020000D') or ''} lacks required "
                          f"{', '.join(missing)}")


class Validator:
    """Checks a whole site, level by level.

    Parameters
    ----------
    reader
        Where the site is read from.
    decode_frames
        Decode every frame with pydicom (slower, stronger).

    """

    def __init__(self, reader: SiteReader, *, decode_frames: bool = True) -> None:
        self.reader = reader
        self.decode_frames = decode_frames
        self.report = Report(reader.location)

    def _fetch(self, key: str) -> Response | None:
        """``reader.fetch``, with an object whose headers cannot be read reported, not raised."""
        try:
            return self.reader.fetch(key)
        except StoreError as exc:
            self.report.error(key, str(exc))
            return None

    def _json(self, key: str, *, index: bool = True) -> Any:
        resp = self._fetch(key)
        if resp is None:
            self.report.error(key, "missing")
            return None
        self.report.count("json objects")
        ctype = resp.headers.get("Content-Type", "")
        if ctype != keys.DICOM_JSON:
            self.report.error(key, f"Content-Type is {ctype!r}, not {keys.DICOM_JSON}")
        try:
            import json

            data = json.loads(resp.body)
        except ValueError as exc:
            self.report.error(key, f"not valid JSON: {exc}")
            return None
        if not isinstance(data, list):
            self.report.error(key, "not a JSON array")
            return None
        for item in data:
            check_json_model(item, key, self.report)
        return data

    def run(self) -> Report:
        """Validate everything reachable from the root indexes."""
        manifest = self._fetch(keys.manifest().key)
        if manifest is None:
            self.report.error(keys.manifest().key, "missing: the site is incomplete")
        studies = self._json("studies") or []
        all_series = self._json("series") or []
        series_seen = 0
        for row in studies:
            _check_required(row, STUDY_ATTRS, STUDY_COMPUTED, "studies", "study", self.report)
            study = first(row, "0020000D")
            if not study:
                continue
            series_seen += self._study(study, row)
        if len(all_series) != series_seen:
            self.report.error("series", f"lists {len(all_series)} series; the studies hold {series_seen}")
        if manifest is not None:
            import json

            counts = json.loads(manifest.body).get("counts", {})
            if counts.get("studies") != len(studies) or counts.get("series") != series_seen:
                self.report.error(keys.manifest().key, f"counts {counts} disagree with the indexes")
        return self.report

    def _study(self, study: str, row: JsonDict) -> int:
        base = f"studies/{study}"
        series_rows = self._json(f"{base}/series") or []
        if first(row, "00201206") != len(series_rows):
            self.report.error(f"{base}/series", f"holds {len(series_rows)} series; studies says "
                                                f"{first(row, '00201206')}")
        instances = self._json(f"{base}/instances") or []
        if first(row, "00201208") != len(instances):
            self.report.error(f"{base}/instances", f"holds {len(instances)} instances; studies "
                                                   f"says {first(row, '00201208')}")
        metadata = self._json(f"{base}/metadata") or []
        if len(metadata) != len(instances):
            self.report.error(f"{base}/metadata", f"holds {len(metadata)} instances, not {len(instances)}")
        for srow in series_rows:
            _check_required(srow, SERIES_ATTRS, SERIES_COMPUTED, f"{base}/series", "series", self.report)
            series = first(srow, "0020000E")
            if series:
                self._series(study, series, srow)
        self._thumbnail(keys.study_thumbnail(study).key)
        self.report.count("studies")
        return len(series_rows)

    def _series(self, study: str, series: str, row: JsonDict) -> None:
        base = f"studies/{study}/series/{series}"
        rows = self._json(f"{base}/instances") or []
        metas = self._json(f"{base}/metadata") or []
        if first(row, "00201209") != len(rows) or len(metas) != len(rows):
            self.report.error(base, f"NumberOfSeriesRelatedInstances {first(row, '00201209')}, "
                                    f"instances index {len(rows)}, metadata {len(metas)}")
        for irow in rows:
            _check_required(irow, INSTANCE_ATTRS, INSTANCE_COMPUTED, f"{base}/instances",
                            "instance", self.report)
        for meta in metas:
            self._instance(study, series, meta)
        self._retrieve(keys.series(study, series).key, len(metas), optional=True)
        self._thumbnail(keys.series_thumbnail(study, series).key)
        self.report.count("series")

    def _instance(self, study: str, series: str, meta: JsonDict) -> None:
        sop = first(meta, "00080018")
        if not sop:
            self.report.error(f"studies/{study}/series/{series}/metadata", "an instance lacks SOPInstanceUID")
            return
        base = keys.instance_prefix(study, series, sop)
        own = self._json(f"{base}/metadata")
        if own is not None and own != [meta]:
            self.report.error(f"{base}/metadata", "differs from the series metadata")
        for uri in _bulk_uris(meta):
            key = posixpath.normpath(f"studies/{study}/series/{series}/{uri}")
            if key.startswith("..") or self._fetch(key) is None:
                self.report.error(f"{base}/metadata", f"BulkDataURI {uri} does not resolve")
        frames = first(meta, "00280008") or (1 if "7FE00010" in meta else 0)
        syntax = str(first(meta, "00020010") or "")
        for number in range(1, int(frames) + 1):
            self._frame(f"{base}/frames/{number}", meta, syntax)
        self._retrieve(base, 1, optional=True)
        self.report.count("instances")

    def _frame(self, key: str, meta: JsonDict, syntax: str) -> None:
        resp = self._fetch(key)
        if resp is None:
            self.report.error(key, "missing")
            return
        self.report.count("frames")
        ctype = resp.headers.get("Content-Type", "")
        info = SYNTAXES.get(syntax)
        try:
            ((_part_headers, payload),) = multipart.split(resp.body, ctype)
        except ValueError as exc:
            self.report.error(key, f"not a one-part multipart body with its boundary in the "
                                   f"Content-Type header: {exc}")
            return
        if info is None:
            self.report.error(key, f"metadata names transfer syntax {syntax!r}, unknown here")
            return
        expected = f"transfer-syntax={info.frame_syntax}"
        if expected not in ctype or f'type="{info.media_type}"' not in ctype:
            self.report.error(key, f"Content-Type {ctype!r} does not say {info.media_type} "
                                   f"with {expected}")
        if self.decode_frames:
            try:
                decode_frame(meta, payload, info.frame_syntax, info.native)
            except (ValueError, RuntimeError, NotImplementedError, KeyError, AttributeError,
                    TypeError) as exc:
                self.report.error(key, f"frame does not decode: {exc}")

    def _retrieve(self, key: str, parts: int, *, optional: bool) -> None:
        resp = self._fetch(key)
        if resp is None:
            if not optional:
                self.report.error(key, "missing")
            return
        self.report.count("retrieve objects")
        try:
            found = multipart.split(resp.body, resp.headers.get("Content-Type", ""))
        except ValueError as exc:
            self.report.error(key, f"not a multipart body with its boundary in the header: {exc}")
            return
        if len(found) != parts:
            self.report.error(key, f"holds {len(found)} Part 10 instances, not {parts}")
        for headers, payload in found:
            if headers.get("content-type") != "application/dicom" or payload[128:132] != b"DICM":
                self.report.error(key, "a part is not application/dicom Part 10")
                break

    def _thumbnail(self, key: str) -> None:
        resp = self._fetch(key)
        if resp is None:
            return
        self.report.count("thumbnails")
        if resp.headers.get("Content-Type") != "image/jpeg" or resp.body[:2] != b"\xff\xd8":
            self.report.error(key, "not a JPEG")
        else:
            self.report.thumbnails.append(key)


def _bulk_uris(obj: JsonDict) -> Iterator[str]:
    for attr in obj.values():
        if "BulkDataURI" in attr:
            yield attr["BulkDataURI"]
        for item in attr.get("Value", []) if attr.get("vr") == "SQ" else []:
            yield from _bulk_uris(item)


def reader_for(location: str, *, client: Any = None, endpoint_url: str | None = None) -> SiteReader:
    """An HTTP reader for ``http(s)://`` URLs, a store reader (folder or ``s3://``) otherwise.

    Raises
    ------
    StoreError
        When there is no site folder or bucket at ``location`` (nothing is created).
    """
    if location.startswith(("http://", "https://")):
        return HttpReader(location)
    store = open_store(location, client=client, endpoint_url=endpoint_url)
    if not store.exists():
        raise StoreError(f"{location}: no such site (no folder or bucket there)")
    return StoreReader(store)


def compare_with_source(reader: SiteReader, sources: Iterable[str | Path], report: Report) -> None:
    """Decode every frame of every source file and of the site; the pixels must be equal.

    Each instance is found by its UIDs; pixels are compared by the SHA-256 of
    the decoded arrays (dtype and shape included).
    """
    import hashlib

    import numpy as np

    from .convert import collect_files
    from .errors import RejectedInstanceError
    from .reader import read_instance

    def digest(array: np.ndarray) -> str:
        return hashlib.sha256(f"{array.dtype}{array.shape}".encode() + array.tobytes()).hexdigest()

    for path in collect_files(sources):
        try:
            inst = read_instance(path)
        except RejectedInstanceError:
            continue  # the conversion report names it
        if not inst.frames:
            continue
        base = keys.instance_prefix(inst.study, inst.series, inst.sop)
        meta_resp = reader.fetch(f"{base}/metadata")
        if meta_resp is None:
            report.error(f"{base}/metadata", f"missing for source {path}")
            continue
        meta = json.loads(meta_resp.body)[0]
        from pydicom import dcmread

        source = np.asarray(dcmread(path).pixel_array)
        expected = source if inst.number_of_frames > 1 else source[np.newaxis]
        info = SYNTAXES[inst.syntax.uid]
        for number in range(1, inst.number_of_frames + 1):
            key = f"{base}/frames/{number}"
            resp = reader.fetch(key)
            try:
                ((_, payload),) = multipart.split(resp.body, resp.headers.get("Content-Type", "")) \
                    if resp else [({}, b"")]
                pixels = decode_frame(meta, payload, info.frame_syntax, info.native)
            except (ValueError, RuntimeError, NotImplementedError, KeyError, AttributeError,
                    TypeError) as exc:
                report.error(key, f"cannot compare with {path}: {exc}")
                continue
            if digest(np.asarray(pixels)) != digest(np.asarray(expected[number - 1])):
                report.error(key, f"pixels differ from the source {path}")
            report.count("frames compared with the source")


def html_report(report: Report) -> bytes:
    """The report as a page: verdict, counts, findings, and the studies' and series' thumbnails."""
    from html import escape

    rows = "".join(f"<tr class={f.severity}><td>{f.severity}</td><td><code>{escape(f.key)}</code>"
                   f"</td><td>{escape(f.message)}</td></tr>" for f in report.findings)
    checked = ", ".join(f"{n} {escape(what)}" for what, n in sorted(report.checked.items()))
    thumbs = "".join(f'<figure><img src="../{escape(k)}" alt="{escape(k)}" width="128">'
                     f"<figcaption>{escape(k.split('/')[-2])[:18]}…</figcaption></figure>"
                     for k in report.thumbnails)
    verdict = "conforms" if report.ok else "does NOT conform"
    return (f"<!doctype html><meta charset=utf-8><title>static-dicomweb validation</title>"
            f"<style>body{{font:14px sans-serif;margin:2em}}.error{{color:#a00}}.warning{{color:#a60}}"
            f"figure{{display:inline-block;margin:4px}}td{{padding:2px 8px;vertical-align:top}}</style>"
            f"<h1>{escape(report.site)} {verdict}</h1><p>Checked {checked}.</p>"
            f"<h2>Findings ({len(report.findings)})</h2><table>{rows or '<tr><td>none</td></tr>'}</table>"
            f"<h2>Thumbnails</h2>{thumbs}").encode()


def validate(location: str, *, decode_frames: bool = True, keep: bool = True,
             source: Sequence[str | Path] = (), client: Any = None,
             endpoint_url: str | None = None) -> Report:
    """Validate the site at ``location``: a folder, ``s3://bucket/prefix`` or an HTTP base URL.

    With ``source`` (the converted Part 10 files or folders), every frame's
    decoded pixels are compared with the source's.  With ``keep`` and a store
    (folder or S3), the JSON and HTML reports are written into the site at
    ``_site/validation-report.json`` and ``_site/validation-report.html``; a
    site that cannot be written (read-only) keeps none, which is logged once.

    Raises
    ------
    StoreError
        When there is no site at ``location`` (nothing is created there).
    """
    reader = reader_for(location, client=client, endpoint_url=endpoint_url)
    try:
        report = Validator(reader, decode_frames=decode_frames).run()
        if source:
            compare_with_source(reader, source, report)
    except KeyNotFoundError as exc:
        report = Report(reader.location)
        report.error("", str(exc))
    if keep and isinstance(reader, StoreReader):
        keep_report(reader.store, report)
    return report


def keep_report(store: Store, report: Report) -> bool:
    """Write the JSON and HTML reports into the site; False (logged) where it cannot be written."""
    from .dicomjson import encode

    try:
        store.put(keys.validation_report(), [encode(report.to_json())])
        store.put(keys.ObjectSpec(f"{keys.SITE_PREFIX}validation-report.html", "text/html",
                                  cache_control=keys.INDEX), [html_report(report)])
    except Exception as exc:  # a read-only folder (OSError) or bucket (ClientError) alike
        log.warning("the validation report was not kept in %s (%s: %s); --report FILE writes it "
                    "elsewhere", store.url, type(exc).__name__, exc)
        return False
    return True
