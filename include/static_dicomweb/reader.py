"""Reading Part 10 files: what is in them, which transfer syntax, which frames.

Reading is tolerant but explicit: a dataset without the Part 10 header is read
and re-encoded as Part 10 with a warning; anything that cannot be served
faithfully is rejected with the file's name and the reason.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import stat
import struct
from collections.abc import Container
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import cast

import numpy as np
from pydicom import config, dcmread
from pydicom.charset import convert_encodings, default_encoding
from pydicom.datadict import _dictionary_vr_fast
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element, empty_value_for_VR
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.encaps import generate_frames
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_sequence
from pydicom.filewriter import dcmwrite
from pydicom.pixels.decoders.base import get_decoder
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import UID
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, VR
from pydicom.values import convert_string

from .errors import InvalidUIDError, RejectedInstanceError
from .keys import validate_uid

log = logging.getLogger(__name__)

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"
EXPLICIT_BE = "1.2.840.10008.1.2.2"


@dataclass(frozen=True)
class SyntaxInfo:
    """How frames of one transfer syntax are served (PS3.18 Table 8.7.3-2)."""

    uid: str
    name: str
    media_type: str
    native: bool
    #: The pylibjpeg plugin (or other package) that decodes it, for messages.
    decoder: str

    @property
    def frame_syntax(self) -> str:
        """The transfer syntax a frame object declares (native frames are little endian)."""
        return EXPLICIT_LE if self.native else self.uid


_NATIVE = "application/octet-stream"
SYNTAXES: dict[str, SyntaxInfo] = {s.uid: s for s in (
    SyntaxInfo(IMPLICIT_LE, "Implicit VR Little Endian", _NATIVE, True, "pydicom"),
    SyntaxInfo(EXPLICIT_LE, "Explicit VR Little Endian", _NATIVE, True, "pydicom"),
    SyntaxInfo(DEFLATED_LE, "Deflated Explicit VR Little Endian", _NATIVE, True, "pydicom"),
    SyntaxInfo(EXPLICIT_BE, "Explicit VR Big Endian", _NATIVE, True, "pydicom"),
    SyntaxInfo("1.2.840.10008.1.2.4.50", "JPEG Baseline", "image/jpeg", False, "pylibjpeg-libjpeg"),
    SyntaxInfo("1.2.840.10008.1.2.4.51", "JPEG Extended", "image/jpeg", False, "pylibjpeg-libjpeg"),
    SyntaxInfo("1.2.840.10008.1.2.4.57", "JPEG Lossless", "image/jpeg", False, "pylibjpeg-libjpeg"),
    SyntaxInfo("1.2.840.10008.1.2.4.70", "JPEG Lossless SV1", "image/jpeg", False,
               "pylibjpeg-libjpeg"),
    SyntaxInfo("1.2.840.10008.1.2.4.80", "JPEG-LS Lossless", "image/jls", False,
               "pylibjpeg-libjpeg"),
    SyntaxInfo("1.2.840.10008.1.2.4.81", "JPEG-LS Near-Lossless", "image/jls", False,
               "pylibjpeg-libjpeg"),
    SyntaxInfo("1.2.840.10008.1.2.4.90", "JPEG 2000 Lossless", "image/jp2", False,
               "pylibjpeg-openjpeg"),
    SyntaxInfo("1.2.840.10008.1.2.4.91", "JPEG 2000", "image/jp2", False, "pylibjpeg-openjpeg"),
    SyntaxInfo("1.2.840.10008.1.2.4.201", "HTJ2K Lossless", "image/jphc", False,
               "pylibjpeg-openjpeg"),
    SyntaxInfo("1.2.840.10008.1.2.4.202", "HTJ2K Lossless RPCL", "image/jphc", False,
               "pylibjpeg-openjpeg"),
    SyntaxInfo("1.2.840.10008.1.2.4.203", "HTJ2K", "image/jphc", False, "pylibjpeg-openjpeg"),
    SyntaxInfo("1.2.840.10008.1.2.5", "RLE Lossless", "image/dicom-rle", False, "pylibjpeg-rle"),
)}


def syntax_info(uid: str, path: str, *, need_decoder: bool = True) -> SyntaxInfo:
    """The serving rules for ``uid``.

    Raises
    ------
    RejectedInstanceError
        If the transfer syntax is unknown here, or no installed plugin decodes it.

    """
    info = SYNTAXES.get(uid)
    if info is None:
        raise RejectedInstanceError(path, f"transfer syntax {uid} is not supported "
                                          f"(supported: {', '.join(sorted(SYNTAXES))})")
    if need_decoder and not info.native and not get_decoder(uid).is_available:
        raise RejectedInstanceError(path, f"no decoder for {info.name} ({uid}) is installed; "
                                          f"install {info.decoder}")
    return info


@dataclass
class SourceInstance:
    """One accepted input instance, ready to be written to a site."""

    path: str
    p10: bytes
    dataset: Dataset
    syntax: SyntaxInfo
    study: str
    series: str
    sop: str
    sop_class: str
    #: (7FE0,0010) when read without copying (native pixel data), else None.
    pixel_view: memoryview | None = None
    #: The SHA-256 of ``p10`` (hex); computed here when not given.
    sha256: str = ""

    def __post_init__(self) -> None:
        if not self.sha256:
            self.sha256 = sha256_hex(self.p10)

    @property
    def pixel_data(self) -> bytes | memoryview | None:
        """The (7FE0,0010) value as stored, or None."""
        if self.pixel_view is not None:
            return self.pixel_view
        return self.dataset.PixelData if "PixelData" in self.dataset else None

    @cached_property
    def number_of_frames(self) -> int:
        """(0028,0008) NumberOfFrames, 1 when absent; 0 without pixel data."""
        if self.pixel_data is None:
            return 0
        try:
            return max(1, int(self.dataset.get("NumberOfFrames") or 1))
        except (TypeError, ValueError):
            return 1

    @cached_property
    def frames(self) -> list[bytes | memoryview]:
        """Every frame in the stored transfer syntax (native frames little endian)."""
        if self.number_of_frames == 0:
            return []
        if self.syntax.native:
            return _native_frames(self)
        return _encapsulated_frames(self)


#: What pydicom can raise on a damaged file, beyond its own errors.
UNREADABLE = (ValueError, TypeError, KeyError, IndexError, AttributeError, NotImplementedError,
              OverflowError, EOFError, LookupError, struct.error)


def sha256_hex(data: bytes | memoryview) -> str:
    """The SHA-256 of ``data`` in hex."""
    return hashlib.sha256(data).hexdigest()


def read_regular_file(path: str | Path) -> bytes:
    """The bytes of ``path``, which must be a regular file.

    Opened without blocking and checked before reading: a FIFO, socket or
    device that took the place of a file after the inputs were listed is
    rejected, not waited on forever.

    Raises
    ------
    OSError
        When it cannot be opened or read.
    RejectedInstanceError
        When it is not a regular file.

    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise RejectedInstanceError(str(path), "not a regular file (a FIFO, socket or device); "
                                                   "not read")
        with open(fd, "rb", closefd=False) as fh:
            return fh.read()
    finally:
        os.close(fd)


