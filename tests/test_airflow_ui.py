"""The Airflow UI out of the box: what `make airflow` starts, a `dicomweb_site` run's links and lineage.

One module fixture builds a project-local Airflow home the way `make airflow` does
(``static_dicomweb_airflow.home``), runs ``dicomweb_site`` once with ``airflow dags test``
(OpenLineage into a file), then starts the four components with the command `make airflow`
runs (``python -m static_dicomweb_airflow.local``) on free ports of 127.0.0.1 and asks the
api-server's REST API.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from static_dicomweb.serve import serve_in_thread
from static_dicomweb_sample import SampleSpec, generate_sample

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
PROJECT_DAGS = {"dicomweb_site", "monailabel_refresh", "spine_labels_import", "spine_training"}

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def free_port() -> int:
    """A port nothing listens on now (bound to 0 and released, for a server in another process)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Airflow:
    """A running local Airflow and what the fixture made for it."""

    def __init__(self, home: Path, base: str, env: dict[str, str], tmp: Path, site_url: str,
                 run_id: str, events: list[dict[str, Any]], run_log: str) -> None:
        self.home, self.base, self.env, self.tmp = home, base, env, tmp
        self.site_url, self.run_id, self.events, self.run_log = site_url, run_id, events, run_log
        self.token = ""

    def get(self, path: str, *, auth: bool = True) -> Any:
        request = urllib.request.Request(self.base + path)
        if auth:
            request.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())


