"""Progress of long steps (conversion, aggregation) where people look.

On a terminal the CLI shows a tqdm bar.  Everywhere else (Airflow task logs, a CLI run
whose standard error is a file or a pipe) :class:`Progress` writes a line through
:mod:`logging` every :data:`INTERVAL_S` seconds, and one when the step ends::

    convert: 1,200/7,750 instances (15%), 8 series, 630.2 MB, 85.1 MB/s, ETA 1m17s

The lines go to the ``static_dicomweb.progress`` logger at INFO (the CLI shows it unless
``--quiet``).  This module never imports Airflow.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger("static_dicomweb.progress")

#: seconds between two progress lines (the environment's ``STATIC_DICOMWEB_PROGRESS_S``, else 10)
INTERVAL_S = float(os.environ.get("STATIC_DICOMWEB_PROGRESS_S") or 10.0)

_T = TypeVar("_T")


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


class Progress:
    """Counts what a step has done and reports it: a tqdm bar, or periodic log lines.

    Parameters
    ----------
    what
        The step's name, first on every line (``convert``, ``aggregate: series``).
    total
        How many items the step will do (0: unknown, no percentage or ETA).
    unit
        What an item is (``instances``, ``series``, ``studies``).
    bar
        Show a tqdm bar on standard error instead of log lines (a terminal).
    interval
        Seconds between two log lines (default :data:`INTERVAL_S`).
    clock
        The time source (``time.monotonic``).

    """

    def __init__(self, what: str, total: int, *, unit: str = "instances", bar: bool = False,
                 interval: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.what, self.total, self.unit, self.clock = what, total, unit, clock
        self.interval = INTERVAL_S if interval is None else interval
        self.done = 0
        self.logged = 0  # ``done`` when the last line was logged
        self.nbytes = 0
        self.series: set[Any] = set()
        self.started = self.last = clock()
        self._bar: Any = None
        if bar:
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit=unit.rstrip("s") or unit, desc=what, leave=False)

    def update(self, n: int = 1, *, nbytes: int = 0, series: Any = None) -> None:
        """Count ``n`` items done (``nbytes`` read; of ``series``, counted once each)."""
        self.done += n
        self.nbytes += nbytes
        if series is not None:
            self.series.add(series)
        if self._bar is not None:
            self._bar.update(n)
            return
        now = self.clock()
        if now - self.last >= self.interval:
            self.last, self.logged = now, self.done
            log.info("%s", self.line(now))

    def line(self, now: float | None = None) -> str:
        """The progress as one line of text."""
        elapsed = max((self.clock() if now is None else now) - self.started, 1e-9)
        parts = [f"{self.what}: {self.done:,}" + (f"/{self.total:,}" if self.total else "")
                 + f" {self.unit}" + (f" ({100 * self.done // self.total}%)" if self.total else "")]
        if self.series:
            parts.append(f"{len(self.series):,} series")
        if self.nbytes:
            parts.append(f"{self.nbytes / 1e6:,.1f} MB, {self.nbytes / 1e6 / elapsed:,.1f} MB/s")
        else:
            parts.append(f"{self.done / elapsed:,.1f} {self.unit}/s")
        if self.total and self.done and self.done < self.total:
            parts.append(f"ETA {_duration(elapsed * (self.total - self.done) / self.done)}")
        else:
            parts.append(f"in {_duration(elapsed)}")
        return ", ".join(parts)

    def close(self) -> None:
        """End the bar, or log the final count (for a step that took an interval or more)."""
        if self._bar is not None:
            self._bar.close()
            return
        now = self.clock()
        if now - self.started >= self.interval and self.logged != self.done:
            log.info("%s", self.line(now))


def tracked(items: Iterable[_T], what: str, total: int, *, unit: str = "series",
            interval: float | None = None) -> Iterator[_T]:
    """``items``, logging a progress line every ``interval`` seconds as they are consumed."""
    progress = Progress(what, total, unit=unit, interval=interval)
    for item in items:
        yield item
        progress.update()
    progress.close()


def file_size(path: str) -> int:
    """The size of a file in bytes, 0 if it cannot be read (gone since)."""
    try:
        return Path(path).stat().st_size
    except OSError:
        return 0