def read_instance(path: str | Path, data: bytes | None = None, sha256: str = "") -> SourceInstance:
    """Read and check one Part 10 file.

    Parameters
    ----------
    path
        The file, also used in every message.
    data
        Its bytes when already in memory (STOW-RS parts).
    sha256
        The SHA-256 of ``data`` when already known (hex).

    Raises
    ------
    RejectedInstanceError
        For every reason the file cannot be served faithfully, including a
        damaged file that pydicom itself trips over.

    """
    try:
        return _read_instance(path, data, sha256)
    except UNREADABLE as exc:
        raise RejectedInstanceError(str(path), f"could not be read: {type(exc).__name__}: "
                                               f"{exc}") from exc


def _read_instance(path: str | Path, data: bytes | None, sha256: str) -> SourceInstance:
    name = str(path)
    raw = _file_bytes(path, data, name)
    has_header = raw[128:132] == b"DICM"
    ds, pixel_view, known_syntax = _read_dataset(raw, has_header, name)
    _check_complete(ds, name, pixel_view is not None)
    study, series, sop, sop_class = _instance_uids(ds, name, plain=has_header)
    syntax = syntax_info(known_syntax or _actual_syntax(ds), name)
    _check_pixel_encoding(ds, syntax, pixel_view is not None, name)
    p10 = raw if has_header else _as_part10(ds, syntax.uid)
    inst = SourceInstance(name, p10, ds, syntax, study, series, sop, sop_class, pixel_view,
                          sha256 if p10 is raw else "")
    if inst.pixel_data is not None:
        _check_pixel_description(ds, name)
    _ = inst.frames  # check the pixel data now, so a bad file is rejected before writing
    return inst


def _file_bytes(path: str | Path, data: bytes | None, name: str) -> bytes:
    """``data``, else the bytes of ``path``; rejected when unreadable or empty."""
    try:
        raw = read_regular_file(path) if data is None else data
    except OSError as exc:
        raise RejectedInstanceError(name, f"cannot be read: {exc.strerror or exc}") from exc
    if not raw:
        raise RejectedInstanceError(name, "empty file (0 bytes)")
    return raw