def _wait_healthy(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(base + "/api/v2/monitor/health", timeout=5):
                return
        except OSError:
            time.sleep(2)
    pytest.fail("the api-server did not answer in 240 s:\n" + log.read_text()[-3000:])


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Airflow]:
    from static_dicomweb_airflow.home import write

    tmp = tmp_path_factory.mktemp("airflow-ui")
    home, port = tmp / "home", free_port()
    write(home, port)
    env = {**os.environ, "AIRFLOW_HOME": str(home),
           # the scheduler's and triggerer's log servers listen on fixed ports by default
           "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
           "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
           "STATIC_DICOMWEB_PROGRESS_S": "0",  # a progress line per item, not per 10 s
           "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
               {"type": "file", "log_file_path": str(tmp / "ol.jsonl"), "append": True})}
    for name in [k for k in env if k.startswith("AIRFLOW__") and k.split("__")[1] == "CORE"]:
        del env[name]  # the generated airflow.cfg alone says where the DAGs are
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "static_dicomweb_airflow.pools"], env=env, check=True)

    generate_sample(tmp / "in", SampleSpec(patients=1, slices=4, rows=32, columns=32))
    (tmp / "site").mkdir()
    server, site_url = serve_in_thread(str(tmp / "site"))
    conf = {"source": str(tmp / "in"), "destination": str(tmp / "site"), "batch_size": 2,
            "skip_localizers": False, "site_url": site_url + "/"}
    run = subprocess.run([AIRFLOW, "dags", "test", "dicomweb_site", "-c", json.dumps(conf)],
                         env=env, capture_output=True, text=True, timeout=600, check=False)
    log = run.stdout + run.stderr
    assert run.returncode == 0 and "state=success, run_type" in log, log[-3000:]
    finished = next(line for line in log.splitlines() if "DagRun Finished" in line)
    run_id = finished.split(" run_id=", 1)[1].split(",", 1)[0]
    events = [json.loads(line) for line in (tmp / "ol.jsonl").read_text().splitlines() if line]

    base = f"http://127.0.0.1:{port}"
    out = tmp / "airflow.log"
    with out.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "static_dicomweb_airflow.local"], env=env,
                                stdout=sink, stderr=subprocess.STDOUT, cwd=tmp)
    try:
        _wait_healthy(base, proc, out)
        running = Airflow(home, base, env, tmp, site_url, run_id, events, log)
        password = json.loads((home / "passwords.json").read_text())["admin"]
        request = urllib.request.Request(base + "/auth/token", method="POST",
                                         data=json.dumps({"username": "admin",
                                                          "password": password}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            running.token = json.loads(response.read())["access_token"]
        yield running
    finally:
        server.shutdown()
        proc.send_signal(signal.SIGINT)  # what Ctrl-C does to `make airflow`
        try:
            status = proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert status == 0, out.read_text()[-3000:]
    assert "Airflow stopped." in out.read_text()


def test_generated_config_is_what_plain_airflow_commands_read(airflow: Airflow) -> None:
    env = {k: v for k, v in airflow.env.items() if not k.startswith("AIRFLOW__")}
    out = subprocess.run([AIRFLOW, "dags", "list", "-o", "json"], env=env, capture_output=True,
                         text=True, check=True)
    listed = next(line for line in out.stdout.splitlines() if line.startswith("["))
    assert {d["dag_id"] for d in json.loads(listed)} == PROJECT_DAGS


def test_api_lists_exactly_the_project_dags_without_import_errors(airflow: Airflow) -> None:
    dags = airflow.get("/api/v2/dags?limit=200")["dags"]
    assert {d["dag_id"] for d in dags} == PROJECT_DAGS
    assert {p.stem for p in (ROOT / "dags").glob("*.py")} == PROJECT_DAGS  # one DAG per file
    for dag in dags:
        assert dag["description"], dag["dag_id"]
    assert airflow.get("/api/v2/importErrors")["total_entries"] == 0


def test_every_param_has_a_description(airflow: Airflow) -> None:
    for dag_id in sorted(PROJECT_DAGS):
        params = airflow.get(f"/api/v2/dags/{dag_id}/details")["params"]
        assert params, dag_id
        missing = [name for name, spec in params.items() if not spec.get("description")]
        assert missing == [], f"{dag_id}: {missing}"


def test_the_runs_extra_links_resolve(airflow: Airflow) -> None:
    run = quote(airflow.run_id, safe="")
    path = f"/api/v2/dags/dicomweb_site/dagRuns/{run}/taskInstances"
    publish = airflow.get(f"{path}/publish/links")["extra_links"]
    validate = airflow.get(f"{path}/validate/links")["extra_links"]
    assert publish == {"Open in viewer": f"{airflow.site_url}/viewer/",
                       "Validation report": f"{airflow.site_url}/_site/validation-report.json"}
    assert validate == {"Validation report": publish["Validation report"]}
    # the site's own report, served where the link points
    with urllib.request.urlopen(publish["Validation report"], timeout=60) as response:
        report = json.loads(response.read())
    assert report["ok"] and report["checked"]["instances"] == 12


def test_the_plugin_shows_the_runs_validation_report(airflow: Airflow) -> None:
    from static_dicomweb_airflow.links import report_url

    url = report_url({}, "dicomweb_site", airflow.run_id, airflow.base)  # no site URL configured
    assert url.startswith(airflow.base + "/static-dicomweb/validation-report/dicomweb_site/")
    report = airflow.get(url[len(airflow.base):])
    assert report["ok"] and report["checked"]["instances"] == 12
    with pytest.raises(urllib.error.HTTPError) as denied:  # behind Airflow's login
        airflow.get(url[len(airflow.base):], auth=False)
    assert denied.value.code == 401
    with pytest.raises(urllib.error.HTTPError) as missing:
        airflow.get("/static-dicomweb/validation-report/dicomweb_site/no-such-run")
    assert missing.value.code == 404


def _complete(events: list[dict[str, Any]], task: str) -> list[dict[str, Any]]:
    return [e for e in events if e["job"]["name"] == f"dicomweb_site.{task}"
            and e["eventType"] == "COMPLETE"]


def test_lineage_lists_each_tasks_own_inputs_and_outputs(airflow: Airflow) -> None:
    source, site = str(airflow.tmp / "in"), str(airflow.tmp / "site")

    def names(task: str, side: str) -> set[tuple[str, str]]:
        return _datasets(airflow.events, task, side)

    for task in ("download", "convert"):
        read = names(task, "inputs")
        assert read and all(ns == "file" and name.startswith(source) for ns, name in read), task
    # the five series: each read once by its download and once by its convert
    assert len(names("convert", "inputs")) == 5
    assert sum(len(e["inputs"]) for e in _complete(airflow.events, "convert")) == 5
    assert names("download", "outputs") == set()
    assert names("convert", "outputs") == {("file", site)}
    assert names("aggregate", "inputs") == {("file", site)}
    assert names("aggregate", "outputs") == {("file", site)}
    assert names("validate", "inputs") == {("file", site)}
    assert names("validate", "outputs") == set()
    assert names("publish", "inputs") == set()
    assert names("publish", "outputs") == {("static-dicomweb://site", "dicomweb_site")}
    _check_run_and_start_events(airflow.events)


def _datasets(events: list[dict[str, Any]], task: str, side: str) -> set[tuple[str, str]]:
    """The (namespace, name) of the datasets on ``side`` (inputs or outputs) of ``task``'s COMPLETE events."""
    found = _complete(events, task)
    assert found, task
    return {(d["namespace"], d["name"]) for e in found for d in e[side]}


def _check_run_and_start_events(events: list[dict[str, Any]]) -> None:
    """The DAG run has one event, COMPLETE; each task's START events name no datasets."""
    assert [e["eventType"] for e in events if e["job"]["name"] == "dicomweb_site"] == [
        "COMPLETE"]  # the DAG run's own event
    for task in ("discover", "download", "convert", "aggregate", "validate", "publish"):
        starts = [e for e in events if e["job"]["name"] == f"dicomweb_site.{task}"
                  and e["eventType"] == "START"]
        assert starts and all(not e["inputs"] and not e["outputs"] for e in starts), task


def test_progress_lines_in_the_task_logs(airflow: Airflow) -> None:
    lines = [line for line in airflow.run_log.splitlines() if "static_dicomweb.progress" in line]
    done = [re.search(r"convert: (\d+)/\1 instances \(100%\), (\d) series, .* MB/s, ", line)
            for line in lines]
    # three convert tasks (batches of 2, 2 and 1 series) each end with a line of its own
    assert sum(int(m.group(1)) for m in done if m) == 12, airflow.run_log[-3000:]
    assert sorted(int(m.group(2)) for m in done if m) == [1, 2, 2]
    assert any("aggregate: series: 5/5 series (100%)" in line for line in lines)
