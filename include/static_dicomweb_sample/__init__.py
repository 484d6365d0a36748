"""The synthetic CT data set that the tests, the benchmarks and ``static-dicomweb sample`` use.

It lives beside the library, not in it: converting a site never needs it. The generator is in
:mod:`static_dicomweb_sample.ct`; its public names (its ``__all__``) are this package's.
"""

from __future__ import annotations

from .ct import *  # noqa: F403 - the package's names are the generator's
from .ct import __all__ as __all__
