"""A real Airflow deployment runs ``dicomweb_site`` and survives ``kill -9`` of a convert task.

The api-server, the scheduler and the dag-processor run as separate processes on a PostgreSQL
metadata database (``scripts/postgres.sh``: installed from the distribution's packages when
missing, started on 127.0.0.1), in two variants: the LocalExecutor (the scheduler runs the
tasks), and the CeleryExecutor with a Redis broker (``scripts/redis.sh``, the same way) and two
``airflow celery worker`` processes, so a task may run on either.  Each variant has its own
PostgreSQL server.  The DAG is unpaused and triggered through the REST API v2; once a mapped
``convert`` task instance is running and has written part of its series, its task process (the
pid the API gives, checked by its command line and by which started process it descends from)
gets SIGKILL.  The retry (the DAG's own retry policy) must succeed, and the final site must
equal, object by object (bytes and headers), the site ``static-dicomweb convert`` makes from the
same input.  Skipped only when PostgreSQL (or, for Celery, Redis) cannot be installed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import pytest
import requests
from pydicom import dcmread

from static_dicomweb.store import LocalStore
from static_dicomweb_sample import SampleSpec, generate_sample

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
AIRFLOW = str(BIN / "airflow")
POSTGRES_SH = ROOT / "scripts" / "postgres.sh"
REDIS_SH = ROOT / "scripts" / "redis.sh"
CANNOT_BE_INSTALLED = 77  # scripts/postgres.sh's and scripts/redis.sh's exit status for "skip"
EXECUTORS = ("LocalExecutor", "CeleryExecutor")
#: the CeleryExecutor variant's workers: 2 x 2 task slots, as many as [core] parallelism
CELERY_WORKERS, CELERY_CONCURRENCY = 2, 2
DAG_ID = "dicomweb_site"
#: 4 series of 120 slices (and 4 small ones): a big convert task runs ~4 s on 2 cores, ~1 s of
#: it writing, so the test sees it mid-write without slowing the task down
SPEC = SampleSpec(patients=2, slices=120, rows=128, columns=128)
#: objects whose content differs between any two runs (timings, paths)
REPORTS = {"_site/conversion-report.json", "_site/validation-report.json",
           "_site/validation-report.html"}
DEADLINE_S = 240.0  # from the trigger to the end of the run, retry delay (10-20 s) included

T = TypeVar("T")

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no file)"


def wait_for(what: str, probe: Callable[[], T | None], timeout: float,
             diagnose: Callable[[], str] = lambda: "", interval: float = 0.25) -> T:
    """Poll ``probe`` until it returns something other than None (no fixed sleeps elsewhere)."""
    end = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{diagnose()}")
        time.sleep(interval)


# -- PostgreSQL and Redis ------------------------------------------------------------------------

@pytest.fixture(scope="module", params=EXECUTORS)
def executor(request: pytest.FixtureRequest) -> str:
    """The variant: each gets a deployment of its own (and a PostgreSQL server of its own)."""
    return str(request.param)


@contextlib.contextmanager
def _service(script: Path, name: str, prefix: str) -> Iterator[str]:
    """Install and start a server with ``script start DIR PORT``; yield the URL it prints; stop it."""
    # not pytest's tmp_path: run as root a server may run as another user (PostgreSQL runs as
    # `postgres`), which cannot reach a folder under /tmp/pytest-of-root (0700); mkdtemp gives a
    # folder it can be handed, and a short path (Redis's Unix socket DIR/redis.sock must fit in
    # 107 bytes)
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    start = time.monotonic()
    out = subprocess.run(["bash", str(script), "start", str(folder), str(free_port())],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=900,
                         check=False)
    print(f"scripts/{script.name}: {time.monotonic() - start:.1f} s\n{out.stderr}")
    try:
        if out.returncode == CANNOT_BE_INSTALLED:
            pytest.skip(f"{name} cannot be installed here: {out.stderr.strip()[-500:]}")
        assert out.returncode == 0, f"scripts/{script.name} failed ({out.returncode}):\n{out.stderr}"
        yield out.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run(["bash", str(script), "stop", str(folder)], stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=120, check=False)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres_url(executor: str) -> Iterator[str]:
    # one server for each executor variant (hence the argument): each starts on an empty database
    with _service(POSTGRES_SH, "PostgreSQL", "sdw-postgres-") as url:
        yield url


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """The CeleryExecutor's broker (only that variant asks for it)."""
    with _service(REDIS_SH, "Redis", "sdw-redis-") as url:
        yield url


