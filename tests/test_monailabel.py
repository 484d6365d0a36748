"""MONAI Label 0.8.5, for real, against ``serve``: the series list, a download, image info, a label saved.

MONAI Label runs in its own virtualenv (``clients/monailabel/setup.sh``: it pins pydicom 2 and
numpy 1), started by ``clients/monailabel/start.sh`` on the site that ``serve`` answers; these tests
are skipped when that virtualenv is missing. Nothing is downloaded: the radiology app comes from the
monailabel wheel, ``use_pretrained_model false`` and ``sam2 false`` keep it from fetching weights, and
dcmqi's ``itkimage2segimage`` comes from the virtualenv.

The site: the generator's CT data set (2 patients, 8 CT series: 2 localizers, 4 axial series in four
transfer syntaxes, 2 Enhanced CT multi-frame) plus one DICOM SEG that MONAI Label's own code made of
one axial series (``clients/monailabel/make_seg.py``), so the site already holds a "final" label as
MONAI Label would have stored it. Every request ``serve`` receives is logged; the log, MONAI Label's
own log and the timings are kept in ``.artifacts/monailabel/``.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient

from static_dicomweb.convert import convert
from static_dicomweb.store import LocalStore
from static_dicomweb_sample import SampleSpec, generate_sample

from .monailabel_server import (
    CLIENT,
    INSTALLED,
    RequestLog,
    monailabel_env,
    running_monailabel,
    serving_with_access_log,
)

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = CLIENT / ".venv" / "bin"
ARTIFACTS = REPO / ".artifacts" / "monailabel"

SPEC = SampleSpec(patients=2, slices=16, rows=64, columns=64)
TOKEN = "monailabel-test-token"  # the STOW token; MONAI Label sends it as the HTTP Basic password
SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
BONE_HU = 300.0  # the labels here: every voxel at or above this (the phantom's vertebrae and sternum)
log = logging.getLogger(__name__)


pytestmark = [pytest.mark.integration, pytest.mark.clients, pytest.mark.timeout(900)]


# --- NIfTI-1, as MONAI Label's /datastore/image answers (SimpleITK's writer), without nibabel ---------

_NIFTI_TYPES = {2: "u1", 4: "<i2", 8: "<i4", 16: "<f4", 64: "<f8", 256: "i1", 512: "<u2", 768: "<u4"}


def read_nifti(data: bytes) -> tuple[bytes, npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The header (up to the voxels), the voxels as ``[k, j, i]`` and the LPS affine of a NIfTI-1 file.

    The affine maps a voxel index ``(i, j, k, 1)`` to patient coordinates in DICOM's LPS (the file's
    sform is RAS).
    """
    raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    assert struct.unpack_from("<i", raw, 0)[0] == 348, "not a little-endian NIfTI-1 file"
    dims = struct.unpack_from("<8h", raw, 40)
    (datatype,) = struct.unpack_from("<h", raw, 70)
    offset = int(struct.unpack_from("<f", raw, 108)[0]) or 352
    slope, intercept = struct.unpack_from("<2f", raw, 112)
    (sform_code,) = struct.unpack_from("<h", raw, 254)
    assert sform_code > 0, "no sform"
    affine = np.array((*struct.unpack_from("<12f", raw, 280), 0.0, 0.0, 0.0, 1.0), float).reshape(4, 4)
    affine[:2] *= -1  # RAS -> LPS
    shape = tuple(reversed(dims[1:dims[0] + 1]))
    voxels = np.frombuffer(raw, dtype=_NIFTI_TYPES[datatype], count=int(np.prod(shape)),
                           offset=offset).reshape(shape).astype(np.float64)
    if np.isfinite(slope) and slope != 0.0 and (slope, intercept) != (1.0, 0.0):  # 0 or NaN: unscaled
        voxels = voxels * slope + intercept
    return raw[:offset], voxels, affine


def nifti_label(header: bytes, mask: npt.NDArray[np.bool_]) -> bytes:
    """A uint8 label image on the grid of the image whose NIfTI header is ``header``."""
    patched = bytearray(header)
    struct.pack_into("<2h", patched, 70, 2, 8)  # datatype uint8, 8 bits
    struct.pack_into("<2f", patched, 112, 1.0, 0.0)  # no scaling
    return gzip.compress(bytes(patched) + mask.astype(np.uint8).tobytes())


# --- the source, as MONAI Label should see it --------------------------------------------------------

@dataclass(frozen=True)
class Slice:
    """One frame of the source: where it is (LPS), how it is oriented, its Hounsfield units."""

    position: npt.NDArray[np.float64]
    orientation: npt.NDArray[np.float64]
    hu: npt.NDArray[np.float64]


