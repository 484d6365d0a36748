"""A CT series as a volume in Hounsfield units, read from a site or from Part 10 files.

From a site, each instance is read from its Part 10 retrieve object
(``studies/{S}/series/{SE}/instances/{I}``, the bytes exactly as converted); a site of the
``viewer`` profile has none, and the instance's metadata and frames are read instead.  Slices
are sorted along the slice normal (the cross product of the row and column directions of
(0020,0037) Image Orientation (Patient)), ascending, the way ITK, SimpleITK and MONAI Label
order a series: for an axial head-first supine CT the first slice is the most inferior.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_modality_lut

from static_dicomweb import keys, multipart
from static_dicomweb.errors import KeyNotFoundError, RejectedInstanceError
from static_dicomweb.reader import SYNTAXES, UNREADABLE
from static_dicomweb.store import Store
from static_dicomweb.thumbnail import decode_frame

log = logging.getLogger(__name__)

#: Slices closer than this along the normal (mm) are the same position.
POSITION_TOLERANCE_MM = 1e-3
#: Orientations and pixel spacings of one series agree to this.
GEOMETRY_TOLERANCE = 1e-4


class SeriesVolumeError(RejectedInstanceError):
    """A series that cannot be read as one volume (names the key or file and why)."""


class SeriesNotInSiteError(SeriesVolumeError):
    """A series of which the site holds no instance."""


@dataclass(frozen=True, eq=False)
class SeriesVolume:
    """One CT series as a volume.

    Attributes
    ----------
    study_uid, series_uid, frame_of_reference_uid
        The series' (0020,000D), (0020,000E) and (0020,0052).
    hu
        ``float32`` voxels ``(z, y, x)`` in the units of the modality LUT (Hounsfield units
        for CT: (0028,1052) Rescale Intercept and (0028,1053) Rescale Slope applied).
    spacing
        ``(z, y, x)`` in mm: the median distance between slices along the normal, then
        (0028,0030) Pixel Spacing (row spacing, column spacing).
    sop_instance_uids
        The SOP Instance UID of each slice, in volume order.
    positions
        ``(z, 3)`` (0020,0032) Image Position (Patient) of each slice, in volume order.
    orientation
        (0020,0037) Image Orientation (Patient): row direction, then column direction.
    headers
        Each slice's data set without (7FE0,0010) Pixel Data, in volume order (what a SEG
        that references the series is made from).

    """

    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    hu: npt.NDArray[np.float32]
    spacing: tuple[float, float, float]
    sop_instance_uids: tuple[str, ...]
    positions: npt.NDArray[np.float64]
    orientation: tuple[float, float, float, float, float, float]
    headers: tuple[Dataset, ...]

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(z, y, x)``."""
        z, y, x = self.hu.shape
        return int(z), int(y), int(x)

    @property
    def normal(self) -> npt.NDArray[np.float64]:
        """The unit slice normal (row direction × column direction)."""
        row = np.asarray(self.orientation[:3], dtype=np.float64)
        col = np.asarray(self.orientation[3:], dtype=np.float64)
        normal = np.cross(row, col)
        return np.asarray(normal / np.linalg.norm(normal), dtype=np.float64)

    def slice_index(self, sop_instance_uid: str) -> int | None:
        """The volume index of the slice with this SOP Instance UID, or None."""
        try:
            return self.sop_instance_uids.index(sop_instance_uid)
        except ValueError:
            return None


def read_series_volume(store: Store, study_uid: str, series_uid: str) -> SeriesVolume:
    """Read a CT series of a site as a volume.

    Parameters
    ----------
    store
        The site's store.
    study_uid, series_uid
        The series' Study and Series Instance UIDs.

    Returns
    -------
    SeriesVolume
        The series, sorted along the slice normal.

    Raises
    ------
    SeriesNotInSiteError
        If the site holds no instance of the series.
    SeriesVolumeError
        If an instance is multi-frame or lacks its
        image geometry, or the slices do not form one volume (orientations, sizes or pixel
        spacings differ, two slices share a position).

    """
    study = keys.validate_uid(study_uid, what="StudyInstanceUID")
    series = keys.validate_uid(series_uid, what="SeriesInstanceUID")
    prefix = f"studies/{study}/series/{series}"
    sops = store.children(f"{prefix}/instances/")
    if not sops:
        raise SeriesNotInSiteError(prefix, f"no instances of the series in {store.url}")
    slices = [_instance_from_store(store, study, series, sop) for sop in sops]
    return _assemble(slices, prefix)


