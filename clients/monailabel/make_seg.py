"""A DICOM SEG of one CT series, made by MONAI Label's own code (run with clients/monailabel/.venv).

Usage: ``make_seg.py SERIES_DIR OUT_DCM [THRESHOLD_HU]``

Reads the Part 10 files of SERIES_DIR as MONAI Label does (``dicom_to_nifti``:
SimpleITK/GDCM), labels every voxel at or above THRESHOLD_HU (default 300 HU:
bone, i.e. the phantom's vertebrae and sternum) as segment 1, and writes the
DICOM SEG that MONAI Label 0.8.5 would send by STOW-RS when a ``final`` label is
saved (``nifti_to_dicom_seg``: dcmqi's ``itkimage2segimage``, which must be on
PATH). Prints the SEG's Series Instance UID. Used by tests/test_monailabel.py
to put a MONAI-Label-made SEG in a site without STOW-RS.
"""

import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk  # noqa: N813  (MONAI Label's own spelling)
from monailabel.datastore.utils.convert import dicom_to_nifti, nifti_to_dicom_seg
from pydicom import dcmread


def main(series_dir: str, out: str, threshold: float = 300.0) -> str:
    """Write the SEG of the series in ``series_dir`` to ``out``; returns its Series Instance UID."""
    image_file = dicom_to_nifti(series_dir)
    image = sitk.ReadImage(image_file)
    mask = (sitk.GetArrayFromImage(image) >= threshold).astype(np.uint8)
    if not mask.any():
        raise SystemExit(f"{series_dir}: no voxel at or above {threshold} HU")
    label = sitk.GetImageFromArray(mask)
    label.CopyInformation(image)
    with tempfile.TemporaryDirectory() as tmp:
        label_file = str(Path(tmp) / "label.nii.gz")
        sitk.WriteImage(label, label_file)
        seg_file = nifti_to_dicom_seg(series_dir, label_file, [{"name": "spine", "model_name": "threshold"}])
    Path(image_file).unlink()
    if not seg_file:
        raise SystemExit(f"{series_dir}: MONAI Label made no SEG")
    shutil.move(seg_file, out)
    return str(dcmread(out, stop_before_pixels=True).SeriesInstanceUID)


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        raise SystemExit(__doc__)
    print(main(sys.argv[1], sys.argv[2], *(float(a) for a in sys.argv[3:])))
