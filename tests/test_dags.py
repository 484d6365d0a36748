"""DAG validation (the DagBag imports cleanly, the shape is right) and a real `airflow dags test` run."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from static_dicomweb.store import LocalStore
from static_dicomweb_airflow.params import SiteParams, airflow_params
from static_dicomweb_sample import SampleSpec, generate_sample

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


@pytest.fixture(scope="module")
def dagbag():  # type: ignore[no-untyped-def]
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


def test_dags_import_without_errors(dagbag) -> None:  # type: ignore[no-untyped-def]
    assert dagbag.import_errors == {}
    assert "dicomweb_site" in dagbag.dags


def test_dicomweb_site_shape(dagbag) -> None:  # type: ignore[no-untyped-def]
    dag = dagbag.dags["dicomweb_site"]
    assert [t.task_id for t in dag.topological_sort()] == [
        "discover", "download", "convert", "aggregate", "validate", "publish"]
    for task in dag.tasks:
        assert task.retries >= 3 and task.retry_exponential_backoff, task.task_id
    assert {"source", "destination", "series_uids", "patient_ids", "limit", "batch_size",
            "skip_localizers"} <= set(dag.params)
    assert type(dag.timetable).__name__ == "CronDataIntervalTimetable" and not dag.catchup
    (outlet,) = dag.get_task("publish").outlets
    assert outlet.name == "dicomweb_site"


def test_every_dag_and_every_param_has_a_description(dagbag) -> None:  # type: ignore[no-untyped-def]
    assert dagbag.import_errors == {}
    assert len(dagbag.dags) == 4
    for dag_id, dag in dagbag.dags.items():
        assert dag.description, dag_id
        missing = [name for name in dag.params if not dag.params.get_param(name).description]
        assert missing == [], f"{dag_id}: {missing}"


def test_site_params_write_each_default_once(dagbag) -> None:  # type: ignore[no-untyped-def]
    dag = dagbag.dags["dicomweb_site"]
    fields = {f.name for f in dataclasses.fields(SiteParams)}
    assert set(dag.params) == fields == set(airflow_params())
    defaults = SiteParams()
    for name in fields:
        assert dag.params[name] == getattr(defaults, name), name
    run = SiteParams.of({"source": "s3://b/in", "limit": 3, "unknown": 1})
    assert (run.source, run.limit, run.batch_size) == ("s3://b/in", 3, 50)
    # list defaults are not shared between runs
    assert SiteParams().series_uids is not SiteParams().series_uids


def test_spine_training_shape(dagbag) -> None:  # type: ignore[no-untyped-def]
    dag = dagbag.dags["spine_training"]
    ids = [t.task_id for t in dag.topological_sort()]
    assert ids[:3] == ["plan", "export", "backend"] and ids[-2:] == ["evaluate", "publish"]
    assert {"train_local", "train_monailabel", "sagemaker_config", "train_sagemaker",
            "collect_sagemaker"} <= set(ids)
    assert type(dag.get_task("train_sagemaker")).__name__ == "SageMakerTrainingOperator"
    assert dag.get_task("backend").downstream_task_ids == {"train_local", "train_monailabel",
                                                            "sagemaker_config"}
    assert dag.get_task("evaluate").trigger_rule == "none_failed_min_one_success"
    assert dag.params["backend"] == "local" and dag.params["model"] == "spine_cpu"
    assert {"min_new_labels", "heldout_fraction", "epochs", "sagemaker_role_arn",
            "sagemaker_image_uri", "monailabel_conn_id"} <= set(dag.params)
    assert {a.name for a in dag.timetable.asset_condition.objects} == {
        "dicomweb_site", "spine_labels"}
    (outlet,) = dag.get_task("publish").outlets
    assert outlet.name == "spine_model"
    for task in dag.tasks:
        assert task.retries >= 2 and task.retry_exponential_backoff, task.task_id


def test_monailabel_refresh_and_labels_import_shape(dagbag) -> None:  # type: ignore[no-untyped-def]
    dag = dagbag.dags["monailabel_refresh"]
    assert [t.task_id for t in dag.topological_sort()] == ["refresh_datastore", "refresh_model"]
    assert {a.name for a in dag.timetable.asset_condition.objects} == {
        "dicomweb_site", "spine_model"}
    imports = dagbag.dags["spine_labels_import"]
    assert [t.task_id for t in imports.topological_sort()] == ["import_totalseg", "aggregate"]
    (outlet,) = imports.get_task("aggregate").outlets
    assert outlet.name == "spine_labels"


@pytest.mark.parametrize("dag_file", ["dicomweb_site.py", "spine_training.py", "monailabel_refresh.py",
                                      "spine_labels_import.py"])
def test_dag_files_do_no_work_at_parse_time(dag_file: str) -> None:
    # heavy imports happen inside tasks: parsing the DAG file must not pull in the library,
    # pydicom or numpy (boto3 is loaded by Airflow itself, for the Amazon provider's Asset URIs)
    code = ("import sys, runpy; runpy.run_path(sys.argv[1]); "
            "print(sorted(m for m in ('pydicom', 'numpy', 'static_dicomweb', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(ROOT / "dags" / dag_file)],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def digest(root: Path) -> dict[str, str]:
    store = LocalStore(root)
    return {k: hashlib.sha256(store.get(k)).hexdigest() for k in store.walk()
            if not k.startswith(("_site/conversion-report", "_site/validation-report"))}


@pytest.mark.integration
@pytest.mark.slow
def test_airflow_dags_test_builds_the_same_site_as_the_cli(tmp_path: Path) -> None:
    generate_sample(tmp_path / "in", SampleSpec(patients=1, slices=4, rows=32, columns=32))
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow"),
           "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
               {"type": "file", "log_file_path": str(tmp_path / "ol.jsonl"), "append": True})}
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "static_dicomweb_airflow.pools"], env=env, check=True)
    conf = {"source": str(tmp_path / "in"), "destination": str(tmp_path / "dag-site"),
            "batch_size": 1, "skip_localizers": False}
    run = subprocess.run([AIRFLOW, "dags", "test", "dicomweb_site", "-c", json.dumps(conf)],
                         env=env, capture_output=True, text=True, timeout=600, check=False)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-3000:]
    assert "state=success, run_type" in log, log[-3000:]
    cli = subprocess.run([str(Path(sys.executable).with_name("static-dicomweb")), "convert",
                          str(tmp_path / "in"), "--out", str(tmp_path / "cli-site")],
                         capture_output=True, text=True, check=False)
    assert cli.returncode == 0, cli.stderr
    assert digest(tmp_path / "dag-site") == digest(tmp_path / "cli-site")
    # lineage: OpenLineage events name the source series read and the site written
    events = [json.loads(line) for line in (tmp_path / "ol.jsonl").read_text().splitlines() if line]
    converts = [e for e in events if e["job"]["name"] == "dicomweb_site.convert"
                and e["eventType"] == "COMPLETE"]
    assert converts
    assert {o["name"] for e in converts for o in e["outputs"]} == {str(tmp_path / "dag-site")}
    read = {i["name"] for e in converts for i in e["inputs"]}
    assert read and all(name.startswith(str(tmp_path / "in")) for name in read)
