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
``series?StudyInstanceUID=S``           ``studies/S/series`` (the study's own index)
``series?PatientID=P``                  ``_q/series/PatientID/<hex of P>``
``series?Modality=M``                   ``_q/series/Modality/<hex of M>``
``…&offset=N`` (N ≥ 100)                ``<pages>.offset.N``: rows N … N+99, where
                                        ``<pages>`` is the answer's key, but
                                        ``_q/series/StudyInstanceUID/S`` for the
                                        series of a study and ``_q/studies/all``
                                        or ``_q/series/all`` unfiltered
``…&offset=N`` (0 < N < 100)           ``_q/empty``: ``[]``, one object for all;
                                        also every N > 0 after a UID (one row)
======================================  ========================================

Parameters may also be given as tags (``00100020=`` for PatientID, as OHIF
sends it).  The first matching parameter in the table's order wins (a UID
before a patient before a modality); other parameters, and values with
wildcards or lists, are ignored, so such a query gets a superset that clients
filtering on their side narrow.  ``offset=0`` (or none) returns the whole
answer whatever the ``limit``.  A client that pages on from there asks for
the offset of the rows it received (dicomweb-client's ``get_remaining``) or of
its limit: pages of :data:`PAGE_SIZE` rows sit at offsets 100, 200, …, and
the answer ends with an empty page at the offset equal to its count.  Below
100 that empty page is the one shared object :data:`EMPTY_KEY` (an answer of
fewer than 100 rows, nearly every one, has no page of its own), and so is
every later offset of an answer by Study or Series Instance UID, which holds
one row at most.  Values other than UIDs are hex-encoded UTF-8 in keys (safe
in any URL and S3 key).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypedDict

from . import keys
from .errors import InvalidUIDError
from .keys import validate_uid

PAGE_SIZE = 100
QUERY_PREFIX = "_q/"
#: The one empty page (``[]``): offsets 1 to 99 of every answer, every offset past 0 of a UID answer.
EMPTY_KEY = f"{QUERY_PREFIX}empty"
#: Stands for the encoded value in the key templates of :data:`ROUTES`.
VALUE = "{}"


class Route(TypedDict):
    """One row of the routing table.

    ``answer`` is the key of the whole answer (offset 0) and ``pages`` the
    base of its pages' keys, both with :data:`VALUE` standing for the encoded
    value; ``pages`` is None for answers of one row at most (by UID), whose
    every later offset is :data:`EMPTY_KEY`.
    """

    resource: str
    param: str
    attribute: str
    encoding: str
    answer: str
    pages: str | None


def _own(resource: str, attribute: str) -> str:
    return f"{QUERY_PREFIX}{resource}/{attribute}/{VALUE}"


#: The routing table (order matters: the first parameter present wins).
ROUTES: tuple[Route, ...] = tuple(
    Route(resource=resource, param=param, attribute=attribute, encoding=encoding,
          answer=answer or _own(resource, attribute),
          pages=None if one_row else _own(resource, attribute))
    for resource, params, attribute, encoding, answer, one_row in (
        ("studies", ("StudyInstanceUID", "0020000D"), "StudyInstanceUID", "uid", None, True),
        ("studies", ("PatientID", "00100020"), "PatientID", "hex", None, False),
        ("studies", ("ModalitiesInStudy", "00080061", "Modality", "00080060"), "ModalitiesInStudy",
         "hex", None, False),
        ("series", ("SeriesInstanceUID", "0020000E"), "SeriesInstanceUID", "uid", None, True),
        # the study's own series index holds exactly these rows; only its pages live under _q/
        ("series", ("StudyInstanceUID", "0020000D"), "StudyInstanceUID", "uid",
         keys.study_series(VALUE).key, False),
        ("series", ("PatientID", "00100020"), "PatientID", "hex", None, False),
        ("series", ("Modality", "00080060"), "Modality", "hex", None, False),
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


def _rule(resource: str, attribute: str) -> Route:
    return next(r for r in ROUTES if r["attribute"] == attribute and r["resource"] == resource)


def query_key(resource: str, attribute: str, value: str) -> str | None:
    """The key of the whole answer to ``resource?attribute=value`` (None: no object answers it)."""
    rule = _rule(resource, attribute)
    segment = encode_value(value, rule["encoding"])
    return None if segment is None else rule["answer"].replace(VALUE, segment)


def answer_template(resource: str, attribute: str) -> str:
    """The key of the whole answer with :data:`VALUE` for the encoded value (to fill in bulk)."""
    return _rule(resource, attribute)["answer"]


def pages_base(resource: str, attribute: str, segment: str) -> str | None:
    """The base of the page keys of an answer, from its encoded value; None for one-row answers."""
    pages = _rule(resource, attribute)["pages"]
    return None if pages is None else pages.replace(VALUE, segment)


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
    answer, pages = path, all_key(path)
    for rule in ROUTES:
        values = query.get(rule["param"])
        if rule["resource"] == path and values and values[0]:
            segment = encode_value(values[0], rule["encoding"])
            if segment is not None:
                answer = rule["answer"].replace(VALUE, segment)
                pages = EMPTY_KEY if rule["pages"] is None else rule["pages"].replace(VALUE, segment)
                break
    try:
        offset = max(0, int((query.get("offset") or ["0"])[0]))
    except ValueError:
        offset = 0
    if offset == 0:
        return answer  # the whole answer, whatever the limit: paging by rows received ends
    if pages == EMPTY_KEY or offset < PAGE_SIZE:
        return EMPTY_KEY  # offset 0 sends every row: a client paging on from it has them all
    return page_key(pages, offset)


def table_json() -> str:
    """The routing table and page size as JSON, for the edge function."""
    return json.dumps({"routes": ROUTES, "pageSize": PAGE_SIZE, "prefix": QUERY_PREFIX,
                       "value": VALUE, "empty": EMPTY_KEY}, sort_keys=True)


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
