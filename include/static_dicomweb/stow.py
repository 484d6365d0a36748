"""STOW-RS (PS3.18 §10.5) for a static site: ingest posted instances, answer as the standard says.

The same :func:`ingest` runs in ``serve --stow-token`` and in
:func:`lambda_handler` (AWS Lambda behind API Gateway, or a CloudFront origin
for POST).  Parts go through the converter like files do (bad parts get the
bad-input treatment, an instance already in the site with other content is
never replaced), then the touched series, studies and roots are re-aggregated.
"""

from __future__ import annotations

import base64
import hmac
import io
import logging
import os
from collections.abc import Mapping
from typing import Any, BinaryIO

from . import keys, multipart
from .aggregate import aggregate
from .convert import InstanceWriter, Written
from .dicomjson import JsonDict, decode, encode
from .errors import ConflictError, KeyNotFoundError, RejectedInstanceError
from .profiles import Profile, get_profile
from .reader import UNREADABLE, read_instance
from .store import Store

log = logging.getLogger(__name__)

#: PS3.18 Table 10.5.3-2 / PS3.4 failure reasons used here.
CANNOT_UNDERSTAND = 0xC000
PROCESSING_FAILURE = 0x0110
STUDY_MISMATCH = 0xA900  # "Data Set does not match SOP Class" family: wrong study for the URL


def authorized(header: str | None, token: str) -> bool:
    """``Authorization: Bearer TOKEN``, or HTTP Basic with TOKEN as the password (MONAI Label)."""
    if not header or not token:
        return False
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() == "bearer":
        return hmac.compare_digest(value.strip(), token)
    if scheme.lower() == "basic":
        try:
            _, _, password = base64.b64decode(value.strip()).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return hmac.compare_digest(password, token)
    return False


def site_profile(store: Store) -> Profile:
    """The profile the site was built with (from its manifest), else ``default``."""
    try:
        return get_profile(str(decode(store.get(keys.manifest().key)).get("profile", "default")))
    except (KeyNotFoundError, ValueError):
        return get_profile("default")


def _item(sop_class: str, sop: str) -> JsonDict:
    return {"00081150": {"vr": "UI", "Value": [sop_class]}, "00081155": {"vr": "UI", "Value": [sop]}}


def unsupported(content_type: str) -> tuple[int, JsonDict] | None:
    """The 415 answer for a request whose Content-Type is not a STOW-RS body, else None.

    Decided from the headers alone, so a server refuses before reading the body.
    """
    media, _, params = content_type.partition(";")
    if media.strip().lower() != "multipart/related" or not any(
            name.strip().lower() == "type" and value.strip().strip("\"'").lower() == "application/dicom"
            for name, _, value in (p.partition("=") for p in params.split(";"))):
        return 415, _error('expected multipart/related; type="application/dicom"')
    return None


def _error(message: str) -> JsonDict:
    return {"error": {"vr": "LT", "Value": [message]}}


def ingest(store: Store, body: bytes | BinaryIO, content_type: str,
           study: str | None = None) -> tuple[int, JsonDict]:
    """Store the Part 10 instances of a STOW-RS request body.

    Parameters
    ----------
    store
        The site.
    body
        The request body: bytes, or a seekable binary file holding it (``serve``
        spools large bodies to disk; one part at a time is read into memory).
    content_type
        The body's ``multipart/related; type="application/dicom"`` type.
    study
        The Study Instance UID of ``POST studies/{study}``; parts of other studies fail.

    Returns
    -------
    tuple
        The HTTP status (200 all stored, 202 some failed, 409 none stored, 400/415
        a body that is not a STOW-RS request) and the response (DICOM JSON).
        Each failed part is in the FailedSOPSequence with its PS3.18 reason:
        0xA900 for a part of another study than the URL's, 0x0110 for an SOP
        Instance UID that the site holds with other content (a
        :class:`~static_dicomweb.errors.ConflictError`), 0xC000 for a part
        that is not an instance the site can take.
    """
    refused = unsupported(content_type)
    if refused:
        return refused
    fh = io.BytesIO(body) if isinstance(body, (bytes, bytearray, memoryview)) else body
    try:
        parts = multipart.locate(fh, content_type)
    except ValueError as exc:
        return 400, _error(f"not a multipart body: {exc}")
    if not parts:
        return 400, _error("the multipart body holds no part (no instance to store)")
    writer = InstanceWriter(store, site_profile(store))
    stored: list[tuple[Written, str]] = []
    failed: list[JsonDict] = []
    for number, part in enumerate(parts, start=1):
        data = part.read(fh)
        outcome = _store_part(writer, f"<STOW-RS part {number}>", data, study)
        if isinstance(outcome, int):
            item = _failed_item(data)
            item["00081197"] = {"vr": "US", "Value": [outcome]}
            failed.append(item)
        else:
            stored.append(outcome)
        del data  # one part in memory at a time
    if stored:
        touched = sorted({(w.study, w.series) for w, _ in stored})
        aggregate(store, touched, writer.profile, known={w.sop: (w.metadata, w.row) for w, _ in stored})
    status = 200 if not failed else (202 if stored else 409)
    return status, _response(study, stored, failed)