def series_volume_from_files(paths: Iterable[str | Path]) -> SeriesVolume:
    """Read a CT series from its Part 10 files.

    Parameters
    ----------
    paths
        The files of one series (any order).

    Raises
    ------
    SeriesVolumeError
        As :func:`read_series_volume`, and when the files hold more than one series or a file
        cannot be read.

    """
    files = sorted(Path(p) for p in paths)
    if not files:
        raise SeriesVolumeError("<no files>", "no files given")
    slices = []
    for path in files:
        try:
            ds = dcmread(path)
            slices.append(_split_pixels(ds, str(path)))
        except (OSError, *UNREADABLE) as exc:
            raise SeriesVolumeError(str(path), f"could not be read: {type(exc).__name__}: "
                                               f"{exc}") from exc
    return _assemble(slices, str(files[0].parent))


def _instance_from_store(store: Store, study: str, series: str,
                         sop: str) -> tuple[Dataset, npt.NDArray[Any], str]:
    key = keys.instance(study, series, sop).key
    try:
        body = store.get(key)
    except KeyNotFoundError:
        return _instance_from_frames(store, study, series, sop)
    head, tail = multipart.p10_part_span(key)
    try:
        ds = dcmread(io.BytesIO(body[head:len(body) - tail]))
        return _split_pixels(ds, key)
    except UNREADABLE as exc:
        raise SeriesVolumeError(key, f"could not be read: {type(exc).__name__}: {exc}") from exc


def _instance_from_frames(store: Store, study: str, series: str,
                          sop: str) -> tuple[Dataset, npt.NDArray[Any], str]:
    """An instance of a site without Part 10 objects: its metadata and its one frame."""
    meta_key = keys.instance_metadata(study, series, sop).key
    try:
        meta = json.loads(gzip.decompress(store.get(meta_key)))[0]
    except KeyNotFoundError as exc:
        raise SeriesVolumeError(meta_key, "the instance has neither a Part 10 object nor "
                                          "metadata (incomplete conversion?)") from exc
    syntax = SYNTAXES.get(str(meta.get("00020010", {}).get("Value", [""])[0]))
    if syntax is None:
        raise SeriesVolumeError(meta_key, "the metadata names no supported transfer syntax")
    frames = int(meta.get("00280008", {}).get("Value", [1])[0] or 1)
    if frames != 1:
        raise SeriesVolumeError(meta_key, f"a multi-frame instance ({frames} frames); only "
                                          "single-frame slices are read as a volume")
    frame_key = keys.frame_key(study, series, sop, 1)
    try:
        body = store.get(frame_key)
    except KeyNotFoundError as exc:
        raise SeriesVolumeError(frame_key, "frame 1 is missing") from exc
    parts = multipart.split(body, f"multipart/related; boundary={keys.boundary_for(frame_key)}")
    pixels = decode_frame(meta, parts[0][1], syntax.frame_syntax, syntax.native)
    header = Dataset.from_json({tag: value for tag, value in meta.items()
                                if not tag.startswith(("0002", "7FE0"))},
                               bulk_data_uri_handler=lambda *_: b"")
    return header, pixels, meta_key


def _split_pixels(ds: Dataset, name: str) -> tuple[Dataset, npt.NDArray[Any], str]:
    if "PixelData" not in ds:
        raise SeriesVolumeError(name, "no (7FE0,0010) Pixel Data")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise SeriesVolumeError(name, f"a multi-frame instance ({frames} frames); only "
                                      "single-frame slices are read as a volume")
    pixels = np.asarray(ds.pixel_array)
    del ds.PixelData
    return ds, pixels, name


def _floats(ds: Dataset, keyword: str, count: int, name: str) -> npt.NDArray[np.float64]:
    value = ds.get(keyword)
    try:
        out = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise SeriesVolumeError(name, f"{keyword} is missing or not numbers: {value!r}") from exc
    if out.shape != (count,):
        raise SeriesVolumeError(name, f"{keyword} has {out.size} values, not {count}")
    return out


