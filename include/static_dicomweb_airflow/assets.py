"""The Assets the DAGs produce and schedule on, declared once."""

from __future__ import annotations

from airflow.sdk import Asset

#: A static DICOMweb site was (re)published; the event's extra names it (``site``, counts).
SITE = Asset(name="dicomweb_site", uri="static-dicomweb://site", group="static-dicomweb")

#: New weights of a spine model were published; the extra names the model, its SHA-256 and Dice.
MODEL = Asset(name="spine_model", uri="static-dicomweb://models/spine", group="static-dicomweb")

#: Labels were added to a site (e.g. TotalSegmentator SEGs imported); the extra names the site.
LABELS = Asset(name="spine_labels", uri="static-dicomweb://labels/spine", group="static-dicomweb")