def _read_dataset(raw: bytes, has_header: bool,
                  name: str) -> tuple[Dataset, memoryview | None, str | None]:
    """:func:`_parse`, rejecting what is no DICOM data set, with the reason."""
    try:
        ds, pixel_view, known_syntax = _parse(raw, has_header)
    except (InvalidDicomError, EOFError, ValueError, KeyError, OSError, struct.error) as exc:
        raise RejectedInstanceError(name, f"not a readable DICOM file: {exc}") from exc
    if has_header and not any(tag.group != 0x0002 for tag in ds.keys()):  # noqa: SIM118
        raise RejectedInstanceError(name, "truncated or unreadable: no data set could be read "
                                          "after the file meta information")
    if not has_header:
        if "SOPInstanceUID" not in ds or "SOPClassUID" not in ds:
            raise RejectedInstanceError(name, "not a DICOM file (no 'DICM' prefix at byte 128 "
                                              "and no SOP Instance UID)")
        log.warning("%s: no Part 10 header; serving it re-encoded as Part 10", name)
    return ds, pixel_view, known_syntax


#: The UIDs that place an instance in a site: keyword, tag as messages write it, tag number.
_INSTANCE_UIDS = (("StudyInstanceUID", "(0020,000D)", 0x0020000D),
                  ("SeriesInstanceUID", "(0020,000E)", 0x0020000E),
                  ("SOPInstanceUID", "(0008,0018)", 0x00080018),
                  ("SOPClassUID", "(0008,0016)", 0x00080016))


def _instance_uids(ds: Dataset, name: str, *, plain: bool) -> list[str]:
    """The Study, Series and SOP Instance UIDs and the SOP Class UID, each present and valid.

    With ``plain``, each is read from its element's bytes where it can be;
    pydicom decodes (and warns) otherwise.  A file without the Part 10
    header is re-encoded from its decoded elements, so those are read.
    """
    uids = []
    for keyword, where, tag in _INSTANCE_UIDS:
        value = _plain_uid(ds, tag) if plain else None
        if value is None:
            value = ds.get(keyword)
        if value is None or str(value).strip("\x00 ") == "":
            raise RejectedInstanceError(name, f"lacks {where} {keyword}")
        try:
            uids.append(validate_uid(value, what=f"{where} {keyword}"))
        except InvalidUIDError as exc:
            raise RejectedInstanceError(name, str(exc)) from exc
    return uids


def _check_pixel_encoding(ds: Dataset, syntax: SyntaxInfo, native_view: bool, name: str) -> None:
    """Reject (7FE0,0010) PixelData native under an encapsulated transfer syntax, or the reverse."""
    if native_view and not syntax.native:
        raise RejectedInstanceError(name, f"(7FE0,0010) PixelData is native but the transfer "
                                          f"syntax is {syntax.name} ({syntax.uid})")
    if "PixelData" in ds:
        elem = ds["PixelData"]
        if elem.is_undefined_length == syntax.native:
            shape = "encapsulated" if elem.is_undefined_length else "native"
            raise RejectedInstanceError(name, f"(7FE0,0010) PixelData is {shape} but the "
                                              f"transfer syntax is {syntax.name} ({syntax.uid})")


#: The Image Pixel module's attributes that say how (7FE0,0010) is laid out, all Type 1.
_PIXEL_DESCRIPTION = ((0x00280010, "(0028,0010)", "Rows"), (0x00280011, "(0028,0011)", "Columns"),
                      (0x00280002, "(0028,0002)", "SamplesPerPixel"),
                      (0x00280100, "(0028,0100)", "BitsAllocated"))


def _check_pixel_description(ds: Dataset, name: str) -> None:
    """Reject pixel data whose description cannot be right (its frames could not be served).

    Rows, Columns, SamplesPerPixel and BitsAllocated present and not 0,
    BitsAllocated 1 or a multiple of 8, BitsStored at most BitsAllocated, and
    NumberOfFrames (when present) a positive integer.  The data length is
    checked against them with the frames (:func:`_native_frames`).
    """
    values = {}
    for tag, where, keyword in _PIXEL_DESCRIPTION:
        try:
            values[keyword] = plain_us(ds, tag, keyword)
        except AttributeError:
            raise RejectedInstanceError(name, f"pixel description incomplete: {where} {keyword} "
                                              "is missing") from None
        except (TypeError, ValueError):
            raise RejectedInstanceError(name, f"{where} {keyword} is empty or not one number "
                                              f"({ds.get(keyword)!r})") from None
        if values[keyword] == 0:
            raise RejectedInstanceError(name, f"{where} {keyword} is 0: (7FE0,0010) Pixel Data "
                                              "cannot be described by it")
    bits = values["BitsAllocated"]
    if bits != 1 and bits % 8:
        raise RejectedInstanceError(name, f"(0028,0100) BitsAllocated is {bits}, neither 1 nor a "
                                          "multiple of 8")
    stored = _plain_us(ds, 0x00280101)
    if stored is not None and not 0 < stored <= bits:
        raise RejectedInstanceError(name, f"(0028,0101) BitsStored is {stored}, not from 1 to "
                                          f"(0028,0100) BitsAllocated {bits}")
    _check_number_of_frames(ds, name)


