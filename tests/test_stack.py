"""The compose stack, connected, as local processes: a Celery run into S3, read by MONAI Label and OHIF.

``docker-compose.yaml`` cannot be started here (no Docker engine runs on these machines and no
image can be pulled), so this runs what its services run, with the settings the file gives them,
on 127.0.0.1 and free ports:

- ``postgres`` and ``redis``: ``scripts/postgres.sh`` and ``scripts/redis.sh`` (Debian's packages);
- ``minio`` and ``minio-init``: moto's S3 server, bucket ``dicomweb`` readable anonymously;
- ``dicomweb``: its command from the file (``static-dicomweb serve s3://dicomweb/site
  --endpoint-url http://minio:9000 ... --viewer``, MinIO's keys, ``STOW_TOKEN``), started on the
  empty bucket before any run, as compose starts it; its health check from the file;
- ``airflow-apiserver``, ``-scheduler``, ``-dag-processor`` and ``-worker`` (``airflow celery
  worker``): their commands, with every environment variable of the file's ``x-airflow-common``
  (CeleryExecutor, ``aws_default`` on "MinIO", the Variable ``dicomweb_site_url``), each service
  host name replaced by its local address; the simple auth manager's passwords file written as
  the api-server's command writes it; the api-server's and the scheduler's health checks;
- ``dicomweb_site`` triggered through the REST API into ``s3://dicomweb/site`` as
  docs/deploy-airflow.md says; the run's "Open in viewer" link must be OHIF of ``dicomweb``;
- ``monailabel``: ``clients/monailabel/start.sh`` (the image's app, the same pins) with the file's
  ``--studies http://dicomweb:8042``, its ``--conf`` values and its ``MONAI_LABEL_*`` variables:
  it must list the run's CT series;
- OHIF at ``/viewer/`` of ``dicomweb`` in headless Chromium (``clients/ohif/viewer-test.mjs``):
  the study list, a study opened, CT pixels drawn.

Deviations, on purpose: no triggerer and no flower (the DAG defers nothing); the scheduler's
job schedule is off (unpausing would add a weekly run into the default destination /data/site,
which exists only in the image); the components' own ports (scheduler health, worker log server)
are free ports rather than 8974 and 8793, which other tests may hold.

Skipped, saying why, only where a piece cannot be installed here: PostgreSQL or Redis (the
scripts' exit 77), the MONAI Label virtualenv (``clients/monailabel/setup.sh``), OHIF's build,
node, playwright-core or Chromium (``clients/ohif/setup.sh``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
import yaml

from static_dicomweb_sample import SampleSpec, generate_sample

from .monailabel_server import CLIENT as MONAILABEL_CLIENT
from .monailabel_server import INSTALLED as MONAILABEL_INSTALLED
from .monailabel_server import monailabel_env, stop_group
from .test_compose import COMPOSE, env_of, interpolate
from .test_ohif import ohif_missing
from .test_s3 import moto_endpoint  # noqa: F401  (the moto S3 server fixture)
from .test_scheduler import (
    POSTGRES_SH,
    Airflow,
    _service,
    free_port,
    redis_url,  # noqa: F401  (the Redis broker fixture)
    stop,
    tail,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.clients,
              pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
AIRFLOW = str(BIN / "airflow")
OHIF = ROOT / "clients" / "ohif"
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / ".artifacts" / "stack"
DAG_ID = "dicomweb_site"
BUCKET, SITE = "dicomweb", "s3://dicomweb/site"
#: one patient: a topogram, two axial series, two Enhanced CT (multi-frame); 128 x 128 for OHIF
SPEC = SampleSpec(patients=1, slices=16, rows=128, columns=128)
TOKEN = "stack-test-stow-token"  # STOW_TOKEN: `dicomweb` takes labels, MONAI Label sends it
#: the compose services an Airflow component's settings may name, and the ones run here
AIRFLOW_RUN = {"api-server": "airflow-apiserver", "scheduler": "airflow-scheduler",
               "dag-processor": "airflow-dag-processor", "worker": "airflow-worker"}
SERVICE_HOST = re.compile(r"//(?:[^/@\s]*@)?(postgres|redis|minio|airflow-apiserver|dicomweb|monailabel)\b")
RUN_DEADLINE_S = 600.0
MONAILABEL_START_S = 300.0


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    return dict(loaded["services"])


def command_of(service: dict[str, Any]) -> list[str]:
    """A service's command as Compose runs it with no variables set."""
    command = service["command"]
    parts = shlex.split(command) if isinstance(command, str) else command
    return [interpolate(str(part)) for part in parts]


