"""static-dicomweb: DICOM Part 10 files → a static DICOMweb site on S3 or a folder."""

from __future__ import annotations

__version__ = "0.1.0"