def _check_number_of_frames(ds: Dataset, name: str) -> None:
    """Reject a (0028,0008) NumberOfFrames that is present but not a positive integer."""
    item = ds.get_item(0x00280008)
    value = item.value if item is not None else None
    text = (value.decode("latin-1") if isinstance(value, bytes) else str(value or "")).strip(" \x00")
    if text:
        try:
            count = int(text)
        except ValueError:
            count = 0
        if count < 1:
            raise RejectedInstanceError(name, f"(0028,0008) NumberOfFrames is {text!r}, not a "
                                              "positive integer")


#: Storage SOP classes that hold pixel data without "Image" in their name.
PIXEL_SOP_CLASSES = frozenset({"Segmentation Storage", "Label Map Segmentation Storage",
                               "Parametric Map Storage"})
_PIXEL_TAG = b"\xe0\x7f\x10\x00"


def _parse(raw: bytes, has_header: bool) -> tuple[Dataset, memoryview | None, str | None]:
    """Parse ``raw``; native little-endian pixel data is returned as a view, not copied.

    The fast path reads every element before (7FE0,0010), then takes the pixel
    data value from the file's bytes where it lies.  Anything unusual (big
    endian, deflate, encapsulated, elements after the pixel data) is read
    completely by pydicom instead.  The third value is the transfer syntax
    when :func:`_read_header` read the file (Explicit or Implicit VR Little
    Endian, as its file meta says), else None.
    """
    header = _read_header(raw) if has_header else None
    known: str | None = None
    if header is None:
        fp = io.BytesIO(raw)
        ds: Dataset = dcmread(fp, force=not has_header, stop_before_pixels=True)
        pos = fp.tell()
    else:
        ds, pos, known = header
    implicit, little = ds.original_encoding
    if raw[pos:pos + 4] == _PIXEL_TAG and little and (known or not _is_deflated(ds)):
        view = _native_pixel_data(raw, pos, bool(implicit))
        if view is not None:
            return ds, view, known
    if pos >= len(raw) and (known or not _is_deflated(ds)):
        return ds, None, known
    full = dcmread(io.BytesIO(raw), force=not has_header)
    full.keys()
    return full, None, None


def _native_pixel_data(raw: bytes, pos: int, implicit: bool) -> memoryview | None:
    """The value of the (7FE0,0010) element at ``pos``, without copying, when it ends the file.

    Little endian, of defined length (native), followed by one byte of
    padding at most; else None (pydicom then reads the whole file).
    """
    if implicit:
        length, start = struct.unpack_from("<I", raw, pos + 4)[0], pos + 8
    elif raw[pos + 4:pos + 6] in (b"OB", b"OW", b"UN"):
        length, start = struct.unpack_from("<I", raw, pos + 8)[0], pos + 12
    else:
        return None
    end = start + length
    if length != 0xFFFFFFFF and end <= len(raw) and len(raw) - end <= 1:
        return memoryview(raw)[start:end]
    return None


#: Explicit VRs as written in a file, and those with a 4-byte length.
_VR_NAMES = {str(vr).encode("ascii"): str(vr) for vr in VR if len(str(vr)) == 2}
_LONG_VRS = frozenset(str(vr).encode("ascii") for vr in EXPLICIT_VR_LENGTH_32)
_TAG = struct.Struct("<HH")
#: An element's tag, VR and 2-byte length (explicit VR), or tag and 4-byte length (implicit).
_EXPLICIT = struct.Struct("<HH2sH")
_IMPLICIT = struct.Struct("<HHL")
_LENGTH = struct.Struct("<L")
_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00009, 0x7FE00008})
_TRANSFER_SYNTAX = BaseTag(0x00020010)
_CHARSET = BaseTag(0x00080005)
_ElementMap = dict[BaseTag, RawDataElement | DataElement]