def run_healthcheck(service: dict[str, Any], local: dict[str, str]) -> None:
    """Run a service's ``CMD python -c ...`` health check with its ``localhost:PORT`` made local."""
    test = service["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"], test
    code = test[3]
    for address, here in local.items():
        code = code.replace(address, here)
    assert "localhost" not in code, f"health check not made local: {code}"
    check = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                           check=False)
    assert check.returncode == 0, f"health check {code!r} failed:\n{check.stderr[-2000:]}"


def started(args: list[str], env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:  # each process leads its own group: stop() ends the whole tree
        return subprocess.Popen(args, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


# -- postgres, redis, minio ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with _service(POSTGRES_SH, "PostgreSQL", "sdw-stack-pg-") as url:
        yield url


@pytest.fixture(scope="module")
def minio(moto_endpoint: str, services: dict[str, dict[str, Any]]) -> str:  # noqa: F811
    """moto in MinIO's place, set up as ``minio-init`` does: the bucket, anonymous read."""
    init = env_of(services["minio-init"])
    assert init["MINIO_BUCKET"] == BUCKET and command_of(services["dicomweb"])[2] == SITE
    keys = env_of(services["minio"])
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1",
                      aws_access_key_id=keys["MINIO_ROOT_USER"],
                      aws_secret_access_key=keys["MINIO_ROOT_PASSWORD"])
    s3.create_bucket(Bucket=BUCKET)
    # docker/minio-init.sh: `mc anonymous set download` (GetObject and ListBucket for anyone)
    s3.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
         "Resource": f"arn:aws:s3:::{BUCKET}/*"},
        {"Effect": "Allow", "Principal": "*", "Action": "s3:ListBucket",
         "Resource": f"arn:aws:s3:::{BUCKET}"}]}))
    return moto_endpoint


# -- dicomweb: serve s3://dicomweb/site --viewer ------------------------------------------------

@dataclass
class Front:
    """The ``dicomweb`` service running: its URL and its log."""

    url: str
    log: Path


@pytest.fixture(scope="module")
def dicomweb(minio: str, services: dict[str, dict[str, Any]],
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    service = services["dicomweb"]
    command = command_of(service)
    assert command[:2] == ["static-dicomweb", "serve"] and "--viewer" in command, command
    # the same command, on this machine: MinIO's address is moto's, 127.0.0.1, a port of its own
    local = [str(BIN / "static-dicomweb"), *command[1:]]
    local[local.index("--endpoint-url") + 1] = command[command.index("--endpoint-url") + 1].replace(
        "http://minio:9000", minio)
    local[local.index("--host") + 1] = "127.0.0.1"
    local[local.index("--port") + 1] = "0"
    assert "minio" not in " ".join(local), local
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "STATIC_DICOMWEB_"))}
    env.update(env_of(service))
    env["STATIC_DICOMWEB_STOW_TOKEN"] = TOKEN  # STOW_TOKEN set, as for the annotation loop
    # the image's ENV STATIC_DICOMWEB_OHIF_DIST=/opt/ohif-dist: here, clients/ohif/setup.sh's copy
    env["STATIC_DICOMWEB_OHIF_DIST"] = str(OHIF / "ohif-dist")
    folder = tmp_path_factory.mktemp("dicomweb")
    log = folder / "serve.log"
    proc = started(local, env, log, folder)
    try:
        def url() -> str | None:
            assert proc.poll() is None, f"serve exited {proc.returncode}: {log.read_text()}"
            found = re.search(r" at (http://127\.0\.0\.1:\d+)/ ", log.read_text())
            return found.group(1) if found else None

        front = Front(wait_for("serve s3://dicomweb/site to listen", url, 60, log.read_text), log)
        assert "STOW-RS on" in log.read_text()
        # compose's health check, on the empty site (MONAI Label may start before any DAG run)
        run_healthcheck(service, {"http://localhost:8042": front.url})
        assert requests.get(f"{front.url}/series", params={"Modality": "CT"}, timeout=30).json() == []
        yield front
    finally:
        stop([proc], folder)


