"""Deterministic synthetic CT data set generator.

The generator writes a small but realistic set of DICOM Part 10 files (CT
Image Storage slices, CT localizers and Enhanced CT multi-frame instances)
that exercise the interesting corners of a DICOMweb conversion: several
transfer syntaxes (native explicit/implicit VR, RLE and JPEG 2000
encapsulated), UTF-8 patient names, signed and unsigned pixel data, private
blocks with bulk data and elements with VR UN.

Everything is a pure function of the arguments: the same
:class:`SampleSpec` always produces byte-identical files. UIDs are derived
from ``SampleSpec.seed`` and the position of the object in the data set by
hashing (:func:`pydicom.uid.generate_uid` with fixed entropy sources), dates
and times are fixed, and all noise comes from seeded NumPy generators.

The phantom (:func:`phantom_volume`) is a crude axial chest: an elliptical
body with a subcutaneous fat layer, two lungs, a heart, a descending aorta, a
sternum and a spine made of vertebral bodies (cortical shell, cancellous
core) separated by intervertebral discs, with a spinal canal surrounded by a
posterior arch. :func:`spine_mask` labels the vertebral bodies.
"""

from __future__ import annotations

import datetime as _dt
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag
from pydicom.uid import (
    UID,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

__all__ = [
    "FRAME_COUNT",
    "IMPLEMENTATION_CLASS_UID",
    "IMPLEMENTATION_VERSION_NAME",
    "LOCALIZER_IMAGES",
    "PRIVATE_BULK_LENGTH",
    "PRIVATE_CREATOR",
    "SUPPORTED_TRANSFER_SYNTAXES",
    "UID_ROOT",
    "UN_PRIVATE_CREATOR",
    "SampleSpec",
    "generate_sample",
    "phantom_seed",
    "phantom_volume",
    "spine_mask",
    "vertebra_levels",
]

logger = logging.getLogger(__name__)

UID_ROOT: Final[str] = "1.2.826.0.1.3680043.10.1465."
"""Root of every UID written by the generator (hashed suffixes follow)."""

IMPLEMENTATION_CLASS_UID: Final[UID] = UID(UID_ROOT + "0.1")
"""(0002,0012) Implementation Class UID of the generated files."""

IMPLEMENTATION_VERSION_NAME: Final[str] = "STATIC_DCMWEB_1"
"""(0002,0013) Implementation Version Name of the generated files."""

FRAME_COUNT: Final[int] = 8
"""Number of frames of each Enhanced CT multi-frame instance."""

LOCALIZER_IMAGES: Final[int] = 2
"""Number of images (AP and lateral) of each localizer series."""

PRIVATE_CREATOR: Final[str] = "STATIC-DICOMWEB SAMPLE"
"""Private creator of the (0009,xx..) block: (0009,1001) LO, (0009,1002) OB, (0009,1003) UL."""

UN_PRIVATE_CREATOR: Final[str] = "STATIC-DICOMWEB UN"
"""Private creator of the (0011,xx..) block whose (0011,1001) element has VR UN."""

PRIVATE_BULK_LENGTH: Final[int] = 2000
"""Length in bytes of the private (0009,1002) OB value."""

SUPPORTED_TRANSFER_SYNTAXES: Final[frozenset[str]] = frozenset(
    {
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
        DeflatedExplicitVRLittleEndian,
        RLELossless,
        JPEG2000Lossless,
    }
)
"""Transfer syntaxes accepted in :attr:`SampleSpec.transfer_syntaxes` (all lossless)."""

# --- geometry and acquisition constants --------------------------------------
_FOV_MM: Final[float] = 350.0
_SLICE_THICKNESS_MM: Final[float] = 5.0
_TOP_SLICE_Z_MM: Final[float] = -40.0
_VERTEBRA_PERIOD: Final[int] = 4  # slices per vertebra + disc (last one is the disc)
_NOISE_SIGMA_HU: Final[float] = 12.0
_NOISE_CLIP_HU: Final[float] = 36.0
_HU_MIN: Final[int] = -1024
_HU_MAX: Final[int] = 3071
_UNSIGNED_OFFSET: Final[int] = 1024
_BASE_STUDY_DATE: Final[_dt.date] = _dt.date(2024, 1, 15)

_AXIAL_IOP: Final[tuple[float, ...]] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)

_PATIENTS: Final[tuple[tuple[str, str, str], ...]] = (
    # (PatientName, PatientBirthDate, PatientSex)
    ("Müller^Jürgen", "19650312", "M"),
    ("Yamada^Tarou=山田^太郎=やまだ^たろう", "19720708", "M"),
    ("Doe^Jane", "19801124", "F"),
    ("Smith^John^A", "19590203", "M"),
    ("Øvergård^Åse", "19911030", "F"),
    ("García Lorca^José", "19480605", "M"),
)