def source_slices(paths: list[Path]) -> list[Slice]:
    """Every frame of a series (a multi-frame instance gives each of its frames)."""
    slices: list[Slice] = []
    for path in paths:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array.astype(np.float64)
        if "PerFrameFunctionalGroupsSequence" in ds:
            shared = ds.SharedFunctionalGroupsSequence[0]
            orientation = shared.PlaneOrientationSequence[0].ImageOrientationPatient
            for frame, groups in zip(pixels, ds.PerFrameFunctionalGroupsSequence, strict=True):
                rescale = (groups if "PixelValueTransformationSequence" in groups else shared
                           ).PixelValueTransformationSequence[0]
                position = groups.PlanePositionSequence[0].ImagePositionPatient
                hu = frame * float(rescale.RescaleSlope) + float(rescale.RescaleIntercept)
                slices.append(Slice(np.array(position, float), np.array(orientation, float), hu))
        else:
            hu = pixels * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
            slices.append(Slice(np.array(ds.ImagePositionPatient, float),
                                np.array(ds.ImageOrientationPatient, float), hu))
    return slices


def assert_same_image(data: bytes, paths: list[Path], what: str) -> None:
    """The NIfTI that MONAI Label made holds every source frame, at its place, voxel for voxel."""
    _, voxels, affine = read_nifti(data)
    slices = source_slices(paths)
    assert voxels.shape == (len(slices), *slices[0].hu.shape), what
    for k, plane in enumerate(voxels):
        position = (affine @ [0.0, 0.0, k, 1.0])[:3]
        at = [s for s in slices if np.allclose(s.position, position, atol=1e-3)]
        assert len(at) == 1, f"{what}: {len(at)} source frames at {position} (NIfTI slice {k})"
        (source,) = at
        in_plane = affine[:3, :2] / np.linalg.norm(affine[:3, :2], axis=0)
        np.testing.assert_allclose(in_plane.T.ravel(), source.orientation, atol=1e-4, err_msg=what)
        np.testing.assert_array_equal(plane, source.hu, err_msg=f"{what}, NIfTI slice {k}")


@dataclass
class Series:
    """One source series: where its files are and what MONAI Label's image info must say of it."""

    uid: str
    study: str
    patient: str
    study_date: str
    modality: str
    paths: list[Path] = field(default_factory=list)
    localizer: bool = False


def read_sources(folder: Path) -> dict[str, Series]:
    found: dict[str, Series] = {}
    for path in sorted(folder.rglob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        series = found.setdefault(ds.SeriesInstanceUID, Series(
            ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.PatientID, ds.StudyDate, ds.Modality,
            localizer="LOCALIZER" in list(ds.get("ImageType", []))))
        series.paths.append(path)
    return found


# --- the running pair: serve and MONAI Label ---------------------------------------------------------

@dataclass
class MonaiLabel:
    url: str
    site_url: str
    sources: dict[str, Series]
    seg: Series  # the SEG that was in the site before MONAI Label started
    seg_image: str  # the series it labels
    access: RequestLog
    log_file: Path
    timings: dict[str, float]
    images: dict[str, bytes] = field(default_factory=dict)

    @property
    def ct(self) -> dict[str, Series]:
        return {uid: s for uid, s in self.sources.items() if s.modality == "CT"}

    def get(self, path: str, **kwargs: object) -> requests.Response:
        response = requests.get(f"{self.url}{path}", timeout=120, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == 200, f"GET {path}: {response.status_code} {response.text[:500]}\n" \
                                            f"{self.tail()}"
        return response

    def image(self, uid: str) -> bytes:
        """``GET /datastore/image?image=UID`` (MONAI Label downloads the series and converts it)."""
        if uid not in self.images:
            started = time.monotonic()
            self.images[uid] = self.get("/datastore/image", params={"image": uid}).content
            self.timings[f"image {uid}"] = round(time.monotonic() - started, 3)
        return self.images[uid]

    def tail(self, lines: int = 60) -> str:
        return "MONAI Label log (tail):\n" + "\n".join(
            self.log_file.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="module")
def monailabel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MonaiLabel]:
    if not INSTALLED.is_file():
        pytest.skip("MONAI Label is not installed: run clients/monailabel/setup.sh (make test-clients)")
    tmp = tmp_path_factory.mktemp("monailabel")
    timings: dict[str, float] = {}

    started = time.monotonic()
    generate_sample(tmp / "in", SPEC)
    sources = read_sources(tmp / "in")
    axial = sorted(uid for uid, s in sources.items() if len(s.paths) > 1 and not s.localizer)
    seg_image = axial[-1]
    timings["sample"] = round(time.monotonic() - started, 3)

    started = time.monotonic()
    (tmp / "seg").mkdir()
    made = subprocess.run(
        [str(VENV_BIN / "python"), str(CLIENT / "make_seg.py"), str(sources[seg_image].paths[0].parent),
         str(tmp / "seg" / "seg.dcm"), str(BONE_HU)],
        env={**monailabel_env(tmp / "ml", TOKEN), "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"},
        capture_output=True, text=True, timeout=300, check=False)
    assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]
    timings["seg by MONAI Label's nifti_to_dicom_seg"] = round(time.monotonic() - started, 3)
    seg = next(iter(read_sources(tmp / "seg").values()))
    assert seg.modality == "SEG"

    started = time.monotonic()
    site = tmp / "site"
    result = convert([tmp / "in", tmp / "seg"], LocalStore(site))
    assert result.ok, result.rejected
    sources[seg.uid] = seg
    timings["convert"] = round(time.monotonic() - started, 3)

    with serving_with_access_log(site, TOKEN) as (site_url, access):
        started = time.monotonic()
        try:
            with running_monailabel(site_url, tmp, TOKEN) as (url, log_file):
                timings["monailabel start"] = round(time.monotonic() - started, 3)
                ml = MonaiLabel(url, site_url, sources, seg, seg_image, access, log_file, timings)
                log.info("MONAI Label up on %s for %s in %.1f s", url, site_url, timings["monailabel start"])
                yield ml
        finally:
            save_artifacts(tmp, access, timings)


