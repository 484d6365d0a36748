"""Seed the spine labels: import IDC's TotalSegmentator SEGs of NLST CT series into a site.

``import_totalseg`` selects the TotalSegmentator-CT-Segmentations SEG series of the given CT
series from idc-index's offline index, downloads them from IDC's public bucket (the same
source code as ``dicomweb_site``'s ``idc:`` source), keeps their vertebra segments mapped to
the model's labels (C1..L5 for ``localization_spine``, one ``spine`` label for ``spine_cpu``),
and converts the new SEGs (and any CT series the site lacks) into the site; ``aggregate``
updates the indexes; the ``spine_labels`` Asset event then schedules ``spine_training``.

Trigger with e.g. ``{"destination": "s3://bucket/nlst", "series_uids": ["1.2.840..."]}``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import dag, task

from static_dicomweb_airflow.assets import LABELS
from static_dicomweb_airflow.params import LabelsImportParams, airflow_params
from static_dicomweb_airflow.pools import SOURCE_POOL

# declared once, with their defaults and descriptions, in static_dicomweb_airflow.params
PARAMS = airflow_params(LabelsImportParams)
RETRIES = {"retries": 3, "retry_delay": timedelta(seconds=10), "retry_exponential_backoff": True,
           "max_retry_delay": timedelta(minutes=10)}


@dag(dag_id="spine_labels_import", description="import IDC's TotalSegmentator spine SEGs of NLST CT",
     schedule=None, start_date=datetime(2026, 1, 1), catchup=False,
     params=PARAMS, default_args=RETRIES, tags=["static-dicomweb", "annotation"], doc_md=__doc__)
def spine_labels_import() -> None:

    @task(pool=SOURCE_POOL)
    def import_totalseg(params: dict[str, Any] | None = None) -> Any:
        from static_dicomweb_airflow import training

        return training.import_labels(params or {})

    @task(outlets=[LABELS])
    def aggregate(summary: Any, params: dict[str, Any] | None = None, outlet_events: Any = None) -> Any:
        from static_dicomweb_airflow import training

        result = training.aggregate_labels(summary, params or {})
        outlet_events[LABELS].extra = result
        return result

    aggregate(import_totalseg())


spine_labels_import()