@dataclass(frozen=True)
class SampleSpec:
    r"""Shape of the synthetic CT data set written by :func:`generate_sample`.

    Parameters
    ----------
    patients : int
        Number of patients (>= 1).
    studies_per_patient : int
        Number of CT studies per patient (>= 1).
    slices : int
        Number of slices of each volumetric (axial) series (>= 1).
    rows : int
        Rows of every image (>= 16).
    columns : int
        Columns of every image (>= 16).
    transfer_syntaxes : tuple of str
        Transfer syntax UIDs (see :data:`SUPPORTED_TRANSFER_SYNTAXES`). The
        single-frame series of the data set are numbered ``i = 0, 1, ...`` in
        the order patient, study, SeriesNumber (localizer first, then the
        STANDARD axial series, then the BONE axial series) and series ``i``
        is written with ``transfer_syntaxes[i % len(transfer_syntaxes)]``.
        The Enhanced CT multi-frame series are not counted: the first is
        always Explicit VR Little Endian, the second (JPEG 2000 Lossless with
        a Basic Offset Table) is only written when ``JPEG2000Lossless`` is
        requested.
    multiframe : bool
        Add the Enhanced CT multi-frame series (``FRAME_COUNT`` frames each)
        to the first study of the data set.
    localizer : bool
        Add a localizer series (AP and lateral projection) to every study.
    seed : int
        Seed (>= 0) of the UIDs and of the phantom noise/anatomy variation.

    Notes
    -----
    Every study contains, in SeriesNumber order:

    1. localizer: ``LOCALIZER_IMAGES`` images, ImageType
       ``ORIGINAL\PRIMARY\LOCALIZER``, 12-bit unsigned (if ``localizer``);
    2. "Axial 5.0 mm STANDARD": ``slices`` images, 12-bit unsigned, with
       the private ``PRIVATE_CREATOR`` block (incl. ~2 kB OB bulk data) and
       an element with VR UN;
    3. "Axial 5.0 mm BONE": ``slices`` images, 16-bit signed
       (PixelRepresentation 1, RescaleIntercept 0);
    4. "Enhanced CT 8 frames" (first study only, if ``multiframe``);
    5. "Enhanced CT 8 frames JPEG 2000" (as 4., JPEG 2000 only).

    Study ``j`` (0-based over the data set, patient-major) shows
    ``phantom_volume(slices, rows, columns, phantom_seed(seed, j))``; slice
    ``k`` of an axial series is frame ``k`` of that volume (stored value
    ``HU + 1024`` when unsigned, ``HU`` when signed). The multi-frame
    instances show frames ``arange(8) * max(1, slices // 8)`` of
    ``phantom_volume(max(slices, 8), rows, columns, phantom_seed(seed, 0))``.

    """

    patients: int = 2
    studies_per_patient: int = 1
    slices: int = 24
    rows: int = 128
    columns: int = 128
    transfer_syntaxes: tuple[str, ...] = (
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
        RLELossless,
        JPEG2000Lossless,
    )
    multiframe: bool = True
    localizer: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        """Validate the field values.

        Raises
        ------
        ValueError
            If a count or size is out of range, the seed is negative or a
            transfer syntax is not supported.

        """
        for name, minimum in (
            ("patients", 1),
            ("studies_per_patient", 1),
            ("slices", 1),
            ("rows", 32),  # OpenJPEG's encoder fails below 32 (opj_start_compress)
            ("columns", 32),
            ("seed", 0),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"SampleSpec.{name} must be an int >= {minimum}, got {value!r}")
        if self.rows > 4096 or self.columns > 4096:
            raise ValueError("SampleSpec.rows and SampleSpec.columns must be <= 4096")
        if not self.transfer_syntaxes:
            raise ValueError("SampleSpec.transfer_syntaxes must not be empty")
        for ts in self.transfer_syntaxes:
            if ts not in SUPPORTED_TRANSFER_SYNTAXES:
                raise ValueError(
                    f"unsupported transfer syntax {ts!r}; supported: {sorted(SUPPORTED_TRANSFER_SYNTAXES)}"
                )


# ---------------------------------------------------------------------------
# Phantom
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Anatomy:
    """Seed dependent anatomy parameters (all lengths in mm)."""

    body_ax: float
    body_ay: float
    lung_scale: float
    lung_phase: float
    vertebra_phase: int


def _anatomy(seed: int) -> _Anatomy:
    rng = np.random.default_rng([seed, 0x5EED])
    u = rng.random(4)
    return _Anatomy(
        body_ax=150.0 * (0.96 + 0.08 * float(u[0])),
        body_ay=112.0 * (0.96 + 0.08 * float(u[1])),
        lung_scale=0.92 + 0.12 * float(u[2]),
        lung_phase=2.0 * np.pi * float(u[3]),
        vertebra_phase=int(rng.integers(0, _VERTEBRA_PERIOD)),
    )


def _ellipse(
    x: npt.NDArray[np.float64],
    y: npt.NDArray[np.float64],
    cx: float,
    cy: float,
    ax: float,
    ay: float,
) -> npt.NDArray[np.bool_]:
    return ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 <= 1.0


