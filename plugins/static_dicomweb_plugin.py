"""Airflow plugin of static-dicomweb: links from a ``dicomweb_site`` run to its site.

- Extra links "Open in viewer" (OHIF at ``<site URL>/viewer/``) and "Validation report"
  on the ``validate`` and ``publish`` tasks (``static_dicomweb_airflow.links``: where the
  site URL comes from).
- A FastAPI app in the api-server at ``/static-dicomweb`` that shows a run's validation
  report (``static_dicomweb_airflow.report_app``), for sites nobody serves over HTTP yet.
- A listener that gives each task its own lineage (``static_dicomweb_airflow.lineage``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from airflow.plugins_manager import AirflowPlugin

from static_dicomweb_airflow import lineage as lineage_per_task
from static_dicomweb_airflow.links import REPORT_APP_PREFIX, ValidationReportLink, ViewerLink


class StaticDicomwebPlugin(AirflowPlugin):
    """Registers the links (so the api-server knows them), the report app and the listener."""

    name = "static_dicomweb"
    operator_extra_links: ClassVar[list[Any]] = [ViewerLink(), ValidationReportLink()]
    listeners: ClassVar[list[Any]] = [lineage_per_task]

    @property
    def fastapi_apps(self) -> list[dict[str, object]]:  # type: ignore[override]
        """The report app, imported when the api-server asks for it."""
        # only the api-server reads this: workers and the scheduler never import FastAPI for it
        from static_dicomweb_airflow.report_app import app

        return [{"app": app, "url_prefix": REPORT_APP_PREFIX, "name": "static-dicomweb reports"}]
