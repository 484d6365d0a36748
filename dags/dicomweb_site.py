"""DICOM Part 10 files → a static DICOMweb site, validated and published.

``discover`` groups the source's files by series and plans batches of whole
series; ``convert`` is mapped over the batches (each an idempotent
transaction writing per-instance objects); ``aggregate`` merges them into the
study and root indexes (one writer); ``validate`` checks the site against the
site contract and PS3.18; ``publish`` emits the ``dicomweb_site`` Asset event.
Trigger it from the UI with params, e.g. ``{"source": "/data/nlst",
"destination": "s3://bucket/nlst"}``; S3 access uses the ``aws_conn_id``
connection.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Param, dag, task

from static_dicomweb_airflow.assets import SITE

PARAMS = {
    "source": Param("/data/dicom", type="string", description="folder of Part 10 files"),
    "destination": Param("/data/site", type="string", description="site folder or s3://bucket/prefix"),
    "series_uids": Param([], type="array", description="only these SeriesInstanceUIDs (empty: all)"),
    "limit": Param(0, type="integer", minimum=0, description="at most this many series (0: all)"),
    "batch_size": Param(50, type="integer", minimum=1, description="series per mapped convert task"),
    "profile": Param("default", enum=["default", "viewer", "full"]),
    "aws_conn_id": Param("aws_default", type="string"),
    "validate_url": Param("", type="string", description="validate over HTTP here instead"),
}
RETRIES = {"retries": 3, "retry_delay": timedelta(seconds=10), "retry_exponential_backoff": True,
           "max_retry_delay": timedelta(minutes=10)}


@dag(dag_id="dicomweb_site", schedule=None, catchup=False, params=PARAMS, default_args=RETRIES,
     tags=["static-dicomweb"], doc_md=__doc__)
def dicomweb_site() -> None:
    # the task bodies import the library (pydicom, numpy, boto3) when they run, not at parse time

    @task
    def discover(params: dict[str, Any] | None = None) -> list[list[str]]:
        from static_dicomweb_airflow import tasks

        return tasks.discover(params or {})

    @task(max_active_tis_per_dagrun=4)
    def convert(files: list[str], params: dict[str, Any] | None = None) -> Any:
        from static_dicomweb_airflow import tasks

        return tasks.convert(files, params or {})

    @task
    def aggregate(results: list[Any], params: dict[str, Any] | None = None) -> Any:
        from static_dicomweb_airflow import tasks

        # index by length: iterating a lazy XCom sequence to its end logs a 404
        return tasks.aggregate([results[i] for i in range(len(results))], params or {})

    @task
    def validate(summary: Any, params: dict[str, Any] | None = None) -> dict[str, Any]:
        from static_dicomweb_airflow import tasks

        return tasks.check(summary, params or {})

    @task(outlets=[SITE])
    def publish(report: dict[str, Any], outlet_events: Any = None) -> dict[str, Any]:
        outlet_events[SITE].extra = report
        return report

    publish(validate(aggregate(convert.expand(files=discover()))))


dicomweb_site()