def _is_vertebra_slice(z: int, anatomy: _Anatomy) -> bool:
    return (z + anatomy.vertebra_phase) % _VERTEBRA_PERIOD != _VERTEBRA_PERIOD - 1


def _phantom(
    slices: int, rows: int, columns: int, seed: int
) -> tuple[npt.NDArray[np.int16], npt.NDArray[np.uint8]]:
    """Return (HU volume, vertebral body mask); slice ``z`` only depends on ``z``."""
    if slices < 1 or rows < 1 or columns < 1:
        raise ValueError("slices, rows and columns must be >= 1")
    if seed < 0:
        raise ValueError("seed must be >= 0")
    a = _anatomy(seed)
    dx = _FOV_MM / columns
    dy = _FOV_MM / rows
    xs = (np.arange(columns, dtype=np.float64) - (columns - 1) / 2.0) * dx
    ys = (np.arange(rows, dtype=np.float64) - (rows - 1) / 2.0) * dy
    y, x = np.meshgrid(ys, xs, indexing="ij")  # y: patient posterior, x: patient left

    body = _ellipse(x, y, 0.0, 0.0, a.body_ax, a.body_ay)
    inner = _ellipse(x, y, 0.0, 0.0, a.body_ax - 12.0, a.body_ay - 10.0)
    heart = _ellipse(x, y, 22.0, -38.0, 46.0, 36.0)
    aorta = _ellipse(x, y, 24.0, 30.0, 12.0, 12.0)
    sternum_outer = _ellipse(x, y, 0.0, -a.body_ay + 16.0, 14.0, 6.0)
    sternum_inner = _ellipse(x, y, 0.0, -a.body_ay + 16.0, 11.0, 3.5)
    vb_cy, vb_ax, vb_ay = 52.0, 22.0, 17.0
    vb_outer = _ellipse(x, y, 0.0, vb_cy, vb_ax, vb_ay)
    vb_inner = _ellipse(x, y, 0.0, vb_cy, vb_ax - 3.0, vb_ay - 3.0)
    canal_cy = vb_cy + vb_ay + 13.0
    canal = _ellipse(x, y, 0.0, canal_cy, 8.0, 8.0)
    arch = _ellipse(x, y, 0.0, canal_cy, 14.0, 14.0) & ~canal
    spinous = (np.abs(x) <= 3.5) & (y >= canal_cy) & (y <= canal_cy + 26.0) & body

    hu = np.empty((slices, rows, columns), dtype=np.int16)
    mask = np.zeros((slices, rows, columns), dtype=np.uint8)
    for z in range(slices):
        s = np.full((rows, columns), -1000.0)
        s[body] = -100.0  # subcutaneous fat
        s[inner] = 40.0  # soft tissue
        lung_ay = 70.0 * a.lung_scale * (1.0 + 0.08 * np.sin(0.35 * z + a.lung_phase))
        for side in (-1.0, 1.0):
            s[_ellipse(x, y, side * 66.0, -8.0, 44.0 * a.lung_scale, lung_ay)] = -850.0
        s[heart] = 45.0
        s[aorta] = 50.0
        s[sternum_outer] = 650.0
        s[sternum_inner] = 300.0
        if _is_vertebra_slice(z, a):
            s[vb_outer] = 700.0  # cortical shell
            s[vb_inner] = 250.0  # cancellous core
            s[arch] = 550.0
            s[spinous] = 550.0
            mask[z][vb_outer] = 1
        else:
            s[vb_outer] = 80.0  # intervertebral disc
            s[arch] = 40.0  # ligaments
        s[canal] = 15.0  # CSF
        noise_rng = np.random.default_rng([seed, 1, z])
        noise = np.clip(
            noise_rng.normal(0.0, _NOISE_SIGMA_HU, size=(rows, columns)),
            -_NOISE_CLIP_HU,
            _NOISE_CLIP_HU,
        )
        hu[z] = np.clip(np.rint(s + noise), _HU_MIN, _HU_MAX).astype(np.int16)
    return hu, mask


def phantom_volume(slices: int, rows: int, columns: int, seed: int = 0) -> npt.NDArray[np.int16]:
    """Return a synthetic axial chest CT volume in Hounsfield units.

    The field of view is 350 mm square (pixel spacing ``350 / columns`` by
    ``350 / rows`` mm); slices are 5 mm apart, slice 0 being the most
    superior. Slice ``z`` depends only on ``z``, the image size and the seed,
    so ``phantom_volume(n, ...)`` equals the first ``n`` slices of
    ``phantom_volume(m, ...)`` for ``m >= n``.

    Parameters
    ----------
    slices : int
        Number of axial slices (z).
    rows : int
        Image rows (y, patient anterior to posterior).
    columns : int
        Image columns (x, patient right to left).
    seed : int, optional
        Non-negative seed of the noise and of small anatomical variations.

    Returns
    -------
    numpy.ndarray
        ``int16`` array of shape ``(slices, rows, columns)`` with values in
        ``[-1024, 3071]``: air -1000 outside an elliptical body, fat -100,
        soft tissue ~40 HU, lungs ~-850 HU, heart/aorta ~45-50 HU, sternum,
        and a spine posterior in the body: one vertebral body (cortical shell
        ~700 HU, cancellous core ~250 HU, posterior arch ~550 HU) per 3
        slices, separated by one disc slice (~80 HU), around a spinal canal
        (~15 HU). Gaussian noise (sigma 12 HU, clipped to +-36 HU) is added.

    Raises
    ------
    ValueError
        If a size is < 1 or the seed is negative.

    """
    return _phantom(slices, rows, columns, seed)[0]


