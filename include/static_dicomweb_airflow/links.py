"""Extra links on the ``dicomweb_site`` run: "Open in viewer" and "Validation report".

A site's public base URL (where its DICOMweb root is served: ``static-dicomweb serve
SITE --viewer``, a CloudFront distribution) comes from the run's ``site_url`` param, else
the Airflow Variable ``dicomweb_site_url``; the viewer is OHIF at ``<site URL>/viewer/``.
Without a site URL there is no viewer link, and the validation report link points at the
api-server's plugin endpoint, which shows the report the ``validate`` task kept in XCom.

Airflow 3 computes each link on the worker when the task finishes and stores it in XCom,
so these run in the task's process (they read the run's params, never a database).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

from .params import SiteParams

#: the Airflow Variable that names the site's public base URL when the param is empty
SITE_URL_VARIABLE = "dicomweb_site_url"
#: where the plugin's FastAPI app is mounted in the api-server
REPORT_APP_PREFIX = "/static-dicomweb"
#: the XCom key under which ``validate`` keeps the report
REPORT_XCOM_KEY = "validation_report"


def site_url(params: dict[str, Any]) -> str:
    """The site's public base URL without a trailing slash, or ``""`` when none is configured."""
    url = SiteParams.of(params).site_url
    if not url:
        from airflow.sdk import Variable

        url = str(Variable.get(SITE_URL_VARIABLE, default="") or "")
    return url.rstrip("/")


def viewer_url(params: dict[str, Any]) -> str:
    """OHIF at ``<site URL>/viewer/``, or ``""``."""
    base = site_url(params)
    return f"{base}/viewer/" if base else ""


def report_url(params: dict[str, Any], dag_id: str, run_id: str, api_base_url: str = "") -> str:
    """The site's own ``_site/validation-report.json`` if it is served, else the plugin's page."""
    base = site_url(params)
    if base:
        return f"{base}/_site/validation-report.json"
    return (f"{api_base_url.rstrip('/')}{REPORT_APP_PREFIX}/validation-report/"
            f"{quote(dag_id, safe='')}/{quote(run_id, safe='')}")


def _params(ti: Any) -> dict[str, Any]:
    """The run's resolved params (defaults merged with the run's conf)."""
    return dict(ti.get_template_context()["params"])


def _api_base_url() -> str:
    from airflow.sdk import conf

    return str(conf.get("api", "base_url", fallback="") or "")


class ViewerLink(BaseOperatorLink):
    """"Open in viewer": OHIF for the site, when the site's URL is configured."""

    name = "Open in viewer"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        """The viewer URL (``ti_key`` is the running task instance on the worker)."""
        return viewer_url(_params(ti_key))


class ValidationReportLink(BaseOperatorLink):
    """"Validation report": the report of the run's site."""

    name = "Validation report"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        """The report URL (``ti_key`` is the running task instance on the worker)."""
        return report_url(_params(ti_key), ti_key.dag_id, ti_key.run_id, _api_base_url())
