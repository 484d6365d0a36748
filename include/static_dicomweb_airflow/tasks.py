"""Task bodies of the ``dicomweb_site`` DAG: one call into the library each.

Each body reads the run's params through :class:`~.params.SiteParams` and reports its
own lineage: ``download`` the source series it read; ``convert`` the folders it read
and the site it wrote; ``aggregate`` the site it read and wrote; ``validate`` the site
it read.  ``publish`` reports none itself: its outlet, the ``dicomweb_site`` Asset, is
its output.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from static_dicomweb import pipeline
from static_dicomweb.errors import PermanentError
from static_dicomweb.validate import validate

from .links import REPORT_XCOM_KEY
from .params import SiteParams
from .runtime import permanent_errors_fail, report_lineage, s3_client, site_uri, store_for


def discover(params: dict[str, Any], since: datetime | None,
             until: datetime | None) -> list[list[dict[str, Any]]]:
    """List the source's series (those changed in the window, if any) and plan batches."""
    p = SiteParams.of(params)
    with permanent_errors_fail():
        refs = pipeline.discover(p.source, since=since, until=until, series_uids=p.series_uids,
                                 patient_ids=p.patient_ids, limit=p.limit,
                                 skip_localizer_series=p.skip_localizers,
                                 client=s3_client(p.source, p.aws_conn_id))
        if not refs and not (since or until):
            raise PermanentError(f"{p.source}: no DICOM series found")
        return pipeline.plan_batches(refs, p.batch_size)


def download(refs: Sequence[dict[str, Any]], params: dict[str, Any]) -> list[str]:
    """Fetch one batch of series to the download folder (a no-op for local folders)."""
    p = SiteParams.of(params)
    with permanent_errors_fail():
        files = pipeline.download_batch(p.source, refs, Path(p.download_dir),
                                        client=s3_client(p.source, p.aws_conn_id))
    report_lineage(download, (_series_uri(p.source, ref) for ref in refs), None)
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
    p = SiteParams.of(params)
    with permanent_errors_fail():
        result = pipeline.convert_batch(files, store_for(p.destination, p.aws_conn_id), p.profile)
    folders = sorted({Path(f).resolve().parent.as_uri() for f in files})
    report_lineage(convert, folders, site_uri(p.destination))
    return result


def aggregate(results: Sequence[pipeline.BatchResult], params: dict[str, Any]) -> pipeline.Summary:
    """Merge every batch into the site's indexes (it reads the site's indexes and writes them)."""
    p = SiteParams.of(params)
    with permanent_errors_fail():
        summary = pipeline.aggregate_batches(results, store_for(p.destination, p.aws_conn_id),
                                             p.profile)
    site = site_uri(p.destination)
    report_lineage(aggregate, [site], site)
    return summary


def check(summary: pipeline.Summary, params: dict[str, Any], ti: Any = None) -> dict[str, Any]:
    """Validate the site (the report is kept in a folder site); fail if it does not conform.

    With ``ti`` (the task instance), the JSON report is also kept in XCom under
    ``validation_report``, where the plugin's "Validation report" page reads it.
    """
    p = SiteParams.of(params)
    destination = p.validate_url or p.destination
    report = validate(destination, decode_frames=True,
                      client=None if p.validate_url else s3_client(destination, p.aws_conn_id))
    result = report.to_json()
    if ti is not None:
        ti.xcom_push(REPORT_XCOM_KEY, result)
    report_lineage(check, [destination if p.validate_url else site_uri(destination)], None)
    with permanent_errors_fail():  # a site that does not conform is not fixed by a retry
        if not report.ok:
            first = report.findings[0]
            raise PermanentError(f"{destination} does not conform: {result['errors']} errors, "
                                 f"first: {first.key}: {first.message}")
    return {**summary, "checked": result["checked"]}
