"""The keys of a site's objects, built from validated UIDs, with their headers.

Every object a conversion writes for a study, series or instance (metadata,
frames, Part 10, bulk data, thumbnails, the ``_site/`` records) gets its key
here, from validated UIDs, and the headers it carries (:func:`headers_for`).
Two kinds of path are formatted elsewhere: the keys of precomputed query
answers (``_q/…``, from :mod:`static_dicomweb.routing`'s table, in
:mod:`static_dicomweb.aggregate`), and the prefixes, relative URIs (RetrieveURL,
BulkDataURI) and messages that name a level (``studies/S/series/SE``), formatted
where they are used (``aggregate``, ``validate``, ``qido``, ``convert``, ``stow``,
``spine.volume``).  A key is relative to the site
root R (a folder or ``s3://bucket/prefix``) and is exactly the DICOMweb
request path, so a client configured with R as its QIDO-RS and WADO-RS root
reads the site with plain GETs.  See ``docs/site-layout.md``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from .errors import InvalidUIDError

_UID_RE = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
_LOOSE_UID_RE = re.compile(r"[0-9]+(\.[0-9]+)*")

DICOM_JSON = "application/dicom+json"
IMMUTABLE = "public, max-age=31536000, immutable"
INDEX = "public, max-age=60"
GZIP = "gzip"
SITE_PREFIX = "_site/"


def validate_uid(value: object, *, what: str = "UID") -> str:
    """Return ``value`` as a UID string that is safe as a path segment.

    Parameters
    ----------
    value
        The element value (a ``pydicom.uid.UID`` or ``str``).
    what
        The attribute's keyword, for the error message.

    Raises
    ------
    InvalidUIDError
        If the value is empty, longer than 64 characters, or holds anything
        but digits and dots (so ``/`` and ``..`` can never reach a key).
        Components with leading zeros are tolerated (they occur in the wild),
        empty components are not.

    """
    text = str(value) if value is not None else ""
    text = text.rstrip("\x00 ")
    if not text:
        raise InvalidUIDError(f"{what} is empty")
    if len(text) > 64:
        raise InvalidUIDError(f"{what} {text[:70]!r}... is longer than 64 characters")
    if not _LOOSE_UID_RE.fullmatch(text):
        raise InvalidUIDError(f"{what} {text!r} is not digits and dots")
    return text


def is_strict_uid(value: str) -> bool:
    """Whether ``value`` also follows PS3.5 §9.1 (no leading zeros)."""
    return bool(_UID_RE.fullmatch(value)) and len(value) <= 64


@dataclass(frozen=True)
class ObjectSpec:
    """A key with the headers its object is stored and served with."""

    key: str
    content_type: str
    content_encoding: str | None = None
    cache_control: str = IMMUTABLE

    def headers(self) -> dict[str, str]:
        """The HTTP headers S3 (and ``serve``) answer this object with."""
        out = {"Content-Type": self.content_type, "Cache-Control": self.cache_control}
        if self.content_encoding:
            out["Content-Encoding"] = self.content_encoding
        return out


def boundary_for(key: str) -> str:
    """A multipart boundary that is a pure function of the key (reruns are byte-identical)."""
    return "sdw-" + hashlib.sha256(key.encode()).hexdigest()[:32]


def multipart_type(part_type: str, key: str, transfer_syntax: str | None = None) -> str:
    """``multipart/related`` Content-Type with the boundary in the header."""
    ts = f"; transfer-syntax={transfer_syntax}" if transfer_syntax else ""
    return f'multipart/related; type="{part_type}"{ts}; boundary={boundary_for(key)}'


#: Where the multipart part header ends in a body this package wrote (boundary line + one header).
HEAD_BYTES = 512
_GZIP_MAGIC = b"\x1f\x8b"
_MULTIPART_KEY = re.compile(
    r"studies/[^/]+/series/[^/]+(?:/instances/[^/]+(?:/(?:frames|bulkdata)/[^/]+)?)?")
_INSTANCE_LEVEL = re.compile(r"studies/[^/]+/series/[^/]+/instances/[^/]+(?:/.*)?")
_PART_HEAD = re.compile(rb"--([!-~]{1,70})\r\nContent-Type: ([^\r\n]+)\r\n\r\n")
_BY_EXTENSION = {".json": "application/json", ".jsonl": "application/x-ndjson",
                 ".html": "text/html", ".jpg": "image/jpeg", ".png": "image/png"}


class HeadersLostError(ValueError):
    """The first bytes of a multipart object do not name its boundary and part type."""


def needs_head(key: str) -> bool:
    """Whether :func:`headers_for` needs the first bytes of ``key``'s body (a multipart object)."""
    return _MULTIPART_KEY.fullmatch(key) is not None