def _store_part(writer: InstanceWriter, name: str, data: bytes,
                study: str | None) -> tuple[Written, str] | int:
    """Write one part; its written objects and SOP Class UID, or the PS3.18 failure reason.

    The reason follows the exception's type: a
    :class:`~static_dicomweb.errors.ConflictError` is 0x0110, any other
    :class:`~static_dicomweb.errors.RejectedInstanceError` 0xC000.  Other
    errors (a store that failed, perhaps for a moment) propagate.
    """
    try:
        inst = read_instance(name, data)
    except RejectedInstanceError as exc:
        log.warning("STOW-RS: rejected %s: %s", name, exc.reason)
        return CANNOT_UNDERSTAND
    if study and inst.study != study:
        log.warning("STOW-RS: rejected %s: StudyInstanceUID %s is not %s", name, inst.study, study)
        return STUDY_MISMATCH
    try:
        return writer.write(inst), inst.sop_class
    except ConflictError as exc:
        log.warning("STOW-RS: rejected %s: %s", name, exc.reason)
        return PROCESSING_FAILURE
    except RejectedInstanceError as exc:
        log.warning("STOW-RS: rejected %s: %s", name, exc.reason)
        return CANNOT_UNDERSTAND


def _response(study: str | None, stored: list[tuple[Written, str]], failed: list[JsonDict]) -> JsonDict:
    """The PS3.18 Store Instances Response Module: retrieve URL, failed and referenced SOP sequences."""
    response: JsonDict = {}
    if study or stored:
        response["00081190"] = {"vr": "UR", "Value": [f"studies/{study or stored[0][0].study}"]}
    if failed:
        response["00081198"] = {"vr": "SQ", "Value": failed}
    if stored:
        response["00081199"] = {"vr": "SQ", "Value": [
            {**_item(sop_class, w.sop), "00081190": {
                "vr": "UR", "Value": [keys.instance_prefix(w.study, w.series, w.sop)]}}
            for w, sop_class in stored]}
    return dict(sorted(response.items()))


#: Where a failed part's UIDs are looked for: the start of a file holds them.
FAILED_ITEM_BYTES = 65536


def _failed_item(data: bytes) -> JsonDict:
    """The SOP Class and Instance UIDs of a failed part, as far as they can be read.

    Only the part's first :data:`FAILED_ITEM_BYTES` are parsed: forced
    parsing of a large part that is not DICOM (a megabyte of zeros reads as
    a hundred thousand empty elements) would cost seconds for nothing.
    """
    from io import BytesIO

    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    try:
        ds = dcmread(BytesIO(data[:FAILED_ITEM_BYTES]), stop_before_pixels=True, force=True,
                     specific_tags=["SOPClassUID", "SOPInstanceUID"])
        return _item(str(ds.get("SOPClassUID", "")), str(ds.get("SOPInstanceUID", "")))
    except (*UNREADABLE, InvalidDicomError, OSError):  # unreadable parts still get an item
        return {}


def lambda_handler(event: Mapping[str, Any], context: object = None) -> dict[str, Any]:
    """AWS Lambda entry point (API Gateway or Lambda function URL, payload 1.0 or 2.0).

    Environment: ``SITE_URL`` (``s3://bucket/prefix`` or a folder), ``STOW_TOKEN``.
    """
    from .store import open_store

    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
    method = event.get("httpMethod") or event.get("requestContext", {}).get("http", {}).get("method")
    if method != "POST":
        return _lambda(405, {"error": "only POST (STOW-RS)"})
    if not authorized(headers.get("authorization"), os.environ.get("STOW_TOKEN", "")):
        return _lambda(401, {"error": "a valid token is required"},
                       {"WWW-Authenticate": 'Basic realm="static-dicomweb STOW-RS"'})
    path = str(event.get("rawPath") or event.get("path") or "").strip("/").split("/")
    study = path[path.index("studies") + 1] if "studies" in path and path[-1] != "studies" else None
    raw = event.get("body") or ""
    body = base64.b64decode(raw) if event.get("isBase64Encoded") else str(raw).encode("latin-1")
    status, response = ingest(open_store(os.environ["SITE_URL"]), body,
                              headers.get("content-type", ""), study)
    return _lambda(status, response)


def _lambda(status: int, body: object, headers: dict[str, str] | None = None) -> dict[str, Any]:
    return {"statusCode": status, "headers": {"Content-Type": "application/dicom+json", **(headers or {})},
            "body": encode(body).decode("utf-8"), "isBase64Encoded": False}