def _read_header(raw: bytes) -> tuple[FileDataset, int, str] | None:
    """What ``dcmread(stop_before_pixels=True)`` gives for a plain Part 10 file, read faster.

    Plain: little endian (Explicit or Implicit VR Little Endian), every element
    before the pixel data with a known VR and whole, of defined length or a
    sequence of undefined length, no command set, the first element's VR as
    the transfer syntax says.  The elements are the ones pydicom reads
    (undecoded, same VR, length, value and offset; a sequence of undefined
    length parsed by pydicom's own ``read_sequence``, as ``dcmread`` does)
    and the data set is built as ``pydicom.filereader.read_partial`` builds
    it.  Returns the data set, the offset where reading stopped and the
    transfer syntax, or None for anything else, which pydicom then reads
    itself.
    """
    meta = _read_file_meta(raw)
    if meta is None:
        return None
    file_meta, pos, syntax = meta
    implicit = syntax == IMPLICIT_LE
    if pos + 6 > len(raw) or _TAG.unpack_from(raw, pos)[0] == 0:  # nothing, or a command set
        return None
    b0, b1 = raw[pos + 4], raw[pos + 5]
    if (not (0x40 < b0 < 0x5B and 0x40 < b1 < 0x5B)) != implicit:  # pydicom would switch VR
        return None
    body = _raw_elements(raw, pos, len(raw), implicit=implicit, stop=_PIXEL_TAGS)
    if body is None:
        return None
    elements, pos = body
    # pydicom wraps a Dataset of these elements; the FileDataset takes over its elements alone
    ds = FileDataset(io.BytesIO(raw), elements, raw[:128], file_meta, implicit, True)
    ds.set_original_encoding(implicit, True, ds._character_set)
    return ds, pos, syntax


def _read_file_meta(raw: bytes) -> tuple[FileMetaDataset, int, str] | None:
    """The file meta information of a Part 10 file, as pydicom reads it, when plain.

    Plain: group 2 elements of defined length in Explicit VR Little Endian,
    the first one decodable, and a transfer syntax of Explicit or Implicit
    VR Little Endian.  Returns them, the offset after them and the transfer
    syntax, else None.
    """
    meta = _raw_elements(raw, 132, len(raw), implicit=False, stop=_OUTSIDE_FILE_META)
    if meta is None or not meta[0]:
        return None
    elements, pos = meta
    if not all(type(element) is RawDataElement for element in elements.values()):
        return None  # an element of undefined length in group 2: not plain, pydicom reads it
    syntax = _plain_text_uid(elements.get(_TRANSFER_SYNTAX))
    if syntax not in (EXPLICIT_LE, IMPLICIT_LE):
        return None
    file_meta = FileMetaDataset(elements)
    file_meta.set_original_encoding(False, True, default_encoding)
    first = cast(RawDataElement, next(iter(elements.values())))
    if not (first.tag == 0x00020000 and first.VR == "UL" and first.length == 4):
        try:  # pydicom decodes the first element (a group length of 4 bytes always decodes),
            # and rereads group 2 as implicit VR if it cannot
            file_meta[first.tag]
        except NotImplementedError:
            return None
    return file_meta, pos, syntax


class _BaseTags(dict[int, BaseTag]):
    """One ``BaseTag`` per tag number seen, shared by the data sets read (they are immutable ints)."""

    def __missing__(self, tag: int) -> BaseTag:
        if len(self) > 100_000:  # private tags of many vendors: keep it bounded
            self.clear()
        base = self[tag] = BaseTag(tag)
        return base


_BASE_TAGS = _BaseTags()


class _OutsideGroup:
    """The tags of every group but ``group``: where a run of that group's elements ends."""

    def __init__(self, group: int) -> None:
        self.group = group

    def __contains__(self, tag: object) -> bool:
        return isinstance(tag, int) and tag >> 16 != self.group


#: Where the file meta information ends (its first element outside group 2), and an item of
#: undefined length (its item delimitation item); the data set's elements end at _PIXEL_TAGS.
_OUTSIDE_FILE_META = _OutsideGroup(0x0002)
_ITEM_DELIMITATION = frozenset({0xFFFEE00D})


def _raw_elements(raw: bytes, pos: int, end: int, *, implicit: bool, stop: Container[int],
                  encoding: str | list[str] = default_encoding) -> tuple[_ElementMap, int] | None:
    """Undecoded elements from ``pos`` to ``end``, or to the first whose tag is in ``stop``.

    The elements of defined length are read here; a sequence of undefined
    length by :func:`_undefined_length_sequence`, its items' text in the
    ``encoding`` they inherit ((0008,0005) read before them, else ``encoding``).
    Returns the elements and the offset where reading stopped: before ``end``
    only at a tag in ``stop``.  None when an element is not plain (see
    :func:`_read_header`).
    """
    elements: _ElementMap = {}
    explicit_at, implicit_at, length_at = (_EXPLICIT.unpack_from, _IMPLICIT.unpack_from,
                                           _LENGTH.unpack_from)
    names, long_vrs, new, tags = _VR_NAMES, _LONG_VRS, tuple.__new__, _BASE_TAGS
    vr: str | None = None
    while pos < end:
        if pos + 8 > end:  # a cut element header: pydicom decides what that is
            return None
        if implicit:
            group, number, length = implicit_at(raw, pos)
        else:
            group, number, code, length = explicit_at(raw, pos)
        tag = group << 16 | number
        if tag in stop:
            break
        start = pos + 8
        if not implicit:
            vr = names.get(code)
            if vr is None:
                return None
            if code in long_vrs:
                if start + 4 > end:
                    return None
                length = length_at(raw, start)[0]
                start += 4
        if length > end - start or group == 0xFFFE:  # undefined length, cut or an item: rare
            sequence = _element_past_end(raw, tag, vr, length, start, implicit, encoding)
            if sequence is None:
                return None
            elements[sequence[0].tag], pos = sequence
            continue
        if tag == 0x00080005:  # the items of the sequences that follow inherit it, as in pydicom
            encoding = convert_encodings(convert_string(raw[start:start + length], True))
        base = tags[tag]
        value = raw[start:start + length] if length else empty_value_for_VR(vr, raw=True)
        # RawDataElement(base, vr, length, value, start, implicit, True), without keyword handling
        elements[base] = new(RawDataElement, (base, vr, length, value, start, implicit, True, True,
                                              False))
        pos = start + length
    return elements, pos