def headers_for(key: str, head: bytes = b"") -> dict[str, str]:
    """The headers of an object, from its key and the first bytes of its body.

    This is what makes a site folder portable: nothing but the file's name and
    bytes is needed to answer with the right Content-Type, Content-Encoding and
    Cache-Control (S3 keeps the same headers as object metadata).  ``head`` is
    at least the first :data:`HEAD_BYTES` bytes of the body (all of it when shorter).

    Raises
    ------
    HeadersLostError
        For a multipart key whose body does not start with a boundary and a part header.
    """
    cache = IMMUTABLE if _INSTANCE_LEVEL.fullmatch(key) else INDEX
    name = key.rpartition("/")[2]
    encoding = None
    if needs_head(key):
        match = _PART_HEAD.match(head)
        if match is None:
            raise HeadersLostError(f"{key}: headers lost: the body does not start with a multipart "
                                   f"boundary and part Content-Type ({bytes(head[:40])!r})")
        boundary, part = match.group(1).decode(), match.group(2).decode("latin-1")
        part_type, _, params = part.partition(";")
        ts = f";{params}" if params else ""
        content_type = f'multipart/related; type="{part_type.strip()}"{ts}; boundary={boundary}'
    elif name == "thumbnail":
        content_type = "image/jpeg"
    elif key.startswith(("studies", "series", "_q/")):
        content_type, encoding = DICOM_JSON, GZIP
    else:
        content_type = _BY_EXTENSION.get(name[name.rfind("."):] if "." in name else "",
                                         "application/octet-stream")
        if content_type in ("application/json", "application/x-ndjson"):
            encoding = GZIP
    out = {"Content-Type": content_type, "Cache-Control": cache}
    if encoding and head[:2] == _GZIP_MAGIC:
        out["Content-Encoding"] = encoding
    return out


def _json(key: str, *, index: bool) -> ObjectSpec:
    return ObjectSpec(key, DICOM_JSON, GZIP, INDEX if index else IMMUTABLE)


# -- QIDO-RS ---------------------------------------------------------------

def studies() -> ObjectSpec:
    """QIDO ``studies``: every study of the site."""
    return _json("studies", index=True)


def all_series() -> ObjectSpec:
    """QIDO ``series`` at the root: every series of every study."""
    return _json("series", index=True)


def study_series(study: str) -> ObjectSpec:
    """QIDO ``studies/{S}/series``."""
    return _json(f"studies/{study}/series", index=True)


def study_instances(study: str) -> ObjectSpec:
    """QIDO ``studies/{S}/instances``."""
    return _json(f"studies/{study}/instances", index=True)


def series_instances(study: str, series: str) -> ObjectSpec:
    """QIDO ``studies/{S}/series/{SE}/instances``."""
    return _json(f"studies/{study}/series/{series}/instances", index=True)


# -- WADO-RS metadata ------------------------------------------------------

def study_metadata(study: str) -> ObjectSpec:
    """WADO-RS ``studies/{S}/metadata``."""
    return _json(f"studies/{study}/metadata", index=True)


def series_metadata(study: str, series: str) -> ObjectSpec:
    """WADO-RS ``studies/{S}/series/{SE}/metadata``."""
    return _json(f"studies/{study}/series/{series}/metadata", index=True)


def instance_metadata(study: str, series: str, instance: str) -> ObjectSpec:
    """WADO-RS ``.../instances/{I}/metadata``."""
    return _json(f"{instance_prefix(study, series, instance)}/metadata", index=False)


# -- WADO-RS bulk ----------------------------------------------------------

def instance_prefix(study: str, series: str, instance: str) -> str:
    """``studies/{S}/series/{SE}/instances/{I}`` (also the instance retrieve key)."""
    return f"studies/{study}/series/{series}/instances/{instance}"


def frame_key(study: str, series: str, instance: str, number: int) -> str:
    """The key of one frame (1-based ``number``)."""
    if number < 1:
        raise ValueError(f"frame numbers start at 1, got {number}")
    return f"{instance_prefix(study, series, instance)}/frames/{number}"


def frame(study: str, series: str, instance: str, number: int, media_type: str,
          transfer_syntax: str) -> ObjectSpec:
    """One frame (1-based ``number``) in its stored transfer syntax."""
    key = frame_key(study, series, instance, number)
    return ObjectSpec(key, multipart_type(media_type, key, transfer_syntax))


def instance(study: str, series: str, instance_uid: str) -> ObjectSpec:
    """Instance retrieve: the instance as Part 10 in a multipart body."""
    key = instance_prefix(study, series, instance_uid)
    return ObjectSpec(key, multipart_type("application/dicom", key))