def save_artifacts(tmp: Path, access: RequestLog, timings: dict[str, float]) -> None:
    """Keep serve's requests, MONAI Label's log and the timings under .artifacts/ for a person to read."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "serve-requests.log").write_text("\n".join(access.lines) + "\n")
    if (tmp / "monailabel.log").exists():
        (ARTIFACTS / "monailabel.log").write_bytes((tmp / "monailabel.log").read_bytes())
    (ARTIFACTS / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")


# --- the tests ----------------------------------------------------------------------------------------

def test_stats_count_exactly_the_ct_series(monailabel: MonaiLabel) -> None:
    stats = monailabel.get("/datastore/", params={"output": "stats"}).json()
    # the SEG is not an image to annotate; it makes its CT series "completed"
    assert stats["total"] == len(monailabel.ct), stats
    assert stats["completed"] == 1, stats
    asked = monailabel.access.requests()
    assert ("GET", "/series?Modality=CT", 200) in asked
    assert ("GET", "/series?Modality=SEG", 200) in asked
    # with queries answered, MONAI Label reads the metadata of SEG series only (on a host that ignores
    # the query string it reads every series' metadata, each time the list's cache expires)
    metadata = {path for _, path, _ in asked if path.endswith("/metadata")}
    seg = monailabel.seg
    assert metadata == {f"/studies/{seg.study}/series/{seg.uid}/metadata"}


def test_image_download_equals_the_source(monailabel: MonaiLabel) -> None:
    volumetric = {uid: s for uid, s in monailabel.ct.items() if not s.localizer}
    assert len(volumetric) == 6  # 4 axial series (four transfer syntaxes), 2 Enhanced CT
    for uid, series in sorted(volumetric.items()):
        assert_same_image(monailabel.image(uid), series.paths, f"series {uid}")
    retrieved = {path for method, path, _ in monailabel.access.requests() if method == "GET"
                 and re.fullmatch(r"/studies/[\d.]+/series/[\d.]+", path)}
    assert retrieved >= {f"/studies/{s.study}/series/{uid}" for uid, s in volumetric.items()}


def test_image_info_names_the_right_patient_and_study(monailabel: MonaiLabel) -> None:
    for uid, series in sorted(monailabel.ct.items()):
        monailabel.image(uid)  # MONAI Label records the info when it first downloads a series
        info = monailabel.get("/datastore/image/info", params={"image": uid}).json()
        assert info["SeriesInstanceUID"] == uid
        assert (info["PatientID"], info["StudyInstanceUID"]) == (series.patient, series.study), uid
        assert (info["StudyDate"], info["Modality"]) == (series.study_date, "CT"), uid
        assert info["RetrieveURL"].endswith(f"studies/{series.study}/series/{uid}"), info
    looked_up = [path for _, path, _ in monailabel.access.requests()
                 if path.startswith("/series?SeriesInstanceUID=")]
    assert looked_up, "MONAI Label looks a series up with series?SeriesInstanceUID="


def test_localizer_is_listed_and_downloads_as_a_two_slice_volume(monailabel: MonaiLabel) -> None:
    """MONAI Label's only filter is Modality=CT: a 2-image localizer is an image to annotate too."""
    for uid in sorted(uid for uid, s in monailabel.ct.items() if s.localizer):
        _, voxels, _ = read_nifti(monailabel.image(uid))
        assert voxels.shape == (2, SPEC.rows, SPEC.columns), uid  # AP and lateral, stacked