# -- Airflow -------------------------------------------------------------------------------------

@dataclass
class Airflow:
    """A running deployment: its REST API, where its logs are, the processes it started."""

    url: str
    home: Path
    session: requests.Session
    executor: str
    #: pid → name ("scheduler", "worker-1", ...) of each process the fixture started
    started: dict[int, str]
    #: the names of those the task processes run under: the scheduler (LocalExecutor), the workers
    task_hosts: tuple[str, ...]

    def trigger(self, dag_id: str, conf: dict[str, Any], serialize_s: float) -> str:
        """Unpause ``dag_id`` once the dag-processor has serialized it and trigger a run with ``conf``;
        the run's API path."""
        wait_for(f"the dag-processor to serialize {dag_id}",
                 lambda: True if self.session.get(f"{self.url}/api/v2/dags/{dag_id}",
                                                  timeout=30).status_code == 200 else None,
                 serialize_s, self.logs)
        self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
        run = self.api("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf})
        return f"/dags/{dag_id}/dagRuns/{quote(run['dag_run_id'], safe='')}"

    def log_in(self, user: str, password: str) -> None:
        """Send the JWT of ``user`` with every request of the session (Simple auth manager)."""
        token = requests.post(f"{self.url}/auth/token", json={"username": user, "password": password},
                              timeout=30)
        assert token.status_code == 201, token.text
        self.session.headers["Authorization"] = f"Bearer {token.json()['access_token']}"

    def worker_of(self, ti_id: str) -> list[str]:
        """The Celery workers whose logs show they took the task instance (one try) ``ti_id``."""
        return [name for name in self.task_hosts
                if f"id=UUID('{ti_id}')" in (self.home / "logs" / f"{name}.log").read_text(errors="replace")]

    def workloads(self) -> dict[str, int]:
        """How many task workloads each Celery worker took (its log says so for each)."""
        return {name: (self.home / "logs" / f"{name}.log").read_text(errors="replace")
                .count("Executing workload in Celery") for name in self.task_hosts}

    def api(self, method: str, path: str, expect: tuple[int, ...] = (200,), **kw: Any) -> Any:
        response = self.session.request(method, f"{self.url}/api/v2{path}", timeout=30, **kw)
        assert response.status_code in expect, (
            f"{method} /api/v2{path}: {response.status_code} {response.text[:1000]}")
        return response.json() if response.content else None

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} (last lines)\n{tail(p)}"
                         for p in sorted((self.home / "logs").glob("*.log")))


def parent(pid: int) -> int | None:
    try:  # /proc/PID/stat: "pid (comm) state ppid ...", comm may hold spaces and parentheses
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def started_by(pid: int, started: dict[int, str]) -> str | None:
    """The name of the started process ``pid`` descends from (None: none, or it is gone)."""
    current: int | None = pid
    while current and current > 1:
        if current in started:
            return started[current]
        current = parent(current)
    return None


def kill_leftovers(home: Path) -> None:
    """SIGKILL any process still running with this AIRFLOW_HOME (task processes start sessions)."""
    marker = f"AIRFLOW_HOME={home}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                os.kill(int(entry.name), signal.SIGKILL)


def stop(processes: list[subprocess.Popen[bytes]], home: Path) -> None:
    for proc in processes:  # each leads its own process group (start_new_session)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    end = time.monotonic() + 30
    for proc in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.1, end - time.monotonic()))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    kill_leftovers(home)


