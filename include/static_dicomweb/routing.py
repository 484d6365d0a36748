"""QIDO queries on a static host: one routing table, used by ``serve`` and the CloudFront Function.

S3 ignores query strings, so the site holds precomputed answers for a small
set of queries and a router maps a request onto them:

======================================  ========================================
request                                 object
======================================  ========================================
``studies?StudyInstanceUID=S``          ``_q/studies/StudyInstanceUID/S``
``studies?PatientID=P``                 ``_q/studies/PatientID/<hex of P>``
``studies?ModalitiesInStudy=M``         ``_q/studies/ModalitiesInStudy/<hex of M>``
``series?SeriesInstanceUID=SE``         ``_q/series/SeriesInstanceUID/SE``
``series?StudyInstanceUID=S``           ``_q/series/StudyInstanceUID/S``
``series?PatientID=P``                  ``_q/series/PatientID/<hex of P>``
``series?Modality=M``                   ``_q/series/Modality/<hex of M>``
``…&offset=N`` (N > 0)                  ``<answer>.offset.N``: rows N … N+99
======================================  ========================================

Parameters may also be given as tags (``00100020=`` for PatientID, as OHIF
sends it).  The first matching parameter in the table's order wins (a UID
before a patient before a modality); other parameters, and values with
wildcards or lists, are ignored, so such a query gets a superset that clients
filtering on their side narrow.  ``offset=0`` (or none) returns the whole
answer whatever the ``limit``; pages of :data:`PAGE_SIZE` rows sit at offsets
100, 200, … for clients that step by their limit, and one empty page sits at
the offset equal to the count, so dicomweb-client's ``get_remaining`` paging
(offset += rows received) stops.  Values other than UIDs are
hex-encoded UTF-8 in keys (safe in any URL and S3 key).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypedDict

from .errors import InvalidUIDError
from .keys import validate_uid

PAGE_SIZE = 100
QUERY_PREFIX = "_q/"


class Route(TypedDict):
    """One row of the routing table."""

    resource: str
    param: str
    attribute: str
    encoding: str


#: The routing table (order matters: the first parameter present wins).
ROUTES: tuple[Route, ...] = tuple(
    Route(resource=resource, param=param, attribute=attribute, encoding=encoding)
    for resource, params, attribute, encoding in (
        ("studies", ("StudyInstanceUID", "0020000D"), "StudyInstanceUID", "uid"),
        ("studies", ("PatientID", "00100020"), "PatientID", "hex"),
        ("studies", ("ModalitiesInStudy", "00080061", "Modality", "00080060"), "ModalitiesInStudy", "hex"),
        ("series", ("SeriesInstanceUID", "0020000E"), "SeriesInstanceUID", "uid"),
        ("series", ("StudyInstanceUID", "0020000D"), "StudyInstanceUID", "uid"),
        ("series", ("PatientID", "00100020"), "PatientID", "hex"),
        ("series", ("Modality", "00080060"), "Modality", "hex"),
    )
    for param in params)


def encode_value(value: str, encoding: str) -> str | None:
    """A query value as a key segment; None when no object can answer it exactly.

    That is a bad UID, or a value with a wildcard (``*``, ``?``) or a list
    (``,``): the router then ignores the parameter, and the client gets a
    superset it can filter (OHIF sends ``*value*`` when wildcards are on).
    """
    if any(c in value for c in "*?,\\"):
        return None
    if encoding == "uid":
        try:
            return validate_uid(value)
        except InvalidUIDError:
            return None
    return value.encode("utf-8").hex() or "-"


def query_key(resource: str, attribute: str, value: str) -> str | None:
    """The key of the precomputed answer to ``resource?attribute=value``."""
    encoding = next(r["encoding"] for r in ROUTES if r["attribute"] == attribute
                    and r["resource"] == resource)
    segment = encode_value(value, encoding)
    return None if segment is None else f"{QUERY_PREFIX}{resource}/{attribute}/{segment}"


def all_key(resource: str) -> str:
    """Where the pages of an unfiltered ``studies`` or ``series`` live."""
    return f"{QUERY_PREFIX}{resource}/all"


def page_key(base: str, offset: int) -> str:
    """The page of ``base`` starting at row ``offset``.

    A sibling of the answer, not a child: no folder per answer in a local
    site (a UID answer is digits and dots, so ``.offset.`` cannot clash).
    """
    return f"{base}.offset.{offset}"


def route(path: str, query: Mapping[str, Sequence[str]]) -> str:
    """The key that answers a GET of ``path`` with ``query`` (parsed, e.g. by ``parse_qs``).

    Paths other than ``studies`` and ``series`` are returned unchanged: every
    other DICOMweb request is its own key.
    """
    if path not in ("studies", "series"):
        return path
    base = path
    for rule in ROUTES:
        values = query.get(rule["param"])
        if rule["resource"] == path and values and values[0]:
            key = query_key(path, rule["attribute"], values[0])
            if key is not None:
                base = key
                break
    try:
        offset = max(0, int((query.get("offset") or ["0"])[0]))
    except ValueError:
        offset = 0
    if offset == 0:
        return base  # the whole answer, whatever the limit: paging by rows received ends
    return page_key(all_key(path) if base == path else base, offset)


def table_json() -> str:
    """The routing table and page size as JSON, for the edge function."""
    return json.dumps({"routes": ROUTES, "pageSize": PAGE_SIZE, "prefix": QUERY_PREFIX},
                      sort_keys=True)


def edge_function(site_prefix: str = "") -> str:
    """The CloudFront Function (cloudfront-js-2.0) with this table built in.

    Parameters
    ----------
    site_prefix
        The path of the site root under the distribution (``""`` or ``"/nlst"``).
    """
    template = (Path(__file__).parent / "edge" / "cloudfront_function.js").read_text()
    return (template.replace("__TABLE__", table_json())
            .replace("__SITE_PREFIX__", json.dumps(site_prefix.rstrip("/"))))
