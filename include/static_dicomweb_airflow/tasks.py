"""Task bodies of the ``dicomweb_site`` DAG: one call into the library each."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from static_dicomweb import pipeline
from static_dicomweb.errors import PermanentError
from static_dicomweb.validate import validate

from .runtime import permanent_errors_fail, report_lineage, site_uri, store_for


def discover(params: dict[str, Any], since: datetime | None,
             until: datetime | None) -> list[list[dict[str, Any]]]:
    """List the source's series (those changed in the window, if any) and plan batches."""
    with permanent_errors_fail():
        refs = pipeline.discover(params["source"], since=since, until=until,
                                 series_uids=params.get("series_uids") or (),
                                 patient_ids=params.get("patient_ids") or (),
                                 limit=int(params.get("limit") or 0),
                                 skip_localizer_series=bool(params.get("skip_localizers", True)))
        if not refs and not (since or until):
            raise PermanentError(f"{params['source']}: no DICOM series found")
        return pipeline.plan_batches(refs, int(params.get("batch_size") or 50))


def download(refs: Sequence[dict[str, Any]], params: dict[str, Any]) -> list[str]:
    """Fetch one batch of series to the download folder (a no-op for local folders)."""
    with permanent_errors_fail():
        dest = Path(params.get("download_dir") or "/tmp/static-dicomweb-downloads")
        files = pipeline.download_batch(params["source"], refs, dest)
    report_lineage(download, (_series_uri(params["source"], ref) for ref in refs), None)
    return files


def _series_uri(source: str, ref: dict[str, Any]) -> str:
    """A URI naming one source series, for lineage."""
    location = str(ref.get("location") or "")
    if location.startswith(("s3://", "http://", "https://")):
        return location
    first = location.split("\n", 1)[0]
    return Path(first).resolve().parent.as_uri() if first else Path(source).resolve().as_uri()


def convert(files: Sequence[str], params: dict[str, Any]) -> pipeline.BatchResult:
    """Convert one batch of series into the destination."""
    with permanent_errors_fail():
        result = pipeline.convert_batch(files, store_for(params["destination"],
                                                         params.get("aws_conn_id")),
                                        params.get("profile") or "default")
    folders = sorted({Path(f).resolve().parent.as_uri() for f in files})
    report_lineage(convert, folders, site_uri(params["destination"]))
    return result


def aggregate(results: Sequence[pipeline.BatchResult], params: dict[str, Any]) -> pipeline.Summary:
    """Merge every batch into the site's indexes."""
    with permanent_errors_fail():
        return pipeline.aggregate_batches(results, store_for(params["destination"],
                                                             params.get("aws_conn_id")),
                                          params.get("profile") or "default")


def check(summary: pipeline.Summary, params: dict[str, Any]) -> dict[str, Any]:
    """Validate the site (the report is kept in a folder site); fail if it does not conform."""
    destination = params.get("validate_url") or params["destination"]
    report = validate(destination, decode_frames=True)
    result = report.to_json()
    with permanent_errors_fail():  # a site that does not conform is not fixed by a retry
        if not report.ok:
            first = report.findings[0]
            raise PermanentError(f"{destination} does not conform: {result['errors']} errors, "
                                 f"first: {first.key}: {first.message}")
    return {**summary, "checked": result["checked"]}