def _element_past_end(raw: bytes, tag: int, vr: str | None, length: int, start: int,
                      implicit: bool, encoding: str | list[str]) -> tuple[DataElement, int] | None:
    """An element whose length goes past the end of the scan, or an item tag in its place.

    A sequence of undefined length (its end is known only from its sequence
    delimitation item) is read by :func:`_undefined_length_sequence`; an
    item tag where an element belongs, or a value cut by the end of the
    bytes or of its item, gives None: pydicom decides what that is.
    """
    if length != 0xFFFFFFFF or tag >> 16 == 0xFFFE:
        return None
    return _undefined_length_sequence(raw, tag, vr, start, implicit, encoding)


def _item_elements(raw: bytes, pos: int, length: int, implicit: bool,
                   encoding: str | list[str]) -> tuple[_ElementMap, int] | None:
    """The undecoded elements of the sequence item whose value starts at ``pos``.

    Of defined ``length``, up to its end; of undefined length, up to its
    item delimitation item (read too).  None when an element is not plain,
    an item of undefined length has no item delimitation item, or one of
    defined length has one inside.
    """
    end = len(raw) if length == 0xFFFFFFFF else pos + length
    read = _raw_elements(raw, pos, end, implicit=implicit, stop=_ITEM_DELIMITATION,
                         encoding=encoding)
    if read is None:
        return None
    elements, stopped = read
    if length == 0xFFFFFFFF:
        return (elements, stopped + 8) if stopped < end else None
    return None if stopped < end else read


def _sequence_items(raw: bytes, pos: int, implicit: bool,
                    encoding: str | list[str]) -> tuple[Sequence, int] | None:
    """The items of a sequence of undefined length from ``pos``, as pydicom's ``read_sequence``.

    Each item a ``Dataset`` of raw elements with the encodings, flags and
    offsets pydicom gives it.  None for anything unusual (an item that is
    empty or switches VR, an element not plain, no delimitation item), which
    pydicom then reads.  Returns the sequence and the offset after its
    sequence delimitation item.
    """
    items: list[Dataset] = []
    while True:
        if pos + 14 > len(raw):
            return None
        group, number, length = _IMPLICIT.unpack_from(raw, pos)
        tag = group << 16 | number
        if tag == 0xFFFEE0DD:
            break
        first = _TAG.unpack_from(raw, pos + 8)
        b0, b1 = raw[pos + 12], raw[pos + 13]
        if (tag != 0xFFFEE000 or length == 0 or first == (0xFFFE, 0xE00D)
                or (not implicit and not (0x40 < b0 < 0x5B and 0x40 < b1 < 0x5B))):
            return None
        parsed = _item_elements(raw, pos + 8, length, implicit, encoding)
        if parsed is None:
            return None
        elements, end = parsed
        # as pydicom's read_dataset: the item's own (0008,0005), else the inherited encoding
        ds = Dataset(elements, parent_encoding=encoding)
        charset = elements.get(_CHARSET)
        if isinstance(charset, RawDataElement):
            value = cast(str | list[str] | None, convert_raw_data_element(charset).value)
            ds.set_original_encoding(implicit, True, convert_encodings(value))
        else:
            ds.set_original_encoding(implicit, True, encoding)
        ds.is_undefined_length_sequence_item = length == 0xFFFFFFFF
        ds.seq_item_tell = ds.file_tell = pos
        items.append(ds)
        pos = end
    sequence = Sequence(items)
    sequence.is_undefined_length = True
    return sequence, pos + 8


