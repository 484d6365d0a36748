"""CT series whose headers are as rich as NLST's as TCIA serves them, for the benchmarks.

Each slice is a 512×512 16-bit CT image (a body with lungs, a spine, a
table and noise; signed with GE's padding outside the field of view, or
unsigned 12-bit with an intercept of -1024) under a header of what an NLST
file downloaded from TCIA carries:

- the CT image modules (rescale, two window center/width pairs, position,
  spacing, KVP, kernel, exposure, collimation, pitch, ...);
- de-identification: PatientIdentityRemoved, DeidentificationMethod and its
  code sequence, LongitudinalTemporalInformationModified;
- TCIA's CTP private block (group 0x0013, creator ``CTP``: project, trial,
  site name and site id);
- GE's private blocks (``GEMS_IDEN_01``, ``GEMS_ACQU_01``, ``GEMS_PARM_01``,
  ``GEMS_HELIOS_01`` in groups 0x0009, 0x0019, 0x0043, 0x0045), 38 of
  their 80 elements (and 2 of CTP's) stored as UN, as an anonymiser that
  does not know them passes them on in Explicit VR;
- sequences (ReferencedImageSequence, SourceImageSequence,
  ProcedureCodeSequence, RequestAttributesSequence,
  CTDIPhantomTypeCodeSequence and a private sequence with a nested one),
  written with undefined lengths and items, as CTP (dcm4che) writes them
  (``--defined-lengths``: as pydicom writes them by default);
- UTF-8 text (SpecificCharacterSet ``ISO_IR 192``; names, institution and
  descriptions with non-ASCII letters).

One series (the last, by default) is Implicit VR Little Endian, the rest
Explicit VR Little Endian.  Everything follows from ``--seed``: the same
arguments write the same bytes.  Run::

    .venv/bin/python bench/realistic.py .bench/realistic --series 5 --slices 200
"""

from __future__ import annotations

import argparse
import struct
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.datadict import private_dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

#: Reconstructions an NLST exam carries, in turn: (SeriesDescription, ConvolutionKernel, signed).
_RECONS = (("1.25mm Lung", "LUNG", True), ("2.5mm STANDARD", "STANDARD", False),
           ("1.25mm BONE", "BONE", True), ("2.5mm Lung Thorax", "LUNG", False),
           ("1.25mm Standard", "STANDARD", True))
#: Series per study (NLST: a screening exam is reconstructed two or three ways).
_SERIES_PER_STUDY = 2

_STRUCT = {"SS": "h", "US": "H", "SL": "i", "UL": "I", "FL": "f", "FD": "d"}
_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "SH", "ST", "TM", "UC",
                       "UT"})


@dataclass(frozen=True)
class SeriesPlan:
    """One series to write: where, which reconstruction and which encoding."""

    index: int
    study: int
    slices: int
    size: int
    description: str
    kernel: str
    signed: bool
    implicit: bool


def _uid(seed: int, *parts: object) -> str:
    return str(generate_uid(entropy_srcs=[str(seed), *map(str, parts)]))


def _value_bytes(vr: str, value: object) -> bytes:
    """``value`` encoded as its VR would be: what a UN element of that VR holds."""
    if vr in _STRUCT:
        values = value if isinstance(value, list | tuple) else [value]
        return struct.pack(f"<{len(values)}{_STRUCT[vr]}", *values)
    if isinstance(value, bytes):  # OB
        return value + b"\0" * (len(value) % 2)
    text = "\\".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
    data = text.encode("utf-8")
    return data + (b"\0" if vr == "UI" else b" ") * (len(data) % 2)


def _private(ds: Dataset, group: int, creator: str,
             elements: list[tuple[int, object, bool]]) -> None:
    """Add a private block: (offset, value, stored as UN) each; VRs from pydicom's dictionary."""
    block = ds.private_block(group, creator, create=True)
    for offset, value, as_un in elements:
        tag = block.get_tag(offset)
        try:
            vr = private_dictionary_VR(tag, creator)
        except KeyError:  # CTP's block is not in pydicom's dictionary: its values are LO
            vr = "LO"
        if as_un:
            ds.add(DataElement(tag, "UN", _value_bytes(vr, value)))
        else:
            ds.add(DataElement(tag, vr, value))


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _undefined_lengths(ds: Dataset) -> None:
    """Every sequence and item of undefined length (delimited), as CTP (dcm4che) writes them."""
    for elem in ds:
        if elem.VR == "SQ":
            elem.is_undefined_length = True
            for item in elem.value:
                item.is_undefined_length_sequence_item = True
                _undefined_lengths(item)