def series(study: str, series_uid: str) -> ObjectSpec:
    """Series retrieve: every instance of the series as Part 10."""
    key = f"studies/{study}/series/{series_uid}"
    return ObjectSpec(key, multipart_type("application/dicom", key), cache_control=INDEX)


def bulkdata_path(tag_path: str) -> str:
    """Validate a bulk data tag path such as ``7fe00010`` or ``00540016.0.00181074``."""
    if not re.fullmatch(r"[0-9a-f]{8}(\.[0-9]+\.[0-9a-f]{8})*", tag_path):
        raise ValueError(f"bad bulk data tag path {tag_path!r}")
    return tag_path


def bulkdata(study: str, series_uid: str, instance_uid: str, tag_path: str) -> ObjectSpec:
    """Bulk data of one element, which metadata names with ``BulkDataURI``."""
    key = f"{instance_prefix(study, series_uid, instance_uid)}/bulkdata/{bulkdata_path(tag_path)}"
    return ObjectSpec(key, multipart_type("application/octet-stream", key))


def bulkdata_uri(series_uid_key: str, key: str) -> str:
    """A BulkDataURI relative to the series URL (``R/studies/{S}/series/{SE}/``).

    That is the convention OHIF resolves by default
    (``bulkDataURI.relativeResolution: 'series'``).
    """
    prefix = series_uid_key + "/"
    if not key.startswith(prefix):
        raise ValueError(f"{key} is not under {series_uid_key}")
    return key[len(prefix):]


# -- Rendered --------------------------------------------------------------

def study_thumbnail(study: str) -> ObjectSpec:
    """``studies/{S}/thumbnail``."""
    return ObjectSpec(f"studies/{study}/thumbnail", "image/jpeg", cache_control=INDEX)


def series_thumbnail(study: str, series_uid: str) -> ObjectSpec:
    """``studies/{S}/series/{SE}/thumbnail``."""
    return ObjectSpec(f"studies/{study}/series/{series_uid}/thumbnail", "image/jpeg",
                      cache_control=INDEX)


def instance_thumbnail(study: str, series_uid: str, instance_uid: str) -> ObjectSpec:
    """``.../instances/{I}/thumbnail``."""
    return ObjectSpec(f"{instance_prefix(study, series_uid, instance_uid)}/thumbnail",
                      "image/jpeg")


# -- The site's own records (not DICOMweb; under ``_site/``) ---------------

def series_record(study: str, series_uid: str) -> ObjectSpec:
    """What the converter knows of one series: its QIDO rows and instance hashes."""
    return ObjectSpec(f"{SITE_PREFIX}series/{study}/{series_uid}.json", "application/json",
                      GZIP, INDEX)


def instance_record(instance_uid: str) -> ObjectSpec:
    """Where an SOP Instance UID is in the site: ``_site/instances/{xx}/{I}.json``.

    One small uncompressed JSON object per instance (study, series, SHA-256 of
    its Part 10 bytes, profile), created with a create-only write: the first
    writer of a UID claims it, every other writer of that UID (another
    converter, STOW-RS) reads where it is.  ``xx`` is the first two hex digits
    of the SHA-256 of the UID, so no folder holds more than 1/256 of a site's
    records.
    """
    shard = hashlib.sha256(instance_uid.encode("ascii")).hexdigest()[:2]
    return ObjectSpec(f"{SITE_PREFIX}instances/{shard}/{instance_uid}.json", "application/json",
                      cache_control=INDEX)


def root_record(name: str) -> ObjectSpec:
    """The aggregator's line-per-row copy of a root index (``studies`` or ``series``).

    Each line is sort key, counts and row JSON, separated by tabs; merging a few studies into
    it needs no JSON parsing of the other rows.
    """
    if name not in ("studies", "series"):
        raise ValueError(f"no root index {name!r}")
    return ObjectSpec(f"{SITE_PREFIX}roots/{name}.jsonl", "application/x-ndjson", GZIP, INDEX)


def manifest() -> ObjectSpec:
    """The site manifest, written last."""
    return ObjectSpec(f"{SITE_PREFIX}manifest.json", "application/json", cache_control=INDEX)


def conversion_report() -> ObjectSpec:
    """The report of the last conversion: every rejected file and why."""
    return ObjectSpec(f"{SITE_PREFIX}conversion-report.json", "application/json",
                      cache_control=INDEX)


def validation_report() -> ObjectSpec:
    """The validator's JSON report."""
    return ObjectSpec(f"{SITE_PREFIX}validation-report.json", "application/json",
                      cache_control=INDEX)
