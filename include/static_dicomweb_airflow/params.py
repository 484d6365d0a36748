"""The ``dicomweb_site`` DAG's params, typed and with each default written once.

:class:`SiteParams` is the one place a param is declared: its default, its JSON
schema for the trigger form and its description.  The DAG's ``params`` come from it
(:func:`airflow_params`) and the task bodies read a run's params through it
(:meth:`SiteParams.of`), so a default never has to be repeated as
``params.get(...) or default``.  Importing this module imports only Airflow's
``Param`` (DAG files import it at parse time).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

PROFILES = ["default", "viewer", "full"]


def _m(description: str, **schema: Any) -> dict[str, Any]:
    """A field's metadata: the param's description and JSON schema."""
    return {"description": description, "schema": schema}


@dataclass(frozen=True)
class SiteParams:
    """A ``dicomweb_site`` run's params."""

    source: str = field(default="/data/dicom", metadata=_m(
        "folder, s3://bucket/prefix, nbia:COLLECTION or idc:collection", type="string"))
    destination: str = field(default="/data/site", metadata=_m(
        "site folder or s3://bucket/prefix", type="string"))
    series_uids: list[str] = field(default_factory=list, metadata=_m(
        "only these SeriesInstanceUIDs (empty: all)", type="array"))
    patient_ids: list[str] = field(default_factory=list, metadata=_m(
        "only these PatientIDs (empty: all)", type="array"))
    limit: int = field(default=0, metadata=_m(
        "at most this many series (0: all)", type="integer", minimum=0))
    skip_localizers: bool = field(default=True, metadata=_m(
        "leave out series of 1-3 images", type="boolean"))
    batch_size: int = field(default=50, metadata=_m(
        "series per mapped convert task (at most 1,024 tasks)", type="integer", minimum=1))
    profile: str = field(default="default", metadata=_m(
        "which objects to write (docs/site-layout.md)", enum=PROFILES))
    download_dir: str = field(default="/tmp/static-dicomweb-downloads", metadata=_m(
        "worker folder for files downloaded from remote sources", type="string"))
    aws_conn_id: str = field(default="aws_default", metadata=_m(
        "Airflow connection for S3 sources and sites", type="string"))
    validate_url: str = field(default="", metadata=_m(
        "validate over HTTP at this base URL instead of the destination", type="string"))
    site_url: str = field(default="", metadata=_m(
        "the site's public base URL, e.g. what `static-dicomweb serve SITE --viewer` prints "
        "(empty: the Variable dicomweb_site_url); the run's viewer link opens <site_url>/viewer/",
        type="string"))

    @classmethod
    def of(cls, params: dict[str, Any] | None) -> SiteParams:
        """A run's params (Airflow passes every declared one; missing ones take the default)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in (params or {}).items() if k in names})


def airflow_params() -> dict[str, Any]:
    """The DAG's ``params``: one ``Param`` per field, default, schema and description."""
    from airflow.sdk import Param

    out = {}
    for f in dataclasses.fields(SiteParams):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        out[f.name] = Param(default, description=f.metadata["description"], **f.metadata["schema"])
    return out