class Phantom:
    """Slices of a chest: body, lungs, spine and table, with noise; values in HU."""

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.rng = np.random.default_rng(seed)
        centre = (size - 1) / 2
        axis = (np.arange(size, dtype=np.float32) - centre) / (size / 512)
        self.y, self.x = axis[:, None], axis[None, :]
        self.fov = self.x ** 2 + self.y ** 2 > (size / 2 / (size / 512)) ** 2

    def _ellipse(self, cx: float, cy: float, a: float, b: float) -> np.ndarray:
        return ((self.x - cx) / a) ** 2 + ((self.y - cy) / b) ** 2 <= 1.0

    def slice_hu(self, index: int, count: int) -> np.ndarray:
        """Slice ``index`` of ``count`` (head first): float32 HU, -2000 outside the field of view."""
        z = index / max(count - 1, 1)
        grow = 1.0 + 0.08 * np.sin(np.pi * z)
        image = np.full((self.size, self.size), -1000.0, dtype=np.float32)
        image[self._ellipse(0, 20, 175 * grow, 120 * grow)] = 40.0
        lung = 0.2 < z < 0.95
        if lung:
            reach = np.sin(np.pi * (z - 0.2) / 0.75)
            for side in (-1, 1):
                image[self._ellipse(side * 75, 5, 55 * reach + 5, 80 * reach + 5)] = -860.0
        image[self._ellipse(0, 105, 18, 16)] = 700.0  # vertebra
        image[self._ellipse(0, 105, 10, 9)] = 250.0  # its marrow
        image[(self.y > 150) & (self.y < 162) & (np.abs(self.x) < 210)] = -150.0  # table
        image += self.rng.standard_normal(image.shape, dtype=np.float32) * 14.0
        image[self.fov] = -2000.0
        return image


def _pixels(hu: np.ndarray, signed: bool) -> np.ndarray:
    stored: np.ndarray
    if signed:  # GE: stored = HU, padding -2000 outside the field of view
        stored = np.rint(hu).astype("<i2")
    else:  # 12 bits, intercept -1024; the padding outside the field of view is 0
        stored = np.clip(np.rint(hu + 1024), 0, 4095).astype("<u2")
    return stored


