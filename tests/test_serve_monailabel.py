"""MONAI Label saves a label of a real-size CT through ``serve``: a SEG over 1 MB, sent chunked.

MONAI Label 0.8.5 stores a final label by converting it to DICOM SEG and posting it with
dicomweb-client's ``store_instances``, which sends any body over its chunk size (1 MB) with
``Transfer-Encoding: chunked``. A SEG of a CT of 512 x 512 x 150 is several MB, so this is the
path "Submit Label" takes on real data. Skipped where MONAI Label's virtualenv is missing
(``clients/monailabel/setup.sh``).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pydicom
import pytest
import requests
from pydicom.uid import ExplicitVRLittleEndian

from static_dicomweb import keys, multipart
from static_dicomweb.convert import convert
from static_dicomweb.store import LocalStore
from static_dicomweb_sample import SampleSpec, generate_sample

from .monailabel_server import INSTALLED, running_monailabel, serving_with_access_log
from .test_monailabel import BONE_HU, SEG_STORAGE, TOKEN, nifti_label, read_nifti

pytestmark = [pytest.mark.integration, pytest.mark.clients, pytest.mark.slow, pytest.mark.timeout(1800)]

CT = SampleSpec(patients=1, slices=150, rows=512, columns=512, transfer_syntaxes=(ExplicitVRLittleEndian,),
                multiframe=False, localizer=False)


def test_monai_label_saves_a_seg_of_a_512x512x150_ct(tmp_path: Path) -> None:
    if not INSTALLED.is_file():
        pytest.skip("MONAI Label is not installed: run clients/monailabel/setup.sh (make test-clients)")
    site = tmp_path / "site"
    source = _convert_sample(tmp_path / "in", site)
    image = source.SeriesInstanceUID
    with (serving_with_access_log(site, TOKEN) as (site_url, access),
          running_monailabel(site_url, tmp_path / "monailabel", TOKEN) as (url, log_file)):
        header, mask = _bone_mask_of_image(url, image)
        seg_series = _save_final_label(url, image, nifti_label(header, mask), log_file)
    assert [(m, p, s) for m, p, s in access.requests() if m == "POST"] == [("POST", "/studies", 200)]
    _check_seg(LocalStore(site), source.StudyInstanceUID, seg_series, image, mask)


def _convert_sample(folder: Path, site: Path) -> pydicom.Dataset:
    """Generate the CT into ``folder``, convert it into ``site``; the header of its STANDARD series."""
    generate_sample(folder, CT)
    first = {}
    for path in sorted(folder.rglob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        first.setdefault(ds.SeriesInstanceUID, ds)
    source = next(ds for _uid, ds in sorted(first.items()) if "STANDARD" in ds.SeriesDescription)
    result = convert([folder], LocalStore(site))
    assert result.ok, result.rejected
    return source


def _bone_mask_of_image(url: str, image: str) -> tuple[bytes, npt.NDArray[np.bool_]]:
    """The NIfTI header of the series MONAI Label downloads, and its voxels at bone density."""
    download = requests.get(f"{url}/datastore/image", params={"image": image}, timeout=600)
    assert download.status_code == 200, download.text[:500]
    header, voxels, _affine = read_nifti(download.content)
    assert voxels.shape == (150, 512, 512)
    mask = voxels >= BONE_HU
    assert mask.any(axis=(1, 2)).all()  # the spine runs through every slice
    return header, mask


def _save_final_label(url: str, image: str, label: bytes, log_file: Path) -> str:
    """PUT ``label`` as the final label of ``image``; the SeriesInstanceUID MONAI Label gave its SEG."""
    saved = requests.put(f"{url}/datastore/label", params={"image": image, "tag": "final"},
                         files={"label": ("label.nii.gz", label, "application/octet-stream")},
                         data={"params": "{}"}, timeout=900)
    tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-40:])
    assert saved.status_code == 200, f"{saved.status_code} {saved.text[:300]}\n{tail}"
    return str(requests.get(f"{url}/datastore/label/info", params={"label": image, "tag": "final"},
                            timeout=60).json()["SeriesInstanceUID"])


def _check_seg(store: LocalStore, study: str, seg_series: str, image: str,
               mask: npt.NDArray[np.bool_]) -> None:
    """The site holds one SEG instance in ``seg_series``: over 1 MiB, of ``image``, with ``mask``'s voxels."""
    (sop,) = store.children(f"studies/{study}/series/{seg_series}/instances/")
    key = keys.instance(study, seg_series, sop).key
    body, headers = store.get(key), store.headers(key)
    assert headers is not None
    assert len(body) > 1 << 20, f"the SEG is {len(body)} bytes: not over dicomweb-client's chunk size"
    ((_, payload),) = multipart.split(body, headers["Content-Type"])
    seg = pydicom.dcmread(io.BytesIO(payload))
    assert seg.SOPClassUID == SEG_STORAGE
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == image
    assert np.count_nonzero(seg.pixel_array) == np.count_nonzero(mask)
