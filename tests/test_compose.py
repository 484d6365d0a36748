"""docker-compose.yaml: a real Compose parser accepts it, and it has the agreed shape.

No Docker engine is needed: ``scripts/compose-check.sh`` runs ``docker-compose config -q``
(Debian's docker-compose 1.29.2, installed with apt-get when missing; Compose v2 as well where its
plugin exists), which loads the file with its anchors, merge keys and variable defaults and checks
every service against the Compose schema.  The rest reads the file with PyYAML (which resolves the
same anchors and merge keys) and checks what the deployment relies on: CeleryExecutor, the image
built from ./Dockerfile, ports on 127.0.0.1 only, MinIO's bucket made after MinIO, MONAI Label in
its own image, and the connections: the DAG's connection, the `dicomweb` front on the bucket with
OHIF, MONAI Label and the runs' viewer link on that front, the nginx profile on the DAG's folder
site; and that docs/deploy-airflow.md says what the file does.  tests/test_stack.py runs the
services' commands as local processes.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yaml"
CHECK = ROOT / "scripts" / "compose-check.sh"
PARSER_CANNOT_BE_INSTALLED = 77  # compose-check.sh's exit status for "skip"

AIRFLOW_SERVICES = ("airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                    "airflow-worker", "airflow-triggerer")
SERVICES = (*AIRFLOW_SERVICES, "postgres", "redis", "minio", "minio-init", "dicomweb", "monailabel",
            "dicomweb-nginx", "dicomweb-folder")
DOCS = ROOT / "docs" / "deploy-airflow.md"
SITE = "s3://dicomweb/site"  # what the DAG writes in the stack and `dicomweb` serves
_VARIABLE = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def interpolate(value: str) -> str:
    """A value as Compose resolves it with no variables set.

    Each ``${VAR:-default}`` becomes its default (``${VAR}``: empty), and ``$$`` a literal ``$``.
    """
    return _VARIABLE.sub(lambda m: m.group(2) or "", value.replace("$$", "\0")).replace("\0", "$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the KEY=VALUE list form
        env = dict(item.split("=", 1) for item in env)
    return {k: interpolate(str(v)) for k, v in env.items()}


def test_a_real_compose_parser_accepts_the_file() -> None:
    run = subprocess.run(["bash", str(CHECK)], cwd=ROOT, stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, timeout=600, check=False)
    output = (run.stdout + run.stderr).strip()
    if run.returncode == PARSER_CANNOT_BE_INSTALLED:
        pytest.skip(f"no Compose parser here and none could be installed: {output}")
    assert run.returncode == 0, output
    assert "is valid" in output
    assert "warns" not in output, output  # e.g. a ${VARIABLE} without a default


def test_the_services_of_airflows_official_celery_shape_and_ours(services: dict[str, Any]) -> None:
    missing = [name for name in SERVICES if name not in services]
    assert not missing, f"docker-compose.yaml lacks {missing}"
    assert "celery" in services["airflow-worker"]["command"]
    assert services["airflow-worker"]["command"][:3] == ["airflow", "celery", "worker"]
    init = "\n".join(services["airflow-init"]["command"])
    assert "airflow db migrate" in init
    assert "python -m static_dicomweb_airflow.pools" in init  # the pools the DAG's tasks run in


def test_every_published_port_is_bound_to_localhost(services: dict[str, Any]) -> None:
    published = []
    for name, service in services.items():
        for port in service.get("ports", []):
            assert isinstance(port, str), f"{name}: use the short syntax HOST_IP:HOST:CONTAINER"
            published.append(port)
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port!r} beyond 127.0.0.1"
    # the ones a user opens: Airflow, MinIO's API and console, the site, MONAI Label
    for port in ("127.0.0.1:8080:8080", "127.0.0.1:9000:9000", "127.0.0.1:9001:9001",
                 "127.0.0.1:8042:8042", "127.0.0.1:8000:8000", "127.0.0.1:8043:8043"):
        assert port in published


def test_airflow_runs_the_celery_executor_with_one_jwt_secret(services: dict[str, Any]) -> None:
    secrets = set()
    for name in AIRFLOW_SERVICES:
        env = env_of(services[name])
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://"), name
        # the driver named: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3 (not installed)
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql+psycopg2://"), name
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql"), name
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
        secrets.add(env["AIRFLOW__API_AUTH__JWT_SECRET"])
    assert len(secrets) == 1 and "" not in secrets, "every component must share one JWT secret"


def test_the_celery_executor_is_installed_by_requirements() -> None:
    requirements = (ROOT / "requirements.txt").read_text()
    assert re.search(r"^apache-airflow-providers-celery==", requirements, re.M), (
        "docker-compose.yaml runs the CeleryExecutor: requirements.txt needs "
        "apache-airflow-providers-celery (and celery[redis] for the Redis broker)")


def test_aws_default_points_at_minio(services: dict[str, Any]) -> None:
    for name in AIRFLOW_SERVICES:
        conn = json.loads(env_of(services[name])["AIRFLOW_CONN_AWS_DEFAULT"])
        assert conn["conn_type"] == "aws"
        # the Amazon provider reads the endpoint from the extra's `endpoint_url`
        assert conn["extra"]["endpoint_url"] == "http://minio:9000"
        assert conn["login"] == env_of(services["minio"])["MINIO_ROOT_USER"]


def test_airflow_and_the_site_server_use_the_image_built_from_the_dockerfile(
        services: dict[str, Any]) -> None:
    images = set()
    for name in (*AIRFLOW_SERVICES, "dicomweb", "dicomweb-nginx", "dicomweb-folder"):
        build = services[name]["build"]
        assert build["context"] == "." and build.get("dockerfile", "Dockerfile") == "Dockerfile", name
        images.add(services[name]["image"])
    assert len(images) == 1
    for name in AIRFLOW_SERVICES:
        mounts = {volume.split(":")[1] for volume in services[name]["volumes"]}
        assert {"/opt/airflow/dags", "/opt/airflow/plugins", "/opt/airflow/include"} <= mounts, name


def test_the_dockerfile_installs_the_pinned_requirements() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", dockerfile, re.M)
    assert re.search(r"^COPY requirements\.txt constraints-airflow\.txt ", dockerfile, re.M)
    assert "pip install -r requirements.txt -c constraints-airflow.txt" in dockerfile


def test_the_bucket_is_made_after_minio_answers(services: dict[str, Any]) -> None:
    init = services["minio-init"]
    assert init["depends_on"]["minio"]["condition"] == "service_healthy"
    assert "healthcheck" in services["minio"]
    script_mount = next(v for v in init["volumes"] if v.startswith("./docker/minio-init.sh:"))
    assert script_mount.split(":")[1] in init["entrypoint"]
    script = (ROOT / "docker" / "minio-init.sh").read_text()
    bucket = env_of(init)["MINIO_BUCKET"]
    assert bucket == "dicomweb"
    assert 'mc mb --ignore-existing "site/$bucket"' in script
    assert 'mc anonymous set download "site/$bucket"' in script  # plain GETs read the site
    # the tasks write into the bucket: the worker starts after it exists
    assert (services["airflow-worker"]["depends_on"]["minio-init"]["condition"]
            == "service_completed_successfully")


def test_monai_label_has_its_own_image(services: dict[str, Any]) -> None:
    service = services["monailabel"]
    assert service["build"] | {"args": None} == {"context": ".", "dockerfile": "docker/monailabel/Dockerfile",
                                                  "args": None}
    check_monai_label_dockerfile((ROOT / "docker" / "monailabel" / "Dockerfile").read_text())
    command = [interpolate(str(part)) for part in service["command"]]
    assert command[command.index("--studies") + 1] == "http://dicomweb:8042"
    confs = {command[i + 1]: command[i + 2] for i, part in enumerate(command) if part == "--conf"}
    assert confs["use_pretrained_model"] == "false" and confs["sam2"] == "false"
    assert confs["models"] == "spine_cpu"
    assert service["depends_on"]["dicomweb"]["condition"] == "service_healthy"


def check_monai_label_dockerfile(dockerfile: str) -> None:
    """The image holds the project's spine_cpu config and spine_model, with pinned versions, and names
    no package index."""
    # the project's spine_cpu config and the spine_model package it imports are in the image
    for copied in ("clients/monailabel/app/", "include/spine_model/"):
        assert f"COPY {copied}" in dockerfile or f"COPY --chown=monai {copied}" in dockerfile
        assert (ROOT / copied).is_dir()
    for pin in ("monailabel==0.8.5", "monai==1.5.2", "pydicom==2.4.4", "torch==${TORCH_VERSION}"):
        assert pin in dockerfile
    # the CPU index for torch is a build argument without a default: no index is named here
    assert re.search(r"^ARG TORCH_INDEX_URL$", dockerfile, re.M)
    assert not re.search(r"https?://(?!dicomweb:)", dockerfile), "a URL other than the site's"


def command(service: dict[str, Any]) -> list[str]:
    return [interpolate(str(part)) for part in service["command"]]


def test_dicomweb_is_the_routing_front_on_the_dags_bucket_with_ohif(services: dict[str, Any]) -> None:
    service = services["dicomweb"]
    args = command(service)
    assert args[:3] == ["static-dicomweb", "serve", SITE], args
    assert args[args.index("--endpoint-url") + 1] == "http://minio:9000"
    assert args[args.index("--port") + 1] == "8042" and args[args.index("--host") + 1] == "0.0.0.0"
    assert "--viewer" in args
    env = env_of(service)
    minio = env_of(services["minio"])
    # MinIO's keys: it reads the site and, for STOW, writes it
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == (
        minio["MINIO_ROOT_USER"], minio["MINIO_ROOT_PASSWORD"])
    assert "STATIC_DICOMWEB_STOW_TOKEN" in env  # ${STOW_TOKEN}: empty means read-only
    assert SITE.split("/")[2] == env_of(services["minio-init"])["MINIO_BUCKET"]
    # serve checks the bucket when it starts: after minio-init made it
    assert service["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
    # the health check asks what MONAI Label asks, which an empty site answers too ([])
    assert "http://localhost:8042/series?Modality=CT" in service["healthcheck"]["test"][-1]


def test_the_image_holds_ohifs_build_where_serve_viewer_looks() -> None:
    from static_dicomweb.viewer import ENV_DIST

    dockerfile = (ROOT / "Dockerfile").read_text()
    stage = re.search(r"^FROM (\S+) AS ohif$(.*?)^FROM ", dockerfile, re.M | re.S)
    assert stage, "no OHIF build stage"
    assert "RUN bash setup.sh --build-only" in stage.group(2)
    copied = re.search(r"^COPY (.*) \./$", stage.group(2), re.M)
    assert copied
    for name in copied.group(1).split():  # the files setup.sh --build-only reads
        assert (ROOT / name).is_file(), name
    dist = re.search(r"^COPY --from=ohif /ohif/ohif-dist (\S+)$", dockerfile, re.M)
    assert dist
    assert re.search(rf"\b{ENV_DIST}={re.escape(dist.group(1))}\b", dockerfile)


def test_the_runs_viewer_link_opens_ohif_of_the_front(services: dict[str, Any]) -> None:
    from static_dicomweb_airflow.links import SITE_URL_VARIABLE

    published = next(p for p in services["dicomweb"]["ports"] if p.endswith(":8042"))
    host, port = published.split(":")[:2]
    for name in AIRFLOW_SERVICES:
        env = env_of(services[name])
        # Airflow reads the Variable from AIRFLOW_VAR_<NAME>; a browser follows the link
        assert env[f"AIRFLOW_VAR_{SITE_URL_VARIABLE.upper()}"] == f"http://{host}:{port}", name


def test_the_nginx_profile_serves_the_dags_folder_site(services: dict[str, Any]) -> None:
    nginx, folder = services["dicomweb-nginx"], services["dicomweb-folder"]
    assert nginx["profiles"] == ["nginx"] and folder["profiles"] == ["nginx"]
    script = command(nginx)[-1]
    assert "static-dicomweb nginx-config /data/site --listen 0.0.0.0:8043" in script
    upstream = re.search(r"--upstream http://([\w-]+):(\d+)", script)
    assert upstream and upstream.group(1) == "dicomweb-folder"
    args = command(folder)
    assert args[:3] == ["static-dicomweb", "serve", "/data/site"]
    assert args[args.index("--port") + 1] == upstream.group(2)
    assert "STATIC_DICOMWEB_STOW_TOKEN" in env_of(folder)
    # the same volume as the DAG's default destination (/data/site in the Airflow services)
    dag_site = next(v for v in services["airflow-worker"]["volumes"] if v.endswith(":/data/site"))
    volume = dag_site.split(":")[0]
    assert f"{volume}:/data/site:ro" in nginx["volumes"] and f"{volume}:/data/site" in folder["volumes"]
    assert re.search(r"^ +&& apt-get install .*\bnginx libnginx-mod-http-js\b",
                     (ROOT / "Dockerfile").read_text(), re.M)


def test_the_deploy_docs_say_what_the_file_does(services: dict[str, Any]) -> None:
    docs = DOCS.read_text()
    command = [interpolate(str(part)) for part in services["monailabel"]["command"]]
    model = command[command.index("models") + 1]
    assert f"model `{model}`" in docs or f"model {model}" in docs
    for other in ("localization_spine", "segmentation_spine"):
        assert f"model `{other}`" not in docs, other
    for name, service in services.items():
        for port in service.get("ports", []):
            assert f"http://127.0.0.1:{port.split(':')[1]}" in docs, (name, port)
    # the trigger the docs give writes where `dicomweb` reads
    assert f'"destination": "{SITE}"' in docs
    assert "http://127.0.0.1:8042/viewer/" in docs