def spine_mask(slices: int, rows: int, columns: int, seed: int = 0) -> npt.NDArray[np.uint8]:
    """Return the vertebral body labels matching :func:`phantom_volume`.

    Parameters
    ----------
    slices : int
        Number of axial slices (z).
    rows : int
        Image rows (y).
    columns : int
        Image columns (x).
    seed : int, optional
        Seed, as given to :func:`phantom_volume`.

    Returns
    -------
    numpy.ndarray
        ``uint8`` array of shape ``(slices, rows, columns)``: 1 inside the
        vertebral bodies (cortical shell and cancellous core), 0 elsewhere
        (discs, posterior arches and all other tissue are 0). Every labelled
        voxel has more than 150 HU in the phantom.

    Raises
    ------
    ValueError
        If a size is < 1 or the seed is negative.

    """
    return _phantom(slices, rows, columns, seed)[1]


def vertebra_levels(
    slices: int, rows: int, columns: int, seed: int = 0, top_level: str = "T1"
) -> npt.NDArray[np.uint8]:
    """Return :func:`spine_mask` with each vertebral body labelled by its level.

    A vertebra is a run of consecutive vertebra slices between two disc slices (3 slices,
    except a partial one at the top of the volume, where the first run may be cut by the
    seed's vertebra phase). The first vertebra from slice 0 (the most superior) is
    ``top_level``, the next one the level below it, and so on; values are those of MONAI
    Label's ``localization_spine`` model (C1 = 1 .. C7 = 7, T1 = 8 .. T12 = 19,
    L1 = 20 .. L5 = 24, see :mod:`static_dicomweb.spine.labels`). Levels are clipped at L5:
    a volume long enough to reach below L5 labels every further body 24, so the non-zero
    voxels are exactly those of :func:`spine_mask`.

    Parameters
    ----------
    slices, rows, columns, seed : int
        As for :func:`spine_mask`.
    top_level : str, optional
        Level of the first vertebra (``"C1"`` .. ``"L5"``).

    Returns
    -------
    numpy.ndarray
        ``uint8`` array of shape ``(slices, rows, columns)``: 0 outside the vertebral bodies,
        the level's value inside.

    Raises
    ------
    ValueError
        If a size is < 1, the seed is negative or ``top_level`` is not a level.

    """
    from static_dicomweb.spine.labels import LEVELS

    if top_level not in LEVELS:
        raise ValueError(f"top_level must be one of {', '.join(LEVELS)}, got {top_level!r}")
    mask = spine_mask(slices, rows, columns, seed)
    phase = _anatomy(seed).vertebra_phase
    first_group = 0 if _is_vertebra_slice(0, _anatomy(seed)) else 1
    top = LEVELS.index(top_level) + 1
    groups = (np.arange(slices) + phase) // _VERTEBRA_PERIOD
    values = np.minimum(top + groups - first_group, len(LEVELS)).astype(np.uint8)
    return (mask * values[:, None, None]).astype(np.uint8)


def phantom_seed(seed: int, study_index: int) -> int:
    """Return the phantom seed used for one study of the data set.

    Parameters
    ----------
    seed : int
        :attr:`SampleSpec.seed`.
    study_index : int
        0-based index of the study over the whole data set, patient-major
        (``patient_index * studies_per_patient + study_in_patient``).

    Returns
    -------
    int
        The ``seed`` argument given to :func:`phantom_volume` for that study;
        it is also stored in the private element (0009,1003) UL.

    """
    return seed * 1009 + study_index


# ---------------------------------------------------------------------------
# Data set construction
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Patient:
    index: int
    patient_id: str
    name: str
    birth_date: str
    sex: str


@dataclass(frozen=True)
class _Study:
    patient: _Patient
    index: int  # over the data set
    uid: UID
    frame_of_reference_uid: UID
    date: str
    time: str
    accession: str
    study_id: str
    phantom_seed: int


@dataclass(frozen=True)
class _Series:
    study: _Study
    key: str
    uid: UID
    number: int
    description: str
    transfer_syntax: UID
    signed: bool
    kernel: str
    extras: bool  # private block + UN element


def _uid(seed: int, *parts: object) -> UID:
    source = "|".join(["static-dicomweb-sample", f"seed={seed}", *(str(p) for p in parts)])
    return generate_uid(prefix=UID_ROOT, entropy_srcs=[source])