@pytest.fixture(scope="module")
def airflow(executor: str, postgres_url: str, tmp_path_factory: pytest.TempPathFactory,
            request: pytest.FixtureRequest) -> Iterator[Airflow]:
    assert importlib.util.find_spec("asyncpg"), (
        "Airflow 3.3 on PostgreSQL needs asyncpg (its async engine): add it to requirements.txt")
    home = tmp_path_factory.mktemp("airflow-home")
    (home / "logs").mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    password = secrets.token_urlsafe(16)
    (home / "passwords.json").write_text(json.dumps({"admin": password}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": postgres_url,
        "AIRFLOW__CORE__EXECUTOR": executor,
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": "4",
        # the components sign and check each other's JWTs (task identity on the Execution API)
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__API__BASE_URL": url,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        # parse the DAG once (one DAG version for the run, less CPU on small CI machines)
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",
        # the weekly schedule would add a run of its own on unpause: manual runs only
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
    })
    components = [("api-server", ["api-server", "--host", "127.0.0.1", "--port", str(port)]),
                  ("scheduler", ["scheduler"]), ("dag-processor", ["dag-processor"])]
    if executor == "CeleryExecutor":
        assert postgres_url.startswith("postgresql+psycopg2://"), postgres_url
        env.update({
            "AIRFLOW__CELERY__BROKER_URL": request.getfixturevalue("redis_url"),
            # the driver named: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3 (not installed)
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{postgres_url}",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(CELERY_CONCURRENCY),
        })
        # one machine, several workers: a Celery node name each (-H); no log server (each would
        # take port 8793; the task logs are files in the shared AIRFLOW_HOME/logs anyway)
        components += [(f"worker-{n}", ["celery", "worker", "-H", f"worker-{n}@%h",
                                        "--concurrency", str(CELERY_CONCURRENCY),
                                        "--skip-serve-logs", "--without-mingle", "--without-gossip"])
                       for n in range(1, CELERY_WORKERS + 1)]
    migrate = subprocess.run([AIRFLOW, "db", "migrate"], env=env, cwd=home, capture_output=True,
                             text=True, timeout=300, check=False)
    assert migrate.returncode == 0, (migrate.stdout + migrate.stderr)[-3000:]
    subprocess.run([sys.executable, "-m", "static_dicomweb_airflow.pools"], env=env, cwd=home,
                   check=True, timeout=300)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for name, args in components:
            with open(home / "logs" / f"{name}.log", "wb") as log:
                processes.append(subprocess.Popen([AIRFLOW, *args], env=env, cwd=home,
                                                  stdin=subprocess.DEVNULL, stdout=log,
                                                  stderr=subprocess.STDOUT, start_new_session=True))
        workers = tuple(name for name, _ in components if name.startswith("worker-"))
        deployment = Airflow(url, home, requests.Session(), executor,
                             {proc.pid: name for proc, (name, _) in zip(processes, components,
                                                                         strict=True)},
                             workers or ("scheduler",))

        def running() -> None:
            for proc in processes:
                assert proc.poll() is None, f"{proc.args} exited {proc.returncode}\n{deployment.logs()}"

        def healthy() -> bool | None:
            running()
            with contextlib.suppress(requests.RequestException, ValueError):
                health = requests.get(f"{url}/api/v2/monitor/health", timeout=5).json()
                if all((health.get(part) or {}).get("status") == "healthy"
                       for part in ("metadatabase", "scheduler", "dag_processor")):
                    return True
            return None

        wait_for("api-server, scheduler and dag-processor to be healthy", healthy, 180,
                 deployment.logs)

        def ready() -> bool | None:  # Celery's "NODE ready." in each worker's log: consuming
            running()
            return True if all(" ready." in (home / "logs" / f"{name}.log").read_text(errors="replace")
                               for name in workers) else None

        if workers:
            wait_for(f"Celery workers {', '.join(workers)} to be ready", ready, 120, deployment.logs)
        deployment.log_in("admin", password)
        yield deployment
    finally:
        stop(processes, home)


