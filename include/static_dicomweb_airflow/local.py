"""Run Airflow's four components for local use (``make airflow``) and stop them on Ctrl-C.

``python -m static_dicomweb_airflow.local`` starts ``airflow api-server``,
``scheduler``, ``dag-processor`` and ``triggerer`` with the environment's
``AIRFLOW_HOME`` (written by :mod:`static_dicomweb_airflow.home`), prefixes each line
they print with its name, prints the URL and the login once the api-server answers,
and on SIGINT or SIGTERM stops them all (SIGTERM to each component's process group,
SIGKILL to what is left after a grace period) and returns.  ``airflow standalone``
does the same but waited forever here after its components had exited.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

from .home import wait_and_print

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
GRACE_S = 30.0


def _relay(name: str, stream: IO[bytes]) -> None:
    prefix = f"{name:<13} | ".encode()
    for line in iter(stream.readline, b""):
        sys.stdout.buffer.write(prefix + line)
        sys.stdout.buffer.flush()


def run(home: Path) -> int:
    """Run the components until a signal or until one of them exits; 0 after a signal."""
    airflow = str(Path(sys.executable).with_name("airflow"))
    env = {**os.environ, "AIRFLOW_HOME": str(home),
           # the components start helpers by name (`airflow ...`): this virtualenv's first
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name in COMPONENTS:
            # a session each: Ctrl-C reaches only this process, which stops them in order
            proc = subprocess.Popen([airflow, name], env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            procs[name] = proc
            assert proc.stdout is not None
            threading.Thread(target=_relay, args=(name, proc.stdout), daemon=True).start()
        threading.Thread(target=wait_and_print, args=(home,), daemon=True).start()
        while not stop.wait(1.0):
            exited = [n for n, p in procs.items() if p.poll() is not None]
            if exited:
                print(f"airflow {exited[0]} exited with status {procs[exited[0]].returncode}; "
                      "stopping the others", file=sys.stderr, flush=True)
                return 1
        return 0
    finally:
        _stop(procs)


def _stop(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    """SIGTERM each component's process group, wait, then SIGKILL what is left."""
    for proc in procs.values():
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for name, proc in procs.items():
        try:
            proc.wait(GRACE_S)
        except subprocess.TimeoutExpired:
            print(f"airflow {name} did not stop in {GRACE_S:.0f} s: killed", file=sys.stderr)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    print("Airflow stopped.", flush=True)


def main() -> None:
    """Command line: run Airflow from ``$AIRFLOW_HOME`` (default: the repository's ``.airflow``)."""
    from .home import ROOT

    sys.exit(run(Path(os.environ.get("AIRFLOW_HOME") or ROOT / ".airflow").resolve()))


if __name__ == "__main__":
    main()
