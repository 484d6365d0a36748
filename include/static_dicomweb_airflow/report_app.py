"""The api-server side of the plugin: a run's validation report, behind Airflow's own login.

Mounted by ``plugins/static_dicomweb_plugin.py`` at ``/static-dicomweb``:
``GET /static-dicomweb/validation-report/{dag_id}/{run_id}`` answers the JSON report that
the run's ``validate`` task kept in XCom (the same document as the site's
``_site/validation-report.json``), for folder and S3 sites alike, and for a site that
failed validation.  Access needs the same right as reading the DAG's XComs.
"""

from __future__ import annotations

from typing import Any

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.common.db.common import SessionDep
from airflow.api_fastapi.core_api.security import requires_access_dag
from fastapi import Depends, FastAPI, HTTPException
from sqlalchemy import select

from .links import REPORT_XCOM_KEY

app = FastAPI(title="static-dicomweb", description="Validation reports of dicomweb_site runs")


@app.get("/validation-report/{dag_id}/{run_id}",
         dependencies=[Depends(requires_access_dag("GET", DagAccessEntity.XCOM))])
def validation_report(dag_id: str, run_id: str, session: SessionDep) -> Any:
    """The report the run's ``validate`` task kept; 404 when it has none (not run yet)."""
    from airflow.models.xcom import XComModel

    row = session.scalars(select(XComModel).where(
        XComModel.dag_id == dag_id, XComModel.run_id == run_id, XComModel.task_id == "validate",
        XComModel.key == REPORT_XCOM_KEY).order_by(XComModel.timestamp.desc())).first()
    if row is None:
        raise HTTPException(404, f"run {run_id} of {dag_id} has no validation report (yet)")
    return XComModel.deserialize_value(row)
