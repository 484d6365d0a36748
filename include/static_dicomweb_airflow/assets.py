"""The Assets the DAGs produce and schedule on, declared once."""

from __future__ import annotations

from airflow.sdk import Asset

#: A static DICOMweb site was (re)published; the event's extra names it (``site``, counts).
SITE = Asset(name="dicomweb_site", uri="static-dicomweb://site", group="static-dicomweb")
