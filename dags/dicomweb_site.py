"""DICOM Part 10 files → a static DICOMweb site, validated and published.

``discover`` lists the source's series (a folder, ``s3://bucket/prefix``,
``nbia:NLST`` for TCIA, ``idc:nlst`` for NCI IDC) and plans batches of whole
series (at most 1,024); ``download`` fetches each batch (resumable, verified);
``convert`` writes each batch's per-instance objects (an idempotent
transaction); ``aggregate`` merges them into the study and root indexes (one
writer); ``validate`` checks the site against the site contract and PS3.18;
``publish`` emits the ``dicomweb_site`` Asset event.

Manual runs take the whole source.  The weekly schedule takes only what the
source changed in the run's data interval, so backfills over past intervals
work and reruns are idempotent.  Trigger from the UI with params, e.g.
``{"source": "nbia:NLST", "destination": "s3://bucket/nlst", "limit": 10}``;
S3 access uses the ``aws_conn_id`` connection.  ``validate`` and ``publish`` link to
the site's viewer and validation report (``plugins/static_dicomweb_plugin.py``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import CronDataIntervalTimetable, dag, task

from static_dicomweb_airflow.assets import SITE
from static_dicomweb_airflow.lineage import outlets_as_outputs
from static_dicomweb_airflow.links import ValidationReportLink, ViewerLink
from static_dicomweb_airflow.params import SiteParams, airflow_params
from static_dicomweb_airflow.pools import SOURCE_POOL, WRITE_POOL

# declared once, with their defaults and descriptions, in static_dicomweb_airflow.params
PARAMS = airflow_params(SiteParams)
RETRIES = {"retries": 3, "retry_delay": timedelta(seconds=10), "retry_exponential_backoff": True,
           "max_retry_delay": timedelta(minutes=10)}


# a data-interval timetable (Airflow 3's plain cron schedules have none): each weekly run covers
# the week before it, which the sources filter on
WEEKLY = CronDataIntervalTimetable("@weekly", timezone="UTC")


@dag(dag_id="dicomweb_site", description="DICOM files -> a static DICOMweb site, validated and published",
     schedule=WEEKLY, start_date=datetime(2026, 1, 1), catchup=False,
     params=PARAMS, default_args=RETRIES, tags=["static-dicomweb"], doc_md=__doc__)
def dicomweb_site() -> None:
    # the task bodies import the library (pydicom, numpy, boto3) when they run, not at parse time

    @task
    def discover(params: dict[str, Any] | None = None, dag_run: Any = None,
                 data_interval_start: datetime | None = None,
                 data_interval_end: datetime | None = None) -> list[list[dict[str, Any]]]:
        from static_dicomweb_airflow import tasks

        scheduled = dag_run is not None and str(dag_run.run_type).endswith("scheduled")
        window = (data_interval_start, data_interval_end) if scheduled else (None, None)
        return tasks.discover(params or {}, *window)

    @task(pool=SOURCE_POOL)
    def download(refs: list[dict[str, Any]], params: dict[str, Any] | None = None) -> list[str]:
        from static_dicomweb_airflow import tasks

        return tasks.download(refs, params or {})

    @task(pool=WRITE_POOL)
    def convert(files: list[str], params: dict[str, Any] | None = None) -> Any:
        from static_dicomweb_airflow import tasks

        return tasks.convert(files, params or {})

    @task
    def aggregate(results: list[Any], params: dict[str, Any] | None = None) -> Any:
        from static_dicomweb_airflow import tasks

        # index by length: iterating a lazy XCom sequence to its end logs a 404
        return tasks.aggregate([results[i] for i in range(len(results))], params or {})

    @task
    def validate(summary: Any, params: dict[str, Any] | None = None, ti: Any = None) -> dict[str, Any]:
        from static_dicomweb_airflow import tasks

        return tasks.check(summary, params or {}, ti)

    @task(outlets=[SITE])
    def publish(report: dict[str, Any], params: dict[str, Any] | None = None,
                outlet_events: Any = None) -> dict[str, Any]:
        # the site's location travels with the event: DAGs scheduled on it read it from there
        extra = {**report, "destination": (params or {}).get("destination")}
        outlet_events[SITE].extra = extra
        return extra

    files = download.expand(refs=discover())
    checked = validate(aggregate(convert.expand(files=files)))
    published = publish(checked)
    # Airflow 3 computes a task's links when it ends, on the worker, and keeps them in XCom
    checked.operator.operator_extra_links = [ValidationReportLink()]
    published.operator.operator_extra_links = [ViewerLink(), ValidationReportLink()]
    # OpenLineage: the dicomweb_site Asset is publish's output
    outlets_as_outputs(published.operator)


dicomweb_site()