def _ds(value: float) -> str:
    """Format a decimal string value (at most 16 characters)."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _patient(spec: SampleSpec, index: int) -> _Patient:
    name, birth, sex = _PATIENTS[index % len(_PATIENTS)]
    if index >= len(_PATIENTS):
        name = f"Sample^Patient{index + 1:03d}"
    return _Patient(
        index=index,
        patient_id=f"SDW{spec.seed}-P{index + 1:03d}",
        name=name,
        birth_date=birth,
        sex=sex,
    )


def _study(spec: SampleSpec, patient: _Patient, index: int) -> _Study:
    date = _BASE_STUDY_DATE + _dt.timedelta(days=7 * index + patient.index)
    return _Study(
        patient=patient,
        index=index,
        uid=_uid(spec.seed, "study", index),
        frame_of_reference_uid=_uid(spec.seed, "for", index),
        date=date.strftime("%Y%m%d"),
        time=f"{8 + index % 10:02d}{(7 * index) % 60:02d}00",
        accession=f"A{spec.seed % 100000:05d}{index + 1:05d}",
        study_id=str(index + 1),
        phantom_seed=phantom_seed(spec.seed, index),
    )


def _age(birth_date: str, study_date: str) -> str:
    b = _dt.datetime.strptime(birth_date, "%Y%m%d").date()
    s = _dt.datetime.strptime(study_date, "%Y%m%d").date()
    years = s.year - b.year - ((s.month, s.day) < (b.month, b.day))
    return f"{years:03d}Y"


def _base_dataset(series: _Series, sop_class: UID, sop_instance: UID) -> Dataset:
    """Patient, study, series, equipment and SOP common attributes."""
    study = series.study
    patient = study.patient
    ds = Dataset()
    if not patient.name.isascii():
        ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    ds.StudyDate = study.date
    ds.SeriesDate = study.date
    ds.AcquisitionDate = study.date
    ds.ContentDate = study.date
    ds.StudyTime = study.time
    ds.SeriesTime = study.time
    ds.AcquisitionTime = study.time
    ds.ContentTime = study.time
    ds.AccessionNumber = study.accession
    ds.Modality = "CT"
    ds.Manufacturer = "STATIC-DICOMWEB"
    ds.InstitutionName = "Static DICOMweb Test Hospital"
    ds.ReferringPhysicianName = "Referrer^Anna^^Dr."
    ds.StationName = "SDW-CT01"
    ds.StudyDescription = "CT CHEST (synthetic phantom)"
    ds.SeriesDescription = series.description
    ds.ManufacturerModelName = "Synthetic Phantom CT"
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.PatientAge = _age(patient.birth_date, study.date)
    ds.BodyPartExamined = "CHEST"
    ds.DeviceSerialNumber = "SDW-0001"
    ds.SoftwareVersions = "1.0"
    ds.ProtocolName = "CHEST ROUTINE"
    ds.PatientPosition = "HFS"
    ds.KVP = "120"
    ds.DataCollectionDiameter = "500"
    ds.ReconstructionDiameter = _ds(_FOV_MM)
    ds.GantryDetectorTilt = "0"
    ds.TableHeight = "150"
    ds.RotationDirection = "CW"
    ds.ExposureTime = "500"
    ds.XRayTubeCurrent = 200
    ds.Exposure = 100
    ds.FilterType = "BODY FILTER"
    ds.ConvolutionKernel = series.kernel
    ds.StudyInstanceUID = study.uid
    ds.SeriesInstanceUID = series.uid
    ds.StudyID = study.study_id
    ds.SeriesNumber = series.number
    ds.AcquisitionNumber = 1
    ds.FrameOfReferenceUID = study.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    if series.signed:
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
    else:
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    return ds


def _rescale(ds: Dataset, signed: bool) -> None:
    ds.RescaleIntercept = "0" if signed else str(-_UNSIGNED_OFFSET)
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"


def _windows(ds: Dataset, bone: bool) -> None:
    if bone:
        ds.WindowCenter = ["500", "40"]
        ds.WindowWidth = ["2000", "400"]
        ds.WindowCenterWidthExplanation = ["BONE", "SOFT TISSUE"]
    else:
        ds.WindowCenter = ["40", "-600"]
        ds.WindowWidth = ["400", "1500"]
        ds.WindowCenterWidthExplanation = ["SOFT TISSUE", "LUNG"]


def _stored(hu: npt.NDArray[np.int16], signed: bool) -> npt.NDArray[np.int16] | npt.NDArray[np.uint16]:
    if signed:
        return hu.astype(np.int16)
    return np.clip(hu.astype(np.int32) + _UNSIGNED_OFFSET, 0, 4095).astype(np.uint16)


def _add_extras(ds: Dataset, series: _Series, instance: int) -> None:
    """Add the private block with OB bulk data and the VR UN element."""
    block = ds.private_block(0x0009, PRIVATE_CREATOR, create=True)
    block.add_new(0x01, "LO", f"synthetic phantom {series.key} #{instance}")
    rng = np.random.default_rng([series.study.phantom_seed, series.number, instance, 0xB0B])
    bulk = rng.integers(0, 256, size=PRIVATE_BULK_LENGTH, dtype=np.uint8).tobytes()
    block.add_new(0x02, "OB", bulk)
    block.add_new(0x03, "UL", series.study.phantom_seed)
    ds.add(DataElement(Tag(0x0011, 0x0010), "LO", UN_PRIVATE_CREATOR))
    payload = f"UN payload {series.key} {instance}".encode("ascii")
    if len(payload) % 2:
        payload += b"\x00"
    ds.add(DataElement(Tag(0x0011, 0x1001), "UN", payload))


def _set_pixels(
    ds: Dataset,
    stored: npt.NDArray[np.int16] | npt.NDArray[np.uint16],
    transfer_syntax: UID,
) -> None:
    """Set native or encapsulated Pixel Data and the transfer syntax."""
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    ds.file_meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    little = stored.astype(stored.dtype.newbyteorder("<"), copy=False)
    if transfer_syntax == JPEG2000Lossless:
        ds.compress(transfer_syntax, little, encoding_plugin="pylibjpeg", generate_instance_uid=False)
    elif transfer_syntax == RLELossless:
        # pydicom's own encoder: byte-identical output whatever else is installed
        ds.compress(transfer_syntax, little, encoding_plugin="pydicom", generate_instance_uid=False)
    else:
        ds.add(DataElement(Tag(0x7FE0, 0x0010), "OW", little.tobytes()))
    ds.file_meta.TransferSyntaxUID = transfer_syntax


def _write(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    dcmwrite(path, ds, enforce_file_format=True)
    return path


def _instance_path(out: Path, series: _Series, number: int) -> Path:
    study = series.study
    return out / study.patient.patient_id / study.uid / series.uid / f"{number:04d}.dcm"


def _position(z_index: int, rows: int, columns: int) -> tuple[list[str], float]:
    dx = _FOV_MM / columns
    dy = _FOV_MM / rows
    z = _TOP_SLICE_Z_MM - _SLICE_THICKNESS_MM * z_index
    ipp = [_ds(-(columns - 1) / 2.0 * dx), _ds(-(rows - 1) / 2.0 * dy), _ds(z)]
    return ipp, z


def _write_axial(out: Path, spec: SampleSpec, series: _Series, hu: npt.NDArray[np.int16]) -> list[Path]:
    paths: list[Path] = []
    stored = _stored(hu, series.signed)
    for k in range(spec.slices):
        number = k + 1
        ds = _base_dataset(
            series, CTImageStorage, _uid(spec.seed, "sop", series.study.index, series.key, number)
        )
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceNumber = number
        ipp, z = _position(k, spec.rows, spec.columns)
        ds.ImagePositionPatient = ipp
        ds.ImageOrientationPatient = [_ds(v) for v in _AXIAL_IOP]
        ds.SliceThickness = _ds(_SLICE_THICKNESS_MM)
        ds.SliceLocation = _ds(z)
        ds.Rows = spec.rows
        ds.Columns = spec.columns
        ds.PixelSpacing = [_ds(_FOV_MM / spec.rows), _ds(_FOV_MM / spec.columns)]
        _rescale(ds, series.signed)
        _windows(ds, bone=series.kernel == "BONE")
        if series.extras:
            _add_extras(ds, series, number)
        _set_pixels(ds, stored[k], series.transfer_syntax)
        paths.append(_write(ds, _instance_path(out, series, number)))
    return paths


def _localizer_images(hu: npt.NDArray[np.int16], rows: int, columns: int) -> list[npt.NDArray[np.int16]]:
    """Return the AP and lateral projection images (pseudo-HU) of a volume."""
    attenuation = (hu.astype(np.float64) + 1000.0) / 1000.0
    ap = attenuation.mean(axis=1)  # (z, x)
    lat = attenuation.mean(axis=2)  # (z, y)
    z_idx = (np.arange(rows) * hu.shape[0]) // rows
    images: list[npt.NDArray[np.int16]] = []
    for proj in (ap, lat):
        c_idx = (np.arange(columns) * proj.shape[1]) // columns
        img = proj[np.ix_(z_idx, c_idx)]
        pseudo = np.clip(np.rint(-1000.0 + 2500.0 * img), _HU_MIN, _HU_MAX)
        images.append(pseudo.astype(np.int16))
    return images


def _write_localizer(out: Path, spec: SampleSpec, series: _Series, hu: npt.NDArray[np.int16]) -> list[Path]:
    paths: list[Path] = []
    images = _localizer_images(hu, spec.rows, spec.columns)
    row_spacing = spec.slices * _SLICE_THICKNESS_MM / spec.rows
    top = _TOP_SLICE_Z_MM + _SLICE_THICKNESS_MM / 2.0 - row_spacing / 2.0
    geometry = (
        # (IOP, IPP, column spacing, view)
        (
            (1.0, 0.0, 0.0, 0.0, 0.0, -1.0),
            (-(spec.columns - 1) / 2.0 * _FOV_MM / spec.columns, 0.0, top),
            _FOV_MM / spec.columns,
            "AP",
        ),
        (
            (0.0, 1.0, 0.0, 0.0, 0.0, -1.0),
            (0.0, -(spec.columns - 1) / 2.0 * _FOV_MM / spec.columns, top),
            _FOV_MM / spec.columns,
            "LATERAL",
        ),
    )
    for k, (image, (iop, ipp, col_spacing, view)) in enumerate(zip(images, geometry, strict=True)):
        number = k + 1
        ds = _base_dataset(
            series, CTImageStorage, _uid(spec.seed, "sop", series.study.index, series.key, number)
        )
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        ds.ImageComments = f"{view} localizer"
        ds.InstanceNumber = number
        ds.ImagePositionPatient = [_ds(v) for v in ipp]
        ds.ImageOrientationPatient = [_ds(v) for v in iop]
        ds.SliceThickness = "1"
        ds.SliceLocation = "0"
        ds.Rows = spec.rows
        ds.Columns = spec.columns
        ds.PixelSpacing = [_ds(row_spacing), _ds(col_spacing)]
        _rescale(ds, series.signed)
        ds.WindowCenter = ["500", "40"]
        ds.WindowWidth = ["3000", "400"]
        ds.WindowCenterWidthExplanation = ["LOCALIZER", "SOFT TISSUE"]
        _set_pixels(ds, _stored(image, series.signed), series.transfer_syntax)
        paths.append(_write(ds, _instance_path(out, series, number)))
    return paths


def _multiframe_frames(spec: SampleSpec, seed: int) -> tuple[npt.NDArray[np.int16], list[int]]:
    step = max(1, spec.slices // FRAME_COUNT)
    indices = [k * step for k in range(FRAME_COUNT)]
    hu = phantom_volume(max(spec.slices, FRAME_COUNT), spec.rows, spec.columns, seed)
    return hu[indices], indices


def _item(**elements: object) -> Dataset:
    item = Dataset()
    for keyword, value in elements.items():
        setattr(item, keyword, value)
    return item


def _write_enhanced(out: Path, spec: SampleSpec, series: _Series) -> list[Path]:
    study = series.study
    frames, indices = _multiframe_frames(spec, study.phantom_seed)
    step = indices[1] - indices[0] if len(indices) > 1 else 1
    number = 1
    ds = _base_dataset(
        series, EnhancedCTImageStorage, _uid(spec.seed, "sop", study.index, series.key, number)
    )
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.InstanceNumber = number
    ds.ContentQualification = "RESEARCH"
    ds.AcquisitionDateTime = study.date + study.time
    ds.PresentationLUTShape = "IDENTITY"
    ds.VolumetricProperties = "VOLUME"
    ds.VolumeBasedCalculationTechnique = "NONE"
    ds.NumberOfFrames = FRAME_COUNT
    ds.Rows = spec.rows
    ds.Columns = spec.columns
    dim_uid = _uid(spec.seed, "dimension-organization", study.index, series.key)
    ds.DimensionOrganizationType = "3D"
    ds.DimensionOrganizationSequence = DicomSequence([_item(DimensionOrganizationUID=dim_uid)])
    ds.DimensionIndexSequence = DicomSequence(
        [
            _item(
                DimensionOrganizationUID=dim_uid,
                DimensionIndexPointer=Tag(0x0020, 0x9056),  # StackID
                FunctionalGroupPointer=Tag(0x0020, 0x9111),  # FrameContentSequence
                DimensionDescriptionLabel="Stack ID",
            ),
            _item(
                DimensionOrganizationUID=dim_uid,
                DimensionIndexPointer=Tag(0x0020, 0x9057),  # InStackPositionNumber
                FunctionalGroupPointer=Tag(0x0020, 0x9111),
                DimensionDescriptionLabel="In-Stack Position Number",
            ),
        ]
    )
    shared = _item(
        PixelMeasuresSequence=DicomSequence(
            [
                _item(
                    PixelSpacing=[_ds(_FOV_MM / spec.rows), _ds(_FOV_MM / spec.columns)],
                    SliceThickness=_ds(_SLICE_THICKNESS_MM),
                    SpacingBetweenSlices=_ds(_SLICE_THICKNESS_MM * step),
                )
            ]
        ),
        PlaneOrientationSequence=DicomSequence([_item(ImageOrientationPatient=[_ds(v) for v in _AXIAL_IOP])]),
        PixelValueTransformationSequence=DicomSequence(
            [
                _item(
                    RescaleIntercept="0" if series.signed else str(-_UNSIGNED_OFFSET),
                    RescaleSlope="1",
                    RescaleType="HU",
                )
            ]
        ),
        FrameVOILUTSequence=DicomSequence(
            [
                _item(
                    WindowCenter=["40", "-600"],
                    WindowWidth=["400", "1500"],
                    WindowCenterWidthExplanation=["SOFT TISSUE", "LUNG"],
                )
            ]
        ),
        CTImageFrameTypeSequence=DicomSequence(
            [
                _item(
                    FrameType=["ORIGINAL", "PRIMARY", "AXIAL", "NONE"],
                    PixelPresentation="MONOCHROME",
                    VolumetricProperties="VOLUME",
                    VolumeBasedCalculationTechnique="NONE",
                )
            ]
        ),
    )
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    per_frame: list[Dataset] = []
    for k, z_index in enumerate(indices):
        ipp, _ = _position(z_index, spec.rows, spec.columns)
        per_frame.append(
            _item(
                FrameContentSequence=DicomSequence(
                    [
                        _item(
                            FrameAcquisitionNumber=1,
                            StackID="1",
                            InStackPositionNumber=k + 1,
                            DimensionIndexValues=[1, k + 1],
                        )
                    ]
                ),
                PlanePositionSequence=DicomSequence([_item(ImagePositionPatient=ipp)]),
            )
        )
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    if series.extras:
        _add_extras(ds, series, number)
    _set_pixels(ds, _stored(frames, series.signed), series.transfer_syntax)
    return [_write(ds, _instance_path(out, series, number))]


def _plan(spec: SampleSpec) -> list[_Series]:
    """Return every series of the data set in generation order."""
    tss = [UID(ts) for ts in spec.transfer_syntaxes]
    series: list[_Series] = []
    counter = 0

    def next_ts() -> UID:
        nonlocal counter
        ts = tss[counter % len(tss)]
        counter += 1
        return ts

    for p in range(spec.patients):
        patient = _patient(spec, p)
        for s in range(spec.studies_per_patient):
            study = _study(spec, patient, p * spec.studies_per_patient + s)

            def make(
                key: str,
                number: int,
                desc: str,
                ts: UID,
                signed: bool,
                kernel: str,
                extras: bool,
                study: _Study = study,
            ) -> _Series:
                return _Series(
                    study=study,
                    key=key,
                    uid=_uid(spec.seed, "series", study.index, key),
                    number=number,
                    description=desc,
                    transfer_syntax=ts,
                    signed=signed,
                    kernel=kernel,
                    extras=extras,
                )

            if spec.localizer:
                series.append(make("localizer", 1, "Topogram AP/LAT", next_ts(), False, "STANDARD", False))
            series.append(make("axial", 2, "Axial 5.0 mm STANDARD", next_ts(), False, "STANDARD", True))
            series.append(make("axial-bone", 3, "Axial 5.0 mm BONE (signed)", next_ts(), True, "BONE", False))
            if spec.multiframe and study.index == 0:
                series.append(
                    make(
                        "enhanced", 4, "Enhanced CT 8 frames", ExplicitVRLittleEndian, False, "STANDARD", True
                    )
                )
                if JPEG2000Lossless in tss:
                    series.append(
                        make(
                            "enhanced-j2k",
                            5,
                            "Enhanced CT 8 frames JPEG 2000",
                            JPEG2000Lossless,
                            False,
                            "STANDARD",
                            False,
                        )
                    )
    return series


def generate_sample(out: Path, spec: SampleSpec = SampleSpec()) -> list[Path]:
    """Write the synthetic CT data set as DICOM Part 10 files.

    Parameters
    ----------
    out : pathlib.Path
        Output directory (created if needed). Files are written to
        ``out/<PatientID>/<StudyInstanceUID>/<SeriesInstanceUID>/<NNNN>.dcm``
        where ``NNNN`` is the zero-padded InstanceNumber; existing files with
        the same names are overwritten, nothing else is removed.
    spec : SampleSpec, optional
        What to generate (see :class:`SampleSpec` for the layout).

    Returns
    -------
    list of pathlib.Path
        The paths written, sorted.

    """
    out = Path(out)
    plan = _plan(spec)
    volumes: dict[int, npt.NDArray[np.int16]] = {}
    paths: list[Path] = []
    for series in plan:
        study = series.study
        if study.index not in volumes:
            volumes = {study.index: phantom_volume(spec.slices, spec.rows, spec.columns, study.phantom_seed)}
        hu = volumes[study.index]
        if series.key == "localizer":
            written = _write_localizer(out, spec, series, hu)
        elif series.key.startswith("enhanced"):
            written = _write_enhanced(out, spec, series)
        else:
            written = _write_axial(out, spec, series, hu)
        logger.debug(
            "wrote %d instance(s) of series %s (%s, %s)",
            len(written),
            series.uid,
            series.description,
            series.transfer_syntax.name,
        )
        paths.extend(written)
    logger.info(
        "wrote %d instances in %d series of %d studies of %d patients to %s",
        len(paths),
        len(plan),
        spec.patients * spec.studies_per_patient,
        spec.patients,
        out,
    )
    return sorted(paths)
