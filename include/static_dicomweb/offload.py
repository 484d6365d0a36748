"""Writes to a local folder, run in child processes beside the one computing them.

A full build of a site's indexes creates hundreds of thousands of small
files.  Creating a file is work in the kernel (about half of a full build's
time here), and a thread cannot overlap it with the Python that computes the
bodies: each of its system calls gives the GIL back and waits to get it again
from a busy thread.  Child processes can: :class:`ChildWriter` sends them the
writes (a module-level function and its arguments, pickled in batches over a
pipe, in turn to each child), each child runs what it gets in order on its
own :class:`~.store.LocalStore` of the same folder, and
:meth:`ChildWriter.wait` returns once everything sent so far is stored,
raising the first error.  After an error a child skips the rest of the
writes sent to it before the next wait (a later write may be an index naming
what failed).

A child is ``python -m static_dicomweb.offload``: a plain subprocess, so it
works inside Airflow tasks and daemonic workers alike, and it exits when its
parent closes the pipe or dies.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import struct
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, BinaryIO

from .errors import StoreError
from .store import LocalStore

#: Writes sent to the child in one message (fewer messages, less waiting on each other).
BATCH = 32
_STORE = "store"
_HEADER = struct.Struct("<Q")
_RUN, _SYNC = b"R", b"S"


class _Pickler(pickle.Pickler):
    """Pickles ``store`` as a reference to the child's own store of the same folder."""

    def __init__(self, file: IO[bytes], store: LocalStore) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._store = store

    def persistent_id(self, obj: Any) -> str | None:
        return _STORE if obj is self._store else None


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], store: LocalStore) -> None:
        super().__init__(file)
        self._store = store

    def persistent_load(self, pid: Any) -> LocalStore:
        if pid != _STORE:
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
        return self._store


def _send(stream: BinaryIO, kind: bytes, payload: bytes | memoryview = b"") -> None:
    stream.write(kind + _HEADER.pack(len(payload)))
    stream.write(payload)
    stream.flush()


def _receive(stream: BinaryIO) -> tuple[bytes, bytes] | None:
    head = stream.read(1 + _HEADER.size)
    if len(head) < 1 + _HEADER.size:
        return None
    (size,) = _HEADER.unpack(head[1:])
    payload = stream.read(size)
    if len(payload) < size:
        return None
    return head[:1], payload


class _Child:
    """One writer process and the two ends of its pipe."""

    def __init__(self, root: Path) -> None:
        package = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package, env.get("PYTHONPATH")) if p)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "static_dicomweb.offload", str(root)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        except OSError as exc:
            raise StoreError(f"{root}: cannot start a writer process: {exc}") from exc
        self.to: BinaryIO = self.process.stdin  # type: ignore[assignment]
        self.back: BinaryIO = self.process.stdout  # type: ignore[assignment]

    def send(self, kind: bytes, payload: bytes | memoryview = b"") -> None:
        try:
            _send(self.to, kind, payload)
        except (BrokenPipeError, ValueError) as exc:
            raise self.died() from exc

    def died(self) -> StoreError:
        code = self.process.wait()
        return StoreError(f"the writer process {self.process.pid} ended (exit status {code}); "
                          "its error is on standard error above")

    def sync(self) -> bytes | None:
        """Wait for what was sent; the pickled first error, or None."""
        self.send(_SYNC)
        answer = _receive(self.back)
        if answer is None:
            raise self.died()
        kind, payload = answer
        return payload if kind == b"E" else None

    def stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.to.close()
        if self.process.poll() is None:
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        with contextlib.suppress(OSError, ValueError):
            self.back.close()


class ChildWriter:
    """Runs writes to ``store``'s folder in child processes; :meth:`wait` joins them.

    Writes go to the children in batches, in turn: between two waits they
    may run in any order, as on a pool of threads.

    Parameters
    ----------
    store
        The local store whose folder the children write; arguments that are
        this object reach a child as its own store of the same folder.
    processes
        How many children.

    Raises
    ------
    StoreError
        When a child cannot be started.

    """

    def __init__(self, store: LocalStore, processes: int = 1) -> None:
        self.store = store
        self._batch: list[tuple[Callable[..., None], tuple[object, ...]]] = []
        self._children: list[_Child] = []
        try:
            for _ in range(processes):
                self._children.append(_Child(store.root))
        except BaseException:
            self.abandon()
            raise
        self._turn = 0

    def submit(self, fn: Callable[..., None], *args: object) -> None:
        """Queue ``fn(*args)`` (module-level ``fn``, picklable ``args``) for a child."""
        self._batch.append((fn, args))
        if len(self._batch) >= BATCH:
            self._flush()

    def _flush(self) -> None:
        if not self._batch:
            return
        buffer = io.BytesIO()
        _Pickler(buffer, self.store).dump(self._batch)
        self._batch = []
        self._turn = (self._turn + 1) % len(self._children)
        self._children[self._turn].send(_RUN, buffer.getbuffer())

    def wait(self) -> None:
        """Return once every write submitted so far is stored; raise the first error."""
        self._flush()
        errors = [child.sync() for child in self._children]
        for error in errors:
            if error is not None:
                raise pickle.loads(error)

    def abandon(self) -> None:
        """Send nothing more; the children finish what they were sent, then exit."""
        self._batch = []
        for child in self._children:
            child.stop()


def _portable(exc: BaseException) -> bytes:
    """``exc`` pickled, or a :class:`StoreError` naming it when it does not survive pickling."""
    try:
        data = pickle.dumps(exc)
        pickle.loads(data)
        return data
    except Exception:
        return pickle.dumps(StoreError(f"{type(exc).__name__}: {exc}"))


def serve(root: str, incoming: BinaryIO, outgoing: BinaryIO) -> None:
    """The child's loop: run batches of writes to ``root``; answer each sync with ok or an error."""
    store = LocalStore(root)
    failed: bytes | None = None
    while (message := _receive(incoming)) is not None:
        kind, payload = message
        if kind == _SYNC:
            _send(outgoing, b"E" if failed else b"K", failed or b"")
            failed = None
            continue
        if failed is not None:
            continue
        for fn, args in _Unpickler(io.BytesIO(payload), store).load():
            try:
                fn(*args)
            except Exception as exc:
                traceback.print_exc(file=sys.stderr)
                failed = _portable(exc)
                break


def main() -> int:
    """``python -m static_dicomweb.offload ROOT``: the child of :class:`ChildWriter`."""
    # the pipe to the parent is a copy of standard output; print and logging go to standard error
    outgoing = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    serve(sys.argv[1], sys.stdin.buffer, outgoing)
    return 0


if __name__ == "__main__":
    sys.exit(main())