def test_seg_in_the_site_is_a_final_label_for_training(monailabel: MonaiLabel) -> None:
    pairs = monailabel.get("/datastore/", params={"output": "train"}).json()
    assert [Path(p["image"]).name for p in pairs] == [f"{monailabel.seg_image}.nii.gz"], pairs
    seg = monailabel.seg
    asked = monailabel.access.requests()
    assert ("GET", f"/studies/{seg.study}/series/{seg.uid}", 200) in asked


def test_final_label_lands_in_the_site_as_seg(monailabel: MonaiLabel) -> None:
    image = next(uid for uid, s in sorted(monailabel.ct.items())
                 if not s.localizer and len(s.paths) > 1 and uid != monailabel.seg_image)
    header, voxels, affine = read_nifti(monailabel.image(image))
    mask = voxels >= BONE_HU
    seg_series = save_final_label(monailabel, image, nifti_label(header, mask))
    source = monailabel.sources[image]
    client = DICOMwebClient(monailabel.site_url)
    rows = client.search_for_series(search_filters={"SeriesInstanceUID": seg_series})
    assert [r["00080060"]["Value"] for r in rows] == [["SEG"]], rows
    (stored,) = client.retrieve_series(source.study, seg_series)
    assert stored.SOPClassUID == SEG_STORAGE
    assert (stored.PatientID, stored.StudyInstanceUID) == (source.patient, source.study)
    assert stored.ReferencedSeriesSequence[0].SeriesInstanceUID == image
    check_seg_frames_are_the_label(stored, mask, affine)
    segs = client.search_for_series(search_filters={"Modality": "SEG"})
    assert {r["0020000E"]["Value"][0] for r in segs} == {monailabel.seg.uid, seg_series}


def save_final_label(monailabel: MonaiLabel, image: str, label: bytes) -> str:
    """PUT ``label`` as the final label of ``image``: one STOW-RS to serve; the new SEG's series."""
    started = time.monotonic()
    response = requests.put(f"{monailabel.url}/datastore/label", params={"image": image, "tag": "final"},
                            files={"label": ("label.nii.gz", label, "application/octet-stream")},
                            data={"params": "{}"}, timeout=300)
    monailabel.timings["save final label"] = round(time.monotonic() - started, 3)
    posts = [(m, p, s) for m, p, s in monailabel.access.requests() if m == "POST"]
    assert response.status_code == 200, f"{response.status_code} {response.text[:300]}; serve got {posts}"
    assert posts == [("POST", "/studies", 200)], posts
    # MONAI Label takes the new SEG's series from the RetrieveURL of the STOW-RS response
    info = monailabel.get("/datastore/label/info", params={"label": image, "tag": "final"}).json()
    seg_series = info["SeriesInstanceUID"]
    assert seg_series, f"no series in the STOW-RS response: {info}"
    return str(seg_series)


def check_seg_frames_are_the_label(stored: pydicom.Dataset, mask: npt.NDArray[np.bool_],
                                   affine: npt.NDArray[np.float64]) -> None:
    """Each SEG frame is the label's slice at the frame's position; every labelled slice has a frame."""
    positions = [(affine @ [0.0, 0.0, k, 1.0])[:3] for k in range(mask.shape[0])]
    frames = stored.pixel_array.reshape(-1, *mask.shape[1:])
    matched = set()
    for frame, groups in zip(frames, stored.PerFrameFunctionalGroupsSequence, strict=True):
        where = np.array(groups.PlanePositionSequence[0].ImagePositionPatient, float)
        (k,) = [k for k, p in enumerate(positions) if np.allclose(p, where, atol=1e-3)]
        np.testing.assert_array_equal(frame.astype(bool), mask[k], err_msg=f"SEG frame at {where}")
        matched.add(k)
    assert matched >= {k for k in range(mask.shape[0]) if mask[k].any()}


def test_every_request_serve_got_was_answered(monailabel: MonaiLabel) -> None:
    """Runs last: nothing MONAI Label asked of the site was missing (no 404)."""
    failed = [(m, p, s) for m, p, s in monailabel.access.requests() if s >= 400 and m != "POST"]
    assert not failed, failed
    assert "Downloading resource" not in monailabel.log_file.read_text(errors="replace")
