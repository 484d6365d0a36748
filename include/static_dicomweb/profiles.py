"""Site profiles: which optional objects a conversion writes.

``default`` writes frames, instance and series Part 10 (the input three times
over), ``viewer`` frames and metadata only (OHIF reads it; 3D Slicer and MONAI
Label need Part 10 and cannot), ``full`` what ``default`` writes plus a
thumbnail per instance.  The storage each takes, measured, is in
docs/site-layout.md.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    """What a conversion writes beyond metadata, frames and bulk data."""

    name: str
    instance_p10: bool
    series_p10: bool
    instance_thumbnails: bool
    description: str


PROFILES = {p.name: p for p in (
    Profile("default", True, True, False,
            "frames, instance and series retrieve (Part 10), metadata, study/series thumbnails"),
    Profile("viewer", False, False, False,
            "frames and metadata only: OHIF; no Part 10 retrieve for Slicer or MONAI Label"),
    Profile("full", True, True, True, "default plus a thumbnail for every instance"),
)}


def get_profile(name: str) -> Profile:
    """The profile called ``name``.

    Raises
    ------
    ValueError
        Naming the profiles there are.

    """
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}") from None