def _undefined_length_sequence(raw: bytes, tag: int, vr: str | None, start: int, implicit: bool,
                               encoding: str | list[str]) -> tuple[DataElement, int] | None:
    """The sequence of undefined length whose value starts at ``start``, read as pydicom reads it.

    pydicom's ``data_element_generator`` parses such a sequence at once (its
    end is only known from its delimitation item) into a ``DataElement`` of
    ``Dataset`` items holding raw elements: this calls the same
    ``read_sequence`` with the same arguments, so the element, its items and
    their offsets are the ones ``dcmread`` gives.  An undefined-length element
    that pydicom would not read as a sequence, or one it cannot read, gives
    None (pydicom then reads the whole file).  Returns the element and the
    offset after its sequence delimitation item.
    """
    if vr == "UN" and config.settings.infer_sq_for_un_vr:
        vr = "SQ"  # PS3.5 6.2.2, as pydicom
    if vr is None or (vr == "UN" and config.replace_un_with_known_vr):
        try:
            vr = _dictionary_vr_fast(tag)  # what pydicom looks up here
        except KeyError:  # a private tag: a sequence if an item follows, as pydicom looks ahead
            if raw[start:start + 4] == b"\xfe\xff\x00\xe0":
                vr = "SQ"
    if vr != "SQ":
        return None
    read = _sequence_items(raw, start, implicit, encoding)
    if read is None:  # pydicom's own reading
        fp = io.BytesIO(raw)
        fp.seek(start)
        try:
            read = read_sequence(fp, implicit, True, 0xFFFFFFFF, encoding), fp.tell()
        except Exception:  # whatever pydicom makes of bytes it cannot read, dcmread decides
            return None
    base = _BASE_TAGS[tag]
    return DataElement(base, vr, read[0], start, is_undefined_length=True), read[1]


def _check_complete(ds: Dataset, name: str, has_pixel_view: bool) -> None:
    """Reject files that end early: pydicom stops quietly at the end of the bytes."""
    tags = list(ds.keys())
    if tags:
        last = cast(DataElement | RawDataElement, ds.get_item(tags[-1]))
        if (isinstance(last, RawDataElement) and last.value is not None
                and last.length != 0xFFFFFFFF and len(last.value) < last.length):
            raise RejectedInstanceError(name, f"truncated: ({last.tag.group:04X},{last.tag.element:04X}) "
                                              f"has {len(last.value)} of {last.length} bytes")
    has_pixels = has_pixel_view or any(t in ds for t in (0x7FE00010, 0x7FE00008, 0x7FE00009))
    if has_pixels:
        return
    if any(k in ds for k in ("Rows", "Columns", "BitsAllocated")):
        raise RejectedInstanceError(name, "truncated or incomplete: it has an image pixel module "
                                          "but no (7FE0,0010) Pixel Data")
    sop_class = UID(str(ds.get("SOPClassUID", "")))
    if sop_class.is_valid and ("Image Storage" in sop_class.name
                               or sop_class.name in PIXEL_SOP_CLASSES):
        raise RejectedInstanceError(name, f"truncated or incomplete: a {sop_class.name} instance "
                                          "without (7FE0,0010) Pixel Data")


def _is_deflated(ds: Dataset) -> bool:
    return bool(ds.file_meta) and str(ds.file_meta.get("TransferSyntaxUID", "")) == DEFLATED_LE


def _actual_syntax(ds: Dataset) -> str:
    meta_ts = str(getattr(ds.file_meta, "TransferSyntaxUID", "") or "") if ds.file_meta else ""
    implicit, little = ds.original_encoding
    if meta_ts in SYNTAXES and not SYNTAXES[meta_ts].native:
        return meta_ts
    if meta_ts == DEFLATED_LE:
        return meta_ts
    if implicit:
        return IMPLICIT_LE
    if little is False:
        return EXPLICIT_BE
    if meta_ts and meta_ts not in SYNTAXES:
        return meta_ts
    return EXPLICIT_LE


def _as_part10(ds: Dataset, syntax: str) -> bytes:
    meta = ds.file_meta if ds.file_meta else FileMetaDataset()
    meta.TransferSyntaxUID = UID(syntax)
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta = meta
    out = io.BytesIO()
    dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


def _native_frames(inst: SourceInstance) -> list[bytes | memoryview]:
    ds = inst.dataset
    try:
        rows, cols = plain_us(ds, 0x00280010, "Rows"), plain_us(ds, 0x00280011, "Columns")
        bits = plain_us(ds, 0x00280100, "BitsAllocated")
        spp = _plain_us(ds, 0x00280002)
        if spp is None:
            spp = int(ds.get("SamplesPerPixel", 1) or 1)
        spp = spp or 1
    except (AttributeError, TypeError, ValueError) as exc:
        raise RejectedInstanceError(inst.path, f"pixel description incomplete: {exc}") from exc
    count = inst.number_of_frames
    pixels = rows * cols * spp
    data = inst.pixel_data
    assert data is not None
    if bits == 1:
        return _one_bit_frames(inst, data, pixels, count)
    size = pixels * bits // 8
    if len(data) < size * count:
        raise _truncated(inst, size * count, len(data))
    _check_excess(inst, len(data), size * count, size)
    if inst.syntax.uid == EXPLICIT_BE and bits > 8:
        dtype = np.dtype(f">u{bits // 8}")
        data = np.frombuffer(data, dtype, pixels * count).astype(dtype.newbyteorder("<")).tobytes()
    view = memoryview(data)
    return [view[i * size:(i + 1) * size] for i in range(count)]


