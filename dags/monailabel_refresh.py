"""Keep the MONAI Label server in step with the site and the published model.

On a ``dicomweb_site`` event, ``refresh_datastore`` calls ``POST /reload`` (MONAI
Label has no lighter way to re-list a DICOMweb datastore) and checks that the
datastore lists as many images as the site answers to MONAI Label's search
(``series?Modality=CT``).  On a ``spine_model`` event, ``refresh_model`` uploads
the published weights with ``PUT /model/{name}`` when the server serves others,
and checks with ``GET /model/info/{name}`` that it now reports their checksum.
Both run on either event and are idempotent, so a missed event is caught up.

The server comes from the ``monailabel_conn_id`` connection (type ``http``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import dag, task

from static_dicomweb_airflow.assets import MODEL, SITE
from static_dicomweb_airflow.params import RefreshParams, airflow_params

# declared once, with their defaults and descriptions, in static_dicomweb_airflow.params
PARAMS = airflow_params(RefreshParams)
RETRIES = {"retries": 3, "retry_delay": timedelta(seconds=15), "retry_exponential_backoff": True,
           "max_retry_delay": timedelta(minutes=5)}


@dag(dag_id="monailabel_refresh", description="reload MONAI Label's datastore and upload new spine weights",
     schedule=(SITE | MODEL), start_date=datetime(2026, 1, 1), catchup=False,
     params=PARAMS, default_args=RETRIES, tags=["static-dicomweb", "annotation"], doc_md=__doc__,
     max_active_runs=1)
def monailabel_refresh() -> None:

    @task
    def refresh_datastore(params: dict[str, Any] | None = None,
                          triggering_asset_events: Any = None) -> dict[str, Any]:
        from static_dicomweb_airflow import training
        from static_dicomweb_airflow.runtime import with_destination

        return training.refresh_datastore(with_destination(params or {}, triggering_asset_events))

    @task
    def refresh_model(params: dict[str, Any] | None = None,
                      triggering_asset_events: Any = None) -> dict[str, Any]:
        from static_dicomweb_airflow import training
        from static_dicomweb_airflow.runtime import with_destination

        return training.refresh_model(with_destination(params or {}, triggering_asset_events))

    refresh_datastore() >> refresh_model()


monailabel_refresh()
