"""Runtime glue: stores from a destination and an Airflow connection; errors at the boundary."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from static_dicomweb.errors import PermanentError
from static_dicomweb.store import Store, is_s3, open_store


def s3_client(location: str, aws_conn_id: str | None = "aws_default") -> Any:
    """The S3 client for an ``s3://`` location from the Amazon provider's connection; else None.

    ``S3Hook(aws_conn_id)`` gives the connection's credentials, region and endpoint, so
    MinIO and AWS are configured in Airflow, not in code.
    """
    if not is_s3(location):
        return None
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id=aws_conn_id).get_conn()


def store_for(destination: str, aws_conn_id: str | None = "aws_default") -> Store:
    """The store of a site: a folder, or ``s3://bucket/prefix`` through the Amazon provider."""
    return open_store(destination, client=s3_client(destination, aws_conn_id))


@contextlib.contextmanager
def permanent_errors_fail() -> Iterator[None]:
    """Errors a retry cannot fix fail the task without retrying; others propagate (and retry)."""
    try:
        yield
    except PermanentError as exc:
        raise AirflowFailException(str(exc)) from exc


def site_uri(destination: str) -> str:
    """The lineage URI of a site: its ``s3://`` URL or a ``file://`` URL of its folder."""
    if is_s3(destination):
        return destination.rstrip("/")
    return Path(destination).resolve().as_uri()


def report_lineage(task: Any, inputs: Iterable[str], output: str | Iterable[str] | None) -> None:
    """Tell Airflow's hook-lineage collector (read by OpenLineage) what a task read and wrote.

    ``inputs`` are URIs of what the task read (source series: ``s3://…``,
    ``https://…getImage?…``, ``file://…``; a site); ``output`` the URI (or URIs) of
    what it wrote.  ``task`` identifies the caller (the collector expects a hook; any
    stable object serves).  Each task starts with an empty collector
    (:mod:`static_dicomweb_airflow.lineage`), so an event lists only its own task's.
    """
    from airflow.sdk.lineage import get_hook_lineage_collector

    collector = get_hook_lineage_collector()
    for uri in inputs:
        collector.add_input_asset(task, uri=uri)
    for uri in [output] if isinstance(output, str) else (output or ()):
        collector.add_output_asset(task, uri=uri)


def with_destination(params: dict[str, Any], events: Any) -> dict[str, Any]:
    """``params`` with a ``destination``: the param if set, else the newest triggering event's.

    Runs scheduled on an Asset get the DAG's default params; the ``dicomweb_site``
    and label events name their site in their extra.
    """
    if params.get("destination"):
        return params
    newest: tuple[str, str] | None = None
    for asset_events in (events or {}).values():
        for event in asset_events:
            dest = (getattr(event, "extra", None) or {}).get("destination")
            stamp = str(getattr(event, "timestamp", ""))
            if dest and (newest is None or stamp >= newest[0]):
                newest = (stamp, dest)
    if newest is None:
        raise AirflowFailException("no destination: set the param, or run on a dicomweb_site event")
    return {**params, "destination": newest[1]}