def _slice(plan: SeriesPlan, index: int, seed: int, hu: np.ndarray, *,
           undefined_lengths: bool = True) -> Dataset:
    """The data set of slice ``index`` (1-based InstanceNumber ``index + 1``) of ``plan``."""
    s, n = plan.index, plan.slices
    study_uid = _uid(seed, "study", plan.study)
    series_uid = _uid(seed, "series", s)
    sop_uid = _uid(seed, "instance", s, index)
    thickness = 1.25 if plan.description.startswith("1.25") else 2.5
    z = -40.0 - index * thickness
    study_date = f"1999{1 + plan.study % 12:02d}{10 + plan.study:02d}"
    patient = f"1{seed:05d}"

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.InstanceCreationDate = study_date
    ds.InstanceCreationTime = "101523"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = study_date
    ds.StudyTime = "101015"
    ds.SeriesTime = "101316"
    ds.AcquisitionTime = f"1013{16 + index * 5 // n:02d}.{index % 100:02d}0000"
    ds.ContentTime = "101523"
    ds.AccessionNumber = ""
    ds.Modality = "CT"
    ds.Manufacturer = "GE MEDICAL SYSTEMS"
    ds.InstitutionName = "Universitätsklinikum Zürich"
    ds.ReferringPhysicianName = ""
    ds.StationName = "CT01_OC0"
    ds.StudyDescription = "Thorax^LDCT Lunge (Früherkennung)"
    ds.ProcedureCodeSequence = Sequence([_code("CTCHEST", "GEHC", "CT Thorax ohne KM")])
    ds.SeriesDescription = plan.description
    ds.OperatorsName = "Søren^Ødegård"
    ds.ManufacturerModelName = "LightSpeed16"
    reference = Dataset()
    reference.ReferencedSOPClassUID = CTImageStorage
    reference.ReferencedSOPInstanceUID = _uid(seed, "localizer", plan.study)
    ds.ReferencedImageSequence = Sequence([reference])
    ds.PatientName = "Müller^Jürgen^José"
    ds.PatientID = patient
    ds.PatientBirthDate = ""
    ds.PatientSex = "M" if seed % 2 == 0 else "F"
    ds.PatientAge = "061Y"
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "CTP Default:  based on DICOM PS3.15 AnnexE. Details in 0012,0064"
    ds.DeidentificationMethodCodeSequence = Sequence([
        _code("113100", "DCM", "Basic Application Confidentiality Profile"),
        _code("113101", "DCM", "Clean Pixel Data Option"),
        _code("113105", "DCM", "Clean Descriptors Option"),
        _code("113107", "DCM", "Retain Longitudinal Temporal Information Modified Dates Option"),
        _code("113108", "DCM", "Retain Patient Characteristics Option"),
        _code("113109", "DCM", "Retain Device Identity Option"),
    ])
    ds.LongitudinalTemporalInformationModified = "MODIFIED"
    ds.ContrastBolusAgent = ""
    ds.BodyPartExamined = "CHEST"
    ds.ScanOptions = "HELICAL MODE"
    ds.SliceThickness = str(thickness)
    ds.KVP = "120"
    ds.SpacingBetweenSlices = str(thickness)
    ds.DataCollectionDiameter = "500.000000"
    ds.SoftwareVersions = "LightSpeedverrel"
    ds.ProtocolName = "LDCT Screening"
    ds.ReconstructionDiameter = "340.000000"
    ds.DistanceSourceToDetector = "949.075012"
    ds.DistanceSourceToPatient = "541.000000"
    ds.GantryDetectorTilt = "0.000000"
    ds.TableHeight = "156.000000"
    ds.RotationDirection = "CW"
    ds.ExposureTime = "500"
    ds.XRayTubeCurrent = "40"
    ds.Exposure = "2"
    ds.FilterType = "BODY FILTER"
    ds.GeneratorPower = "4800"
    ds.FocalSpots = "0.700000"
    ds.ConvolutionKernel = plan.kernel
    ds.PatientPosition = "FFS"
    ds.RevolutionTime = 0.5
    ds.SingleCollimationWidth = 1.25
    ds.TotalCollimationWidth = 20.0
    ds.TableSpeed = 27.5
    ds.TableFeedPerRotation = 27.5
    ds.SpiralPitchFactor = 1.375
    ds.CTDIvol = 3.12
    ds.CTDIPhantomTypeCodeSequence = Sequence([_code("113691", "DCM", "IEC Body Dosimetry Phantom")])
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = f"{plan.study + 1}"
    ds.SeriesNumber = str(plan.index + 2)
    ds.AcquisitionNumber = "1"
    ds.InstanceNumber = str(index + 1)
    ds.ImagePositionPatient = ["-169.669998", "-180.000000", f"{z:.6f}"]
    ds.ImageOrientationPatient = ["1.000000", "0.000000", "0.000000", "0.000000", "1.000000",
                                  "0.000000"]
    ds.FrameOfReferenceUID = _uid(seed, "frame", plan.study)
    ds.PositionReferenceIndicator = "SN"
    ds.SliceLocation = f"{z:.6f}"
    ds.ImagesInAcquisition = str(n)
    source = Dataset()
    source.ReferencedSOPClassUID = CTImageStorage
    source.ReferencedSOPInstanceUID = _uid(seed, "raw", s, index)
    source.PurposeOfReferenceCodeSequence = Sequence([
        _code("121320", "DCM", "Uncompressed predecessor")])
    ds.SourceImageSequence = Sequence([source])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = plan.size
    ds.PixelSpacing = ["0.664062", "0.664062"]
    ds.BitsAllocated = 16
    ds.BitsStored = 16 if plan.signed else 12
    ds.HighBit = 15 if plan.signed else 11
    ds.PixelRepresentation = 1 if plan.signed else 0
    ds.PixelPaddingValue = -2000 if plan.signed else 0
    ds.WindowCenter = ["-600", "40"]
    ds.WindowWidth = ["1500", "400"]
    ds.WindowCenterWidthExplanation = ["LUNG", "MEDIASTINUM"]
    ds.RescaleIntercept = "0" if plan.signed else "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.LossyImageCompression = "00"
    request = Dataset()
    request.RequestedProcedureID = f"RP{plan.study + 1:04d}"
    request.ScheduledProcedureStepID = f"SPS{plan.study + 1:04d}"
    request.ScheduledProcedureStepDescription = "Niedrigdosis-CT Thorax"
    ds.RequestAttributesSequence = Sequence([request])
    ds.PerformedProcedureStepStartDate = study_date
    ds.PerformedProcedureStepStartTime = "101015"
    ds.PerformedProcedureStepID = f"PPS{plan.study + 1:04d}"
    ds.IrradiationEventUID = _uid(seed, "event", s)

    # GE's blocks; the third value says whether an anonymiser passed the element on as UN
    _private(ds, 0x0009, "GEMS_IDEN_01", [
        (0x01, "CT_LIGHTSPEED", False), (0x02, "CT01", True), (0x04, "HiSpeed", True),
        (0x27, 944639415 + index, True), (0x30, "", False), (0x31, "", False),
        (0xE3, _uid(seed, "equipment"), True), (0xE6, "LightSpeedverrel", False),
        (0xE7, 3487234123, True), (0xE9, 944639415, True)])
    _private(ds, 0x0013, "CTP", [
        (0x10, "NLST", False), (0x11, "NLST", True), (0x12, "NLST-LSS", True),
        (0x13, f"{32 + seed % 8}", False)])
    _private(ds, 0x0019, "GEMS_ACQU_01", [
        (0x02, 912, True), (0x03, "48.0", False), (0x04, "1.0", False), (0x0F, "4.20", True),
        (0x11, 2, False), (0x13, 0, True), (0x18, "I", False), (0x1A, "S", False),
        (0x23, "27.5", False), (0x24, f"{2.5 + index * 0.01:.6f}", False), (0x25, 1, True),
        (0x26, 360, True), (0x27, "0.5", False), (0x2C, 984, True), (0x2E, "291.0", False),
        (0x2F, "1968.0", False), (0x39, 4, True), (0x42, 0, False), (0x43, 0, False),
        (0x47, 1, True), (0x52, 0, False), (0x5A, 10.3, True), (0x6A, 1, False),
        (0x6B, 888, True), (0x70, 0, False), (0xDA, 0, True), (0xDB, "0.0", False),
        (0xDE, "270.0", False)])
    _private(ds, 0x0043, "GEMS_PARM_01", [
        (0x10, 400, False), (0x11, 984, True), (0x12, [14, 1, 3], False),
        (0x16, [0, 0, 0, 0, 0], True), (0x18, ["0.0", "0.0", "0.0"], False),
        (0x1E, "0.0", False), (0x1F, 0, True), (0x21, 0, False), (0x25, [0, 0, 0, 0, 0, 0], True),
        (0x26, [0, 0, 0, 0, 0, 0], False), (0x27, "/1.375:1", False),
        (0x28, bytes(range(0x30, 0x80)), True), (0x2B, [4, 0, 0, 0], True),
        (0x31, ["-0.328125", "10.000000"], False), (0x40, [0.0, 0.0, 0.0, 0.0], True),
        (0x41, [0.0, 0.0, 0.0, 0.0], True), (0x42, [0, 0, 0, 0], False),
        (0x43, [0, 0, 0, 0], False), (0x44, [0, 0, 0, 0], True), (0x45, [0, 0, 0, 0], True),
        (0x46, [0, 0, 0, 0], False), (0x47, [0, 0, 0, 0], True), (0x64, ["NONE"], False),
        (0x6F, ["0", "0", "0"], True)])
    _private(ds, 0x0045, "GEMS_HELIOS_01", [
        (0x01, 16, False), (0x02, 1.25, True), (0x03, 14, False), (0x04, 1, True),
        (0x06, "INTO GANTRY", False), (0x07, 0.0, True), (0x08, 0, False), (0x09, 0, True),
        (0x0A, 0.0, False), (0x0B, 0.0, True), (0x0C, 0, False), (0x0D, 0, True),
        (0x0E, 0.0, False), (0x11, 0, True), (0x12, 0, False), (0x13, 0, True), (0x14, 0, False),
        (0x3B, "Kein Filter", True)])
    # a private sequence with a nested one (vendors keep protocol details in such sequences)
    inner = Dataset()
    inner.CodeValue = "RECON"
    inner.CodingSchemeDesignator = "99GEMS"
    inner.CodeMeaning = f"Rekonstruktion {plan.kernel}"
    outer = Dataset()
    outer.ReferencedSOPInstanceUID = _uid(seed, "protocol", plan.study)
    outer.TextValue = "Protokoll: Thorax LD"
    outer.private_block(0x0045, "GEMS_HELIOS_01", create=True)
    outer.add(DataElement(0x00451080, "SQ", Sequence([inner])))
    ds.add(DataElement(ds.private_block(0x0045, "GEMS_HELIOS_01").get_tag(0x80), "SQ",
                       Sequence([outer])))
    if undefined_lengths:
        _undefined_lengths(ds)
    ds.PixelData = _pixels(hu, plan.signed).tobytes()
    ds["PixelData"].VR = "OW"
    return ds


