"""The synthetic CT data set that the tests, the benchmarks and ``static-dicomweb sample`` use.

It lives beside the library, not in it: converting a site never needs it. The generator is in
:mod:`static_dicomweb_sample.ct`; everything public is re-exported here.
"""

from __future__ import annotations

from .ct import (
    FRAME_COUNT,
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    LOCALIZER_IMAGES,
    PRIVATE_BULK_LENGTH,
    PRIVATE_CREATOR,
    SUPPORTED_TRANSFER_SYNTAXES,
    UID_ROOT,
    UN_PRIVATE_CREATOR,
    SampleSpec,
    generate_sample,
    phantom_seed,
    phantom_volume,
    spine_mask,
    vertebra_levels,
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