# -- the test ------------------------------------------------------------------------------------

def site_objects(root: Path) -> dict[str, tuple[bytes, dict[str, str] | None]]:
    store = LocalStore(root)
    return {k: (store.get(k), store.headers(k)) for k in store.walk() if k not in REPORTS}


def when(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(900)  # includes installing PostgreSQL (and Redis) on a fresh machine
def test_kill_9_of_a_convert_task_is_retried_to_the_same_site(airflow: Airflow, tmp_path: Path) -> None:
    source, site = tmp_path / "in", tmp_path / "dag-site"
    generate_sample(source, SPEC)
    run_path = airflow.trigger(DAG_ID, {
        # the CLI converts every series: so must the DAG (its default leaves out 1-3 image series)
        "source": str(source), "destination": str(site), "batch_size": 1,
        "skip_localizers": False, "download_dir": str(tmp_path / "downloads")}, serialize_s=120)
    # what each mapped convert converts: the return value of the task feeding it (mapped or not)
    feeder = next(t for t in airflow.api("GET", f"/dags/{DAG_ID}/tasks")["tasks"]
                  if "convert" in t["downstream_task_ids"])
    converts = ConvertTasks(airflow, run_path, site, feeder)

    killed = wait_for("a convert task instance running and mid-write", converts.kill_one_mid_write,
                      DEADLINE_S, converts.diagnose, interval=0.05)
    print(f"SIGKILL convert[{killed['map_index']}] pid {killed['pid']} (under {killed['owner']}) "
          f"after {killed['written_when_killed']} of {killed['batch_size']} instances")

    final = wait_for("the DAG run to finish", lambda: (
        r if (r := airflow.api("GET", run_path))["state"] in ("success", "failed") else None),
        DEADLINE_S, converts.diagnose, interval=1.0)
    assert final["state"] == "success", converts.diagnose()
    check_the_retry(airflow, run_path, killed)
    check_same_site_as_the_cli(source, site, tmp_path / "cli-site")


@dataclass
class ConvertTasks:
    """The mapped convert task instances of one DAG run, and what each converts."""

    airflow: Airflow
    run_path: str
    site: Path
    #: the task whose return value feeds convert (mapped or not)
    feeder: dict[str, Any]
    inputs: dict[int, tuple[list[str], str]] = field(default_factory=dict)

    def task_instances(self) -> list[dict[str, Any]]:
        listed = self.airflow.api("GET", f"{self.run_path}/taskInstances", params={"limit": 1000})
        return list(listed["task_instances"])

    def diagnose(self) -> str:
        rows = [f"{t['task_id']}[{t['map_index']}] {t['state']} try {t['try_number']}"
                for t in self.task_instances()]
        return "\n".join(rows) + "\n" + self.airflow.logs()

    def files_and_series(self, map_index: int) -> tuple[list[str], str]:
        """The files of convert[map_index] and the site folder of their series (batch_size 1)."""
        if map_index not in self.inputs:
            xcom = f"{self.run_path}/taskInstances/{self.feeder['task_id']}/xcomEntries/return_value"
            if self.feeder["is_mapped"]:
                files = self.airflow.api("GET", xcom, params={"map_index": map_index})["value"]
            else:
                files = self.airflow.api("GET", xcom)["value"][map_index]
            ds = dcmread(files[0], stop_before_pixels=True,
                         specific_tags=["StudyInstanceUID", "SeriesInstanceUID"])
            self.inputs[map_index] = (files, f"studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}")
        return self.inputs[map_index]

    def kill_one_mid_write(self) -> dict[str, Any] | None:
        """SIGKILL a running convert of a big series that has written some instances, not all."""
        converts = [t for t in self.task_instances() if t["task_id"] == "convert"]
        for ti in converts:
            victim = self.mid_write(ti)
            if victim is not None:
                os.kill(ti["pid"], signal.SIGKILL)
                return victim
        if converts and all(t["state"] in ("success", "failed", "upstream_failed") for t in converts):
            pytest.fail("every convert task finished before one was caught mid-write: make SPEC "
                        f"bigger\n{self.diagnose()}")
        return None

    def mid_write(self, ti: dict[str, Any]) -> dict[str, Any] | None:
        """``ti`` with what it wrote and where it runs, if it runs now, mid-way through a big series."""
        if ti["state"] != "running" or not ti["pid"]:
            return None
        files, series = self.files_and_series(ti["map_index"])
        # instances whose metadata is written, through the store (whatever its key → file rule)
        done = sum(1 for key in LocalStore(self.site).walk(f"{series}/instances/")
                   if key.endswith("/metadata"))
        if len(files) < SPEC.slices or not 0 < done < len(files):
            return None
        try:  # the task runner itself, titled "airflow worker -- TI_ID" (its supervisor is
            # "airflow worker -- LocalExecutor: ..." or a Celery pool process)
            cmdline = Path(f"/proc/{ti['pid']}/cmdline").read_bytes().decode(errors="replace")
        except FileNotFoundError:
            return None
        if ti["id"] not in cmdline or "LocalExecutor" in cmdline:
            return None
        # a process of this deployment: the LocalExecutor runs tasks under the scheduler,
        # Celery under either worker
        owner = started_by(ti["pid"], self.airflow.started)
        if owner is None:  # gone meanwhile
            return None
        assert owner in self.airflow.task_hosts, f"pid {ti['pid']} ({cmdline!r}) runs under {owner}"
        return {**ti, "written_when_killed": done, "batch_size": len(files), "owner": owner}


def check_the_retry(airflow: Airflow, run_path: str, killed: dict[str, Any]) -> None:
    """The killed task instance failed its first try and succeeded in its second, after the retry delay
    (with Celery: every worker took tasks)."""
    ti_path = f"{run_path}/taskInstances/convert/{killed['map_index']}"
    ti = airflow.api("GET", ti_path)
    assert (ti["state"], ti["try_number"]) == ("success", 2), ti
    tries = sorted(airflow.api("GET", f"{ti_path}/tries")["task_instances"],
                   key=lambda t: t["try_number"])
    assert [t["try_number"] for t in tries] == [1, 2], tries
    assert tries[0]["state"] in ("up_for_retry", "failed") and tries[0]["pid"] == killed["pid"], tries
    # the DAG's retry_delay (10 s, exponential backoff) held the retry back
    assert (when(tries[1]["start_date"]) - when(tries[0]["end_date"])).total_seconds() >= 10, tries
    if airflow.executor == "CeleryExecutor":
        # 4 downloads, then 4 converts, at a time (parallelism 4): more than one worker's slots
        taken = airflow.workloads()
        print(f"task workloads per Celery worker: {taken}; try 1 of convert[{killed['map_index']}] "
              f"on {killed['owner']}, try 2 on {', '.join(airflow.worker_of(ti['id'])) or '?'}")
        assert len(taken) == CELERY_WORKERS and all(taken.values()), taken


def check_same_site_as_the_cli(source: Path, site: Path, clean: Path) -> None:
    """``site`` holds the objects, byte for byte, that the CLI converts from ``source`` into ``clean``."""
    cli = subprocess.run([str(BIN / "static-dicomweb"), "convert", str(source), "--out", str(clean)],
                         capture_output=True, text=True, timeout=300, check=False)
    assert cli.returncode == 0, cli.stderr[-3000:]
    expected, got = site_objects(clean), site_objects(site)
    assert sorted(got) == sorted(expected), (
        f"missing {sorted(set(expected) - set(got))[:10]}, extra {sorted(set(got) - set(expected))[:10]}")
    differ = [k for k in expected if got[k] != expected[k]]
    assert not differ, f"{len(differ)} objects differ, e.g. {differ[:10]}"