# -- Airflow: api-server, scheduler, dag-processor, a Celery worker -----------------------------

def stack_airflow_env(services: dict[str, dict[str, Any]], name: str,
                      local: dict[str, str]) -> dict[str, str]:
    """A compose Airflow service's environment, every compose host name replaced by ``local``."""
    env = env_of(services[name])
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    out = {}
    for key, value in env.items():
        for address, here in local.items():
            value = value.replace(address, here)
        out[key] = value
    left = {k: v for k, v in out.items() if SERVICE_HOST.search(v)}
    assert not left, f"{name}: settings still naming a compose service: {left}"
    return out


def _local_addresses(services: dict[str, dict[str, Any]], postgres_url: str, broker_url: str, minio: str,
                     dicomweb: Front, url: str, home: Path) -> dict[str, str]:
    """Each compose address in Airflow's settings, and the local one that replaces it here."""
    common = env_of(services["airflow-scheduler"])
    # the compose values this replaces by local ones: the same kind of URL each
    assert common["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    assert postgres_url.startswith("postgresql+psycopg2://"), postgres_url
    assert common["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
    compose_db = common["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    return {
        f"db+{compose_db}": f"db+{postgres_url}", compose_db: postgres_url,
        common["AIRFLOW__CELERY__BROKER_URL"]: broker_url,
        "http://airflow-apiserver:8080": url, "http://minio:9000": minio,
        "http://monailabel:8000": "http://127.0.0.1:9",  # not run here; nothing calls it
        # the published address of `dicomweb` (DICOMWEB_PUBLIC_URL): the front's, here
        "http://127.0.0.1:8042": dicomweb.url,
        "/opt/airflow": str(home),
    }


def _airflow_envs(services: dict[str, dict[str, Any]], local: dict[str, str], url: str, home: Path,
                  health_port: int, log_port: int) -> dict[str, dict[str, str]]:
    """The environment of each Airflow component: compose's, on local addresses and folders."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "AWS_", "_AIRFLOW"))}
    base.update({
        "AIRFLOW_HOME": str(home),
        # compose mounts ./dags and ./plugins at /opt/airflow/dags and /opt/airflow/plugins
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__API__BASE_URL": url,
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(health_port),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(log_port),
    })
    return {component: {**base, **stack_airflow_env(services, name, local)}
            for component, name in AIRFLOW_RUN.items()}


def _admin_password_file(envs: dict[str, dict[str, str]]) -> tuple[str, str]:
    """Write what the api-server's command writes, the admin's password into the simple auth manager's
    file, and name that file to every component; the admin's user name and password."""
    api_env = envs["api-server"]
    user, password = api_env["_AIRFLOW_WWW_USER_USERNAME"], api_env["_AIRFLOW_WWW_USER_PASSWORD"]
    Path(api_env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]).write_text(
        json.dumps({user: password}) + "\n")
    for component in ("scheduler", "dag-processor", "worker"):
        envs[component]["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] = (
            api_env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
    return user, password


def _init_airflow(services: dict[str, dict[str, Any]], env: dict[str, str], home: Path) -> None:
    """Run airflow-init's script: migrate, the pools."""
    init = "\n".join(command_of(services["airflow-init"]))
    assert "airflow db migrate" in init and "python -m static_dicomweb_airflow.pools" in init
    migrate = subprocess.run([AIRFLOW, "db", "migrate"], env=env, cwd=home,
                             capture_output=True, text=True, timeout=300, check=False)
    assert migrate.returncode == 0, (migrate.stdout + migrate.stderr)[-3000:]
    subprocess.run([sys.executable, "-m", "static_dicomweb_airflow.pools"], env=env,
                   cwd=home, check=True, timeout=300, capture_output=True)


def _airflow_commands(services: dict[str, dict[str, Any]], port: int) -> dict[str, list[str]]:
    """The airflow subcommand of each component: compose's, the api-server on 127.0.0.1:``port``."""
    commands = {"api-server": ["api-server", "--host", "127.0.0.1", "--port", str(port)]}
    for component in ("scheduler", "dag-processor", "worker"):
        command = command_of(services[AIRFLOW_RUN[component]])
        assert command[0] == "airflow", command
        commands[component] = command[1:]
    assert commands["worker"] == ["celery", "worker"]
    return commands


@pytest.fixture(scope="module")
def airflow(services: dict[str, dict[str, Any]], postgres_url: str, redis_url: str, minio: str,  # noqa: F811
            dicomweb: Front, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Airflow]:
    home = tmp_path_factory.mktemp("stack-airflow")
    (home / "logs").mkdir()
    port, health_port, log_port = free_port(), free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    local = _local_addresses(services, postgres_url, redis_url, minio, dicomweb, url, home)
    envs = _airflow_envs(services, local, url, home, health_port, log_port)
    assert envs["worker"]["AIRFLOW_VAR_DICOMWEB_SITE_URL"] == dicomweb.url
    assert json.loads(envs["worker"]["AIRFLOW_CONN_AWS_DEFAULT"])["extra"]["endpoint_url"] == minio
    user, password = _admin_password_file(envs)
    _init_airflow(services, envs["scheduler"], home)
    commands = _airflow_commands(services, port)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for component, args in commands.items():
            processes.append(started([AIRFLOW, *args], envs[component], home / "logs" / f"{component}.log",
                                     home))
        deployment = Airflow(url, home, requests.Session(), "CeleryExecutor",
                             {p.pid: c for p, c in zip(processes, commands, strict=True)}, ("worker",))

        def up() -> bool | None:
            for proc in processes:
                assert proc.poll() is None, f"{proc.args} exited {proc.returncode}\n{deployment.logs()}"
            with contextlib.suppress(requests.RequestException, ValueError):
                health = requests.get(f"{url}/api/v2/monitor/health", timeout=5).json()
                if all((health.get(part) or {}).get("status") == "healthy"
                       for part in ("metadatabase", "scheduler", "dag_processor")):
                    worker_log = (home / "logs" / "worker.log").read_text(errors="replace")
                    return True if " ready." in worker_log else None
            return None

        wait_for("api-server, scheduler, dag-processor and the Celery worker", up, 240, deployment.logs)
        # compose's health checks of the api-server and the scheduler
        run_healthcheck(services["airflow-apiserver"], {"http://localhost:8080": url})
        run_healthcheck(services["airflow-scheduler"], {"http://localhost:8974": f"http://127.0.0.1:{health_port}"})
        deployment.log_in(user, password)
        yield deployment
    finally:
        stop(processes, home)
        shutil.rmtree(ARTIFACTS / "airflow-logs", ignore_errors=True)
        shutil.copytree(home / "logs", ARTIFACTS / "airflow-logs", dirs_exist_ok=True)


# -- MONAI Label -------------------------------------------------------------------------------

@contextlib.contextmanager
def monailabel(services: dict[str, dict[str, Any]], front: str, work: Path) -> Iterator[str]:
    """``monailabel`` as compose configures it, through clients/monailabel/start.sh (the image's app)."""
    service = services["monailabel"]
    command = command_of(service)
    assert command[command.index("--studies") + 1] == "http://dicomweb:8042"
    confs = {command[i + 1]: command[i + 2] for i, part in enumerate(command) if part == "--conf"}
    # start.sh passes these three itself (models through MONAILABEL_MODELS)
    assert {k: v for k, v in confs.items() if k != "models"} == {"use_pretrained_model": "false",
                                                                  "sam2": "false"}, confs
    script = (MONAILABEL_CLIENT / "start.sh").read_text()
    assert "--conf use_pretrained_model false --conf sam2 false" in script
    port = free_port()
    work.mkdir(parents=True, exist_ok=True)
    env = monailabel_env(work / "ml", TOKEN)
    compose_env = env_of(service)
    compose_env["MONAI_LABEL_DICOMWEB_PASSWORD"] = TOKEN  # ${STOW_TOKEN}
    env.update(compose_env)
    env["MONAILABEL_MODELS"] = confs["models"]
    log = work / "monailabel.log"
    url = f"http://127.0.0.1:{port}"
    proc = started(["bash", str(MONAILABEL_CLIENT / "start.sh"), front, str(port)], env, log, work)
    try:
        def up() -> bool | None:
            assert proc.poll() is None, f"MONAI Label exited {proc.returncode}\n{tail(log)}"
            with contextlib.suppress(requests.RequestException):
                # compose's health check asks /info/
                if requests.get(f"{url}/info/", timeout=10).status_code == 200:
                    return True
            return None

        wait_for("MONAI Label to answer /info/", up, MONAILABEL_START_S, lambda: tail(log))
        run_healthcheck(service, {"http://localhost:8000": url})
        yield url
    finally:
        stop_group(proc)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(log, ARTIFACTS / "monailabel.log")


@pytest.fixture(scope="module", autouse=True)
def _clients_installed() -> None:
    """Skip (before any server starts) when a client this test drives cannot run here."""
    reason = ohif_missing()
    if reason:
        pytest.skip(f"OHIF: {reason}")
    if not MONAILABEL_INSTALLED.is_file():
        pytest.skip("MONAI Label's virtualenv is missing: run clients/monailabel/setup.sh")


# -- the run -----------------------------------------------------------------------------------

def test_dag_to_minio_to_the_front_to_monai_label_and_ohif(
        airflow: Airflow, dicomweb: Front, services: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    source = tmp_path / "input"
    generate_sample(source, SPEC)
    instances = len(list(source.rglob("*.dcm")))
    front = dicomweb.url
    expiry = float(env_of(services["monailabel"])["MONAI_LABEL_DICOMWEB_CACHE_EXPIRY"])
    # MONAI Label starts as compose starts it: before any run, on the empty site
    with monailabel(services, front, tmp_path / "monailabel") as ml:
        assert _monailabel_stats(ml)["total"] == 0  # and MONAI Label now keeps that empty list for `expiry` s
        run_path = _run_the_dag(airflow, source, tmp_path / "downloads")
        ct = _check_the_front_answers_the_site(front, instances)
        links = _check_the_run_links(airflow, run_path, front, instances)
        _check_monai_label_reads_the_run(ml, ct, expiry, tmp_path / "monailabel" / "monailabel.log")
    assert "Authorization" not in dicomweb.log.read_text()  # the token is never logged
    _check_ohif_shows_the_site(links["Open in viewer"], front, tmp_path / "ohif")


def _monailabel_stats(ml: str) -> dict[str, Any]:
    """MONAI Label's datastore statistics (``GET /datastore/?output=stats``)."""
    answer = requests.get(f"{ml}/datastore/", params={"output": "stats"}, timeout=120)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def _run_the_dag(airflow: Airflow, source: Path, downloads: Path) -> str:
    """Trigger the DAG as docs/deploy-airflow.md does, on ``source``; wait for its success; the run's
    API path."""
    # docs/deploy-airflow.md's trigger, with this machine's paths
    run_path = airflow.trigger(DAG_ID, {
        "source": str(source), "destination": SITE, "skip_localizers": False, "batch_size": 2,
        "download_dir": str(downloads)}, serialize_s=180)
    started_at = time.monotonic()

    def diagnose() -> str:
        tis = airflow.api("GET", f"{run_path}/taskInstances", params={"limit": 1000})["task_instances"]
        return "\n".join(f"{t['task_id']}[{t['map_index']}] {t['state']} try {t['try_number']} "
                         f"{t.get('hostname')}" for t in tis) + "\n" + airflow.logs()

    final = wait_for("the dicomweb_site run to finish", lambda: (
        r if (r := airflow.api("GET", run_path))["state"] in ("success", "failed") else None),
        RUN_DEADLINE_S, diagnose, interval=1.0)
    assert final["state"] == "success", diagnose()
    print(f"dicomweb_site run (CeleryExecutor) into {SITE}: {time.monotonic() - started_at:.1f} s")
    assert airflow.workloads()["worker"] > 0, "the Celery worker ran no task"
    return run_path


def _check_the_front_answers_the_site(front: str, instances: int) -> list[dict[str, Any]]:
    """The front answers the site the run wrote into "MinIO", with the query routing; its CT series."""
    studies = requests.get(f"{front}/studies", timeout=30).json()
    ct: list[dict[str, Any]] = requests.get(f"{front}/series", params={"Modality": "CT"}, timeout=30).json()
    ct_uids = sorted(s["0020000E"]["Value"][0] for s in ct)
    assert len(studies) == SPEC.patients and len(ct_uids) == 5, (studies, ct)
    manifest = requests.get(f"{front}/_site/manifest.json", timeout=30).json()
    assert manifest["counts"]["instances"] == instances, manifest
    return ct


def _check_the_run_links(airflow: Airflow, run_path: str, front: str, instances: int) -> dict[str, str]:
    """The run's links: OHIF of `dicomweb` and the site's own report, served by the front."""
    links: dict[str, str] = airflow.api("GET", f"{run_path}/taskInstances/publish/links")["extra_links"]
    assert links["Open in viewer"] == f"{front}/viewer/", links
    assert links["Validation report"] == f"{front}/_site/validation-report.json", links
    report = requests.get(links["Validation report"], timeout=30).json()
    assert report["ok"] and report["checked"]["instances"] == instances, report
    assert requests.get(links["Open in viewer"], timeout=30).status_code == 200
    return links


def _check_monai_label_reads_the_run(ml: str, ct: list[dict[str, Any]], expiry: float, log: Path) -> None:
    """MONAI Label lists the run's CT series once its cached list expires, and reads one."""
    listed_at = time.monotonic()
    counted = wait_for("MONAI Label to list the run's CT series",
                       lambda: s if (s := _monailabel_stats(ml))["total"] == len(ct) else None,
                       expiry + 120, lambda: tail(log), interval=2.0)
    print(f"MONAI Label lists {counted['total']} series {time.monotonic() - listed_at:.0f} s after "
          f"the run (cache expiry {expiry:.0f} s): {counted}")
    axial = next(s["0020000E"]["Value"][0] for s in ct
                 if s.get("00201209", {}).get("Value", [0])[0] == SPEC.slices)
    info = requests.get(f"{ml}/datastore/image/info", params={"image": axial}, timeout=120)
    assert info.status_code == 200, info.text
    image = requests.get(f"{ml}/datastore/image", params={"image": axial}, timeout=300)
    assert image.status_code == 200 and len(image.content) > 1000, image.text[:500]
    objects = requests.get(f"{ml}/datastore/", params={"output": "all"}, timeout=120).json()["objects"]
    assert axial in objects, sorted(objects)


def _check_ohif_shows_the_site(viewer_url: str, front: str, out: Path) -> None:
    """OHIF at /viewer/ of the front, same origin, in Chromium: the study, a series, CT pixels."""
    viewer = subprocess.run(
        ["node", str(OHIF / "viewer-test.mjs"), "--ohif", viewer_url, "--site", front,
         "--out", str(out), "--timeout", "120"],
        cwd=OHIF, capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "CHROMIUM": str(CHROMIUM)})
    shutil.rmtree(ARTIFACTS / "ohif", ignore_errors=True)
    if out.exists():
        shutil.copytree(out, ARTIFACTS / "ohif")
    said = f"{viewer.stdout}\n{viewer.stderr[-3000:]}\nartefacts: {ARTIFACTS / 'ohif'}"
    assert viewer.returncode == 0, said
    result = json.loads((out / "result.json").read_text())
    assert result["ok"] and result["steps"]["studyList"]["rows"] == SPEC.patients, said
    assert result["requests"]["site"] > 0 and result["requests"]["failed"] == [], said
    assert all(s["ok"] for s in result["steps"]["series"]), said
    canvas = result["steps"]["viewport"]["canvas"]
    assert canvas and canvas["distinctValues"] > 16 and canvas["max"] > canvas["min"], canvas
    assert (ARTIFACTS / "ohif" / "3-viewer.png").stat().st_size > 10_000