def _check_slice(ds: Dataset, name: str, series: str, size: tuple[int, int],
                 orientation: npt.NDArray[np.float64], spacing_yx: npt.NDArray[np.float64]) -> None:
    """That a slice belongs to the series and shares its size, orientation and pixel spacing."""
    if str(ds.get("SeriesInstanceUID", "")) != series:
        raise SeriesVolumeError(name, f"belongs to series {ds.get('SeriesInstanceUID')}, "
                                      f"not {series}")
    if (int(ds.get("Rows", 0)), int(ds.get("Columns", 0))) != size:
        raise SeriesVolumeError(name, f"is {ds.get('Rows')}x{ds.get('Columns')}, the "
                                      f"series {size[0]}x{size[1]}")
    if not np.allclose(_floats(ds, "ImageOrientationPatient", 6, name), orientation,
                       atol=GEOMETRY_TOLERANCE):
        raise SeriesVolumeError(name, "its ImageOrientationPatient differs from the other "
                                      "slices' (a localizer or a mixed series?)")
    if not np.allclose(_floats(ds, "PixelSpacing", 2, name), spacing_yx,
                       rtol=GEOMETRY_TOLERANCE):
        raise SeriesVolumeError(name, "its PixelSpacing differs from the other slices'")


def _slice_spacing(distances: Sequence[float], names: Sequence[str], first: Dataset,
                   where: str) -> float:
    """The spacing of sorted slices: the median step (two at one position are an error)."""
    steps = np.diff(np.asarray(distances))
    if steps.size and steps.min() < POSITION_TOLERANCE_MM:
        at = int(np.argmin(steps))
        raise SeriesVolumeError(names[at + 1], f"lies at the position of {names[at]} "
                                               "(two slices at one position)")
    if not steps.size:
        return float(first.get("SpacingBetweenSlices") or first.get("SliceThickness") or 1.0)
    dz = float(np.median(steps))
    if float(np.abs(steps - dz).max()) > 0.01 * dz:
        log.warning("%s: slice spacing varies from %.3f to %.3f mm; using the median %.3f mm",
                    where, steps.min(), steps.max(), dz)
    return dz


def _assemble(slices: Sequence[tuple[Dataset, npt.NDArray[Any], str]], where: str) -> SeriesVolume:
    first, _, first_name = slices[0]
    series = str(first.get("SeriesInstanceUID", ""))
    orientation = _floats(first, "ImageOrientationPatient", 6, first_name)
    spacing_yx = _floats(first, "PixelSpacing", 2, first_name)
    rows, cols = int(first.get("Rows", 0)), int(first.get("Columns", 0))
    normal = np.cross(orientation[:3], orientation[3:])
    if np.linalg.norm(normal) < 0.5:
        raise SeriesVolumeError(first_name, f"ImageOrientationPatient {orientation.tolist()} "
                                            "has parallel row and column directions")
    normal /= np.linalg.norm(normal)
    entries = []
    for ds, pixels, name in slices:
        _check_slice(ds, name, series, (rows, cols), orientation, spacing_yx)
        position = _floats(ds, "ImagePositionPatient", 3, name)
        entries.append((float(position @ normal), position, ds, pixels, name))
    entries.sort(key=lambda e: e[0])
    dz = _slice_spacing([e[0] for e in entries], [e[4] for e in entries], first, where)
    hu = np.empty((len(entries), rows, cols), dtype=np.float32)
    for z, (_, _, ds, pixels, _) in enumerate(entries):
        hu[z] = apply_modality_lut(pixels, ds)
    log.info("%s: %d slices of %dx%d, spacing %.3f x %.3f x %.3f mm", where, len(entries), rows,
             cols, dz, spacing_yx[0], spacing_yx[1])
    o = [float(v) for v in orientation]
    return SeriesVolume(
        study_uid=str(first.get("StudyInstanceUID", "")),
        series_uid=series,
        frame_of_reference_uid=str(first.get("FrameOfReferenceUID", "")),
        hu=hu,
        spacing=(dz, float(spacing_yx[0]), float(spacing_yx[1])),
        sop_instance_uids=tuple(str(e[2].SOPInstanceUID) for e in entries),
        positions=np.stack([e[1] for e in entries]),
        orientation=(o[0], o[1], o[2], o[3], o[4], o[5]),
        headers=tuple(e[2] for e in entries),
    )