def _one_bit_frames(inst: SourceInstance, data: bytes | memoryview, pixels: int,
                    count: int) -> list[bytes | memoryview]:
    """The ``count`` frames of ``pixels`` 1-bit pixels each, packed from bit 0 of each byte."""
    needed = (pixels * count + 7) // 8
    if len(data) < needed:
        raise _truncated(inst, needed, len(data))
    _check_excess(inst, len(data), needed, (pixels + 7) // 8)
    if pixels % 8 == 0:
        return [data[i * pixels // 8:(i + 1) * pixels // 8] for i in range(count)]
    flat = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")
    return [np.packbits(flat[i * pixels:(i + 1) * pixels], bitorder="little").tobytes()
            for i in range(count)]  # frames of 1-bit data are packed one by one


def _plain_value(ds: Dataset, tag: int, vr: str) -> bytes | None:
    """The value bytes of a little-endian element that pydicom has not decoded, else None."""
    elem = cast(DataElement | RawDataElement | None, ds.get_item(tag))
    if (isinstance(elem, RawDataElement) and elem.is_little_endian and elem.VR in (vr, None)
            and isinstance(elem.value, bytes)):
        return elem.value
    return None


def _plain_uid(ds: Dataset, tag: int) -> str | None:
    """A single-valued ASCII UI element as text (what pydicom decodes it to), else None."""
    return _plain_text_uid(ds.get_item(tag))


def _plain_text_uid(elem: object) -> str | None:
    """The text of an undecoded, little-endian, single-valued ASCII UI element, else None."""
    if (not isinstance(elem, RawDataElement) or not elem.is_little_endian
            or elem.VR not in ("UI", None) or not isinstance(elem.value, bytes)):
        return None
    value = elem.value
    if not value.isascii() or b"\\" in value:
        return None
    return value.decode("ascii").rstrip("\x00 ")


def _plain_us(ds: Dataset, tag: int) -> int | None:
    """A single US value, else None."""
    value = _plain_value(ds, tag, "US")
    if value is None or len(value) != 2:
        return None
    return int.from_bytes(value, "little")


def plain_us(ds: Dataset, tag: int, keyword: str) -> int:
    """A US attribute as an int, read from its bytes when plain, else decoded by pydicom.

    Raises
    ------
    AttributeError, TypeError, ValueError
        As ``int(ds.<keyword>)`` does: absent, multi-valued or empty.

    """
    value = _plain_us(ds, tag)
    return int(getattr(ds, keyword)) if value is None else value


def _check_excess(inst: SourceInstance, found: int, needed: int, frame: int) -> None:
    """Reject native pixel data longer than its description by a frame or more.

    A byte or a part of a frame more is padding (tolerated, as pydicom does);
    a whole frame more means BitsAllocated, the dimensions or NumberOfFrames
    do not describe the data, and frames cut from it would be wrong.
    """
    extra = found - needed
    if extra > 1 and extra >= frame:
        raise RejectedInstanceError(
            inst.path, f"(7FE0,0010) PixelData holds {found} bytes but (0028,0010) Rows, "
                       f"(0028,0011) Columns, (0028,0002) SamplesPerPixel, (0028,0100) "
                       f"BitsAllocated and (0028,0008) NumberOfFrames describe {needed}: they do "
                       "not match the data")


def _truncated(inst: SourceInstance, needed: int, found: int) -> RejectedInstanceError:
    return RejectedInstanceError(inst.path, f"(7FE0,0010) PixelData is truncated: "
                                            f"{found} bytes, {needed} needed")


def _encapsulated_frames(inst: SourceInstance) -> list[bytes | memoryview]:
    ds = inst.dataset
    count = inst.number_of_frames
    extended = None
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
        extended = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
    try:
        frames: list[bytes | memoryview] = list(generate_frames(ds.PixelData, number_of_frames=count,
                                      extended_offsets=extended))
    except (ValueError, EOFError, KeyError) as exc:
        raise RejectedInstanceError(inst.path, f"(7FE0,0010) encapsulated PixelData is "
                                               f"malformed: {exc}") from exc
    if len(frames) != count:
        raise RejectedInstanceError(inst.path, f"(7FE0,0010) holds {len(frames)} frames, "
                                               f"(0028,0008) NumberOfFrames says {count}")
    return frames
