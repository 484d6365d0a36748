"""The one exception hierarchy of static-dicomweb.

Every message names the file, tag or key it is about.  Errors a retry cannot
fix derive from :class:`PermanentError`; the Airflow boundary turns those into
failures without retry, everything else may be retried.
"""

from __future__ import annotations


class StaticDicomwebError(Exception):
    """Base class of every error raised by this package."""


class PermanentError(StaticDicomwebError):
    """An error that a retry cannot fix (bad input, a conflicting site)."""


class InvalidUIDError(PermanentError):
    """A UID that is not digits and dots, at most 64 characters."""


class RejectedInstanceError(PermanentError):
    """One input file that cannot be converted.

    Parameters
    ----------
    path
        The input file (or ``"<stow part N>"``) that was rejected.
    reason
        Why, in words a person can act on.

    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class ConflictError(RejectedInstanceError):
    """An instance whose SOP Instance UID the site already holds with different content."""


class StoreError(StaticDicomwebError):
    """A store could not read or write a key (may be transient)."""


class KeyNotFoundError(StoreError):
    """A key that the store does not hold."""


class ObjectExistsError(StoreError):
    """A create-only write found the key taken (another writer claimed it first)."""
