"""The writer of a merge: many small objects written on threads, or in child processes.

:class:`Writer` runs the writes of :mod:`static_dicomweb.aggregate` (query answers above all): on
S3 on many threads (PUTs wait on the network), on a folder in the merging process and, once a
merge is large, in child processes (:mod:`static_dicomweb.offload`).  Writes submitted before
:meth:`Writer.wait` are stored when it returns, which is how the ordering rules are kept.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import TypeVar, cast

from . import keys
from .offload import ChildWriter
from .store import LocalStore, Store

#: Writer threads for a local folder: one.  Its writes are file-system calls, CPU-bound in the
#: kernel, and threads contend for the folder's lock and the GIL, so more threads made a full
#: NLST-size build slower, not faster (docs/benchmarks.md) ...
LOCAL_WRITE_THREADS = 1
#: ... while S3 PUTs wait on the network: as many threads as the S3 client's connection pool.
REMOTE_WRITE_THREADS = 32
#: Writes submitted on a local folder before the rest move to child processes (a few seconds
#: of writes: a small merge never starts one) ...
OFFLOAD_AFTER = 64
#: ... and how many, at most: each child overlaps the kernel's work with the merging process's
#: Python; a second one still shortened a full NLST-size build on 2 cores (docs/benchmarks.md).
WRITE_PROCESSES = 2
_T = TypeVar("_T")
_R = TypeVar("_R")


def write_processes() -> int:
    """How many child processes write a local folder's objects, once there are many."""
    return max(1, min(WRITE_PROCESSES, os.cpu_count() or 1))


def write_threads(store: Store) -> int:
    """How many writes :class:`Writer` runs at once on ``store`` by default."""
    return LOCAL_WRITE_THREADS if isinstance(store, LocalStore) else REMOTE_WRITE_THREADS


class Writer:
    """Runs a store's writes on a few threads; :meth:`wait` returns once every one is done.

    A full build writes hundreds of thousands of small objects (query answers
    above all), each a PUT on S3 or a file creation in a folder.  Writes
    submitted before a :meth:`wait` are stored (or have raised) when it
    returns, so the ordering rules (pages before the answer counting them,
    objects before the index naming them, the manifest last) are kept by
    waiting between waves.  With ``threads=1`` the writes run in the
    caller's thread, except on a local folder once a merge is large: then
    in child processes (``offload``).

    Parameters
    ----------
    store
        The site's store; its ``put``/``get``/``headers``/``delete`` must be
        safe to call from several threads (the local and the S3 store are).
    threads
        How many writes run at once (default: :func:`write_threads`).
    offload
        For one thread on a local folder: run the writes in child processes
        (:mod:`.offload`, :func:`write_processes` of them), beside this one.
        None (default): once :data:`OFFLOAD_AFTER` writes were submitted, so
        a small merge starts no process and a full build overlaps computing
        with writing.

    """

    def __init__(self, store: Store, threads: int | None = None,
                 offload: bool | None = None) -> None:
        self.store = store
        self.threads = write_threads(store) if threads is None else threads
        self._pool: ThreadPoolExecutor | None = None
        self._child: ChildWriter | None = None
        self._submitted = 0
        #: submits after which writes move to child processes (None: never)
        self._offload_after: int | None = None
        if self.threads <= 1 and isinstance(store, LocalStore) and offload is not False:
            self._offload_after = 0 if offload else OFFLOAD_AFTER
        if self.threads > 1:
            # an S3 client is made on first use, and boto3 does not make clients safely from
            # several threads at once: use the store once from this thread
            store.headers(keys.manifest().key)
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="sdw-write")
        self._pending: deque[Future[None]] = deque()
        self._limit = 64 * self.threads

    def submit(self, fn: Callable[..., None], *args: object) -> None:
        """Run ``fn(*args)`` (module-level ``fn``, picklable arguments) on the threads or children.

        On threads a few hundred writes wait at most, so memory stays flat; a
        child process is sent one batch at a time.
        """
        if self._pool is not None:
            while len(self._pending) >= self._limit:
                self._pending.popleft().result()
            self._pending.append(self._pool.submit(fn, *args))
            return
        if self._child is None and self._offload_after is not None \
                and self._submitted >= self._offload_after:
            self._child = ChildWriter(cast(LocalStore, self.store), write_processes())
        self._submitted += 1
        if self._child is not None:
            self._child.submit(fn, *args)
        else:
            fn(*args)

    def submit_large(self, fn: Callable[..., None], *args: object) -> None:
        """Like :meth:`submit`, for a write whose arguments are large (the roots' rows).

        On threads it is submitted; with writer processes it runs here, in
        this process, which holds those arguments already: copied to a child,
        a full NLST-size build's root rows took a gigabyte in each.  Submit it
        after the small writes of its wave, so the children have work meanwhile.
        """
        if self._pool is None:
            fn(*args)
        else:
            self.submit(fn, *args)

    def map(self, fn: Callable[[_T], _R], items: Iterable[_T]) -> Iterator[_R]:
        """``fn`` over ``items`` on the pool, lazily, results in order."""
        if self._pool is None:
            yield from map(fn, items)
            return
        window: deque[Future[_R]] = deque()
        for item in items:
            window.append(self._pool.submit(fn, item))
            if len(window) >= self._limit:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()

    def wait(self) -> None:
        """Block until every submitted write is done; raise the first error."""
        if self._child is not None:
            self._child.wait()
        while self._pending:
            self._pending.popleft().result()

    def close(self) -> None:
        """Wait for the writes, then stop the threads."""
        try:
            self.wait()
        finally:
            self._stop()

    def _stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        if self._child is not None:
            self._child.abandon()

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if kind is None:
            self.close()
            return
        self._pending.clear()  # an error is on its way out: do not wait on what follows it
        self._stop()
