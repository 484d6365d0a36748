"""Task bodies of the ``dicomweb_site`` DAG: one call into the library each."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from static_dicomweb import pipeline
from static_dicomweb.errors import PermanentError
from static_dicomweb.validate import validate

from .runtime import permanent_errors_fail, store_for


def discover(params: dict[str, Any]) -> list[list[str]]:
    """List the source's series and plan the mapped batches."""
    with permanent_errors_fail():
        found = pipeline.discover_folder([params["source"]])
        wanted = set(params.get("series_uids") or [])
        if wanted:
            found = [s for s in found if s.series in wanted]
        if params.get("limit"):
            found = found[: int(params["limit"])]
        if not found:
            raise PermanentError(f"{params['source']}: no DICOM series found")
        return pipeline.plan_batches(found, int(params.get("batch_size") or 50))


def convert(files: Sequence[str], params: dict[str, Any]) -> pipeline.BatchResult:
    """Convert one batch of series into the destination."""
    with permanent_errors_fail():
        return pipeline.convert_batch(files, store_for(params["destination"], params.get("aws_conn_id")),
                                      params.get("profile") or "default")


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
    if not report.ok:
        first = report.findings[0]
        raise PermanentError(f"{destination} does not conform: {result['errors']} errors, "
                             f"first: {first.key}: {first.message}")
    return {**summary, "checked": result["checked"]}
