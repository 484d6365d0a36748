"""Small rendered pictures: decode one frame, apply the modality LUT and a window, JPEG."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import UID

from .dicomjson import JsonDict, first

SIZE = 128
#: The pixel module, which decoding one frame needs.
PIXEL_TAGS = {
    "00280002": "SamplesPerPixel", "00280004": "PhotometricInterpretation",
    "00280006": "PlanarConfiguration", "00280010": "Rows", "00280011": "Columns",
    "00280100": "BitsAllocated", "00280101": "BitsStored", "00280102": "HighBit",
    "00280103": "PixelRepresentation",
}


def decode_frame(meta: JsonDict, frame: bytes | bytearray | memoryview, transfer_syntax: str,
                 native: bool) -> np.ndarray:
    """Decode one frame with pydicom (and the pylibjpeg plugins) from its metadata.

    Parameters
    ----------
    meta
        The instance's DICOM JSON metadata (only the pixel module is read).
    frame
        The frame's bytes as stored in the site.
    transfer_syntax
        The frame's transfer syntax.
    native
        Whether ``frame`` is native (uncompressed, little endian) pixel data.

    """
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(transfer_syntax)
    for tag, keyword in PIXEL_TAGS.items():
        value = first(meta, tag)
        if value is not None:
            setattr(ds, keyword, value)
    ds.setdefault("SamplesPerPixel", 1)
    ds.setdefault("PixelRepresentation", 0)
    ds.NumberOfFrames = 1
    frame = bytes(frame)
    ds.PixelData = frame if native else encapsulate([frame])
    if not native:
        ds["PixelData"].is_undefined_length = True
    if native:
        ds["PixelData"].VR = "OW" if int(ds.BitsAllocated) > 8 else "OB"
    return np.asarray(ds.pixel_array)


def render(meta: JsonDict, pixels: np.ndarray, size: int = SIZE) -> bytes:
    """A JPEG of at most ``size`` pixels a side, windowed for CT.

    The window is the instance's first (0028,1050)/(0028,1051) pair, or the
    soft-tissue window (40/400) for CT without one, or the frame's range.
    """
    image = pixels.astype(np.float32)
    if image.ndim == 3 and image.shape[-1] not in (3, 4):
        image = image[0]
    slope = first(meta, "00281053", 1) or 1
    intercept = first(meta, "00281052", 0) or 0
    image = image * float(slope) + float(intercept)
    center, width = first(meta, "00281050"), first(meta, "00281051")
    if center is None or not width:
        if first(meta, "00080060") == "CT":
            center, width = 40, 400
        else:
            low, high = float(image.min()), float(image.max())
            center, width = (low + high) / 2, max(high - low, 1.0)
    low = float(center) - float(width) / 2
    scaled = np.clip((image - low) / float(width), 0.0, 1.0) * 255.0
    if first(meta, "00280004") == "MONOCHROME1":
        scaled = 255.0 - scaled
    picture = Image.fromarray(scaled.astype(np.uint8))
    picture.thumbnail((size, size))
    out = io.BytesIO()
    picture.convert("RGB" if picture.mode not in ("L", "RGB") else picture.mode).save(
        out, format="JPEG", quality=85, optimize=False)
    return out.getvalue()