def plan_series(series: int, slices: int, size: int, implicit_series: int | None) -> list[SeriesPlan]:
    """The series to write: reconstructions in turn, two per study, one Implicit VR series."""
    which = None if implicit_series is None else implicit_series % series
    return [SeriesPlan(index=s, study=s // _SERIES_PER_STUDY, slices=slices, size=size,
                       description=_RECONS[s % len(_RECONS)][0], kernel=_RECONS[s % len(_RECONS)][1],
                       signed=_RECONS[s % len(_RECONS)][2], implicit=s == which)
            for s in range(series)]


def write_series(out: Path, plan: SeriesPlan, seed: int, *,
                 undefined_lengths: bool = True) -> Iterator[Path]:
    """Write ``plan``'s slices under ``out`` as TCIA names them; yields each path."""
    folder = out / f"1{seed:05d}" / f"study-{plan.study + 1}" / f"{plan.index + 2}-{plan.kernel}"
    folder.mkdir(parents=True, exist_ok=True)
    phantom = Phantom(plan.size, seed * 1000 + plan.index)
    syntax = ImplicitVRLittleEndian if plan.implicit else ExplicitVRLittleEndian
    for index in range(plan.slices):
        ds = _slice(plan, index, seed, phantom.slice_hu(index, plan.slices),
                    undefined_lengths=undefined_lengths)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = syntax
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        meta.ImplementationVersionName = "CTP"
        ds.file_meta = meta
        path = folder / f"1-{index + 1:03d}.dcm"
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        yield path


def write_realistic(out: Path, series: int = 5, slices: int = 200, size: int = 512, seed: int = 0,
                    implicit_series: int | None = -1, *, undefined_lengths: bool = True) -> list[Path]:
    """Write ``series`` series of ``slices`` slices under ``out``; returns the paths.

    Parameters
    ----------
    out
        The folder to write into (created; files already there are overwritten).
    series, slices, size
        How many series, slices per series, and the rows and columns of a slice.
    seed
        Everything written follows from it (UIDs, noise, the patient).
    implicit_series
        The index of the series written in Implicit VR Little Endian (negative counts
        from the end), or None for none.
    undefined_lengths
        Sequences and items of undefined length, as CTP writes them (else defined lengths,
        as pydicom writes them by default).
    """
    paths: list[Path] = []
    for plan in plan_series(series, slices, size, implicit_series):
        paths.extend(write_series(out, plan, seed, undefined_lengths=undefined_lengths))
    return paths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--series", type=int, default=5)
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--implicit-series", type=int, default=-1,
                        help="index of the Implicit VR series (default -1: the last)")
    parser.add_argument("--defined-lengths", action="store_true",
                        help="sequences and items of defined length (default: undefined, as CTP)")
    args = parser.parse_args()
    started = time.perf_counter()
    paths = write_realistic(args.out, args.series, args.slices, args.size, args.seed,
                            args.implicit_series, undefined_lengths=not args.defined_lengths)
    size = sum(p.stat().st_size for p in paths)
    print(f"{len(paths)} files, {size / 1e6:.1f} MB ({size / len(paths) / 1e3:.1f} kB each) in "
          f"{args.out} in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
