"""The annotation-loop DAGs' trigger forms, pinned; each default written once, in ``params.py``.

``FORMS`` is what ``spine_training``, ``monailabel_refresh`` and ``spine_labels_import``
declared as a dict of ``Param(...)`` in their DAG files before their params became typed
objects: every param's name (in form order), default, JSON schema and description.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from static_dicomweb_airflow import params as typed

ROOT = Path(__file__).resolve().parents[1]
EVENT_SITE = "site folder or s3://bucket/prefix (empty: the triggering event's)"
MONAILABEL_CONN = "Airflow HTTP connection of the MONAI Label server"
S3_SITE_CONN = "Airflow connection for an S3 site"
MODELS = ["spine_cpu", "localization_spine"]

# name: (default, schema, description)
Form = dict[str, tuple[Any, dict[str, Any], str]]
FORMS: dict[str, Form] = {
    "spine_training": {
        "destination": ("", {"type": "string"}, EVENT_SITE),
        "model": ("spine_cpu", {"enum": MODELS},
                  "MONAI Label model to train: one spine label, or C1..L5"),
        "backend": ("local", {"enum": ["local", "monailabel", "sagemaker"]},
                    "where to train: this worker (CPU), the MONAI Label server, SageMaker"),
        "min_new_labels": (1, {"type": "integer", "minimum": 0},
                           "train only when this many labels are new"),
        "heldout_fraction": (0.25, {"type": "number", "minimum": 0, "maximum": 0.9},
                             "share of patients held out to compare models"),
        "epochs": (20, {"type": "integer", "minimum": 1}, "training epochs"),
        "fine_tune": (True, {"type": "boolean"}, "local: start from the current weights"),
        "min_improvement": (0.0, {"type": "number"}, "Dice the new model must gain"),
        "trainer_python": ("", {"type": "string"},
                           "a Python with torch and MONAI (default: MONAI Label's venv)"),
        "work_dir": ("/tmp/static-dicomweb-training", {"type": "string"},
                     "worker folder for the exported data set and weights"),
        "aws_conn_id": ("aws_default", {"type": "string"}, "Airflow connection for S3 and SageMaker"),
        "monailabel_conn_id": ("monailabel_default", {"type": "string"}, MONAILABEL_CONN),
        "sagemaker_role_arn": ("", {"type": "string"}, "sagemaker: the training job's IAM role"),
        "sagemaker_image_uri": ("", {"type": "string"},
                                "an image whose entry point runs python -m spine_model.train"),
        "sagemaker_instance_type": ("ml.g5.xlarge", {"type": "string"},
                                    "sagemaker: the training instance type"),
        "train_timeout_s": (7200, {"type": "integer", "minimum": 60},
                            "fail the training after this many seconds"),
        "artifact_timeout_s": (0, {"type": "integer", "minimum": 0},
                               "wait this long for model.tar.gz after the job ends"),
    },
    "monailabel_refresh": {
        "destination": ("", {"type": "string"}, EVENT_SITE),
        "model": ("spine_cpu", {"type": "string"}, "the MONAI Label model whose weights to upload"),
        "search_filter": ({"Modality": "CT"}, {"type": "object"},
                          "MONAI_LABEL_DICOMWEB_SEARCH_FILTER of the server"),
        "monailabel_conn_id": ("monailabel_default", {"type": "string"}, MONAILABEL_CONN),
        "aws_conn_id": ("aws_default", {"type": "string"}, S3_SITE_CONN),
        "work_dir": ("/tmp/static-dicomweb-training", {"type": "string"},
                     "worker folder the weights are fetched to"),
        "check_timeout_s": (120, {"type": "integer", "minimum": 0},
                            "wait this long for the server to list the site's images"),
    },
    "spine_labels_import": {
        "destination": ("/data/site", {"type": "string"}, "site folder or s3://bucket/prefix"),
        "series_uids": ([], {"type": "array"}, "NLST CT SeriesInstanceUIDs to label"),
        "model": ("spine_cpu", {"enum": MODELS},
                  "map the vertebrae to one spine label, or to C1..L5"),
        "download_dir": ("/tmp/static-dicomweb-totalseg", {"type": "string"},
                         "worker folder for the downloaded SEG and CT files"),
        "profile": ("default", {"enum": ["default", "viewer", "full"]},
                    "which objects to write (docs/site-layout.md)"),
        "aws_conn_id": ("aws_default", {"type": "string"}, S3_SITE_CONN),
    },
}
# the typed params class of each DAG, by name in static_dicomweb_airflow.params
TYPED = {"spine_training": "TrainingParams", "monailabel_refresh": "RefreshParams",
         "spine_labels_import": "LabelsImportParams"}


@pytest.fixture(scope="module")
def dagbag():  # type: ignore[no-untyped-def]
    from airflow.dag_processing.dagbag import DagBag  # noqa: TID251 - loads the DAG files

    return DagBag(dag_folder=str(ROOT / "dags"))


def as_declared(params: dict[str, Any]) -> Form:
    """Each ``Param``'s default, schema and description, in the form's order."""
    return {name: (p.value, p.schema, p.description) for name, p in params.items()}


@pytest.mark.parametrize("dag_id", sorted(FORMS))
def test_trigger_form_is_what_the_dag_declared(dagbag, dag_id: str) -> None:  # type: ignore[no-untyped-def]
    assert dagbag.import_errors == {}
    params = dagbag.dags[dag_id].params
    declared = as_declared({name: params.get_param(name) for name in params})
    assert list(declared) == list(FORMS[dag_id])
    assert declared == FORMS[dag_id]


@pytest.mark.parametrize("dag_id", sorted(FORMS))
def test_typed_params_give_the_dags_defaults(dag_id: str) -> None:
    cls = getattr(typed, TYPED[dag_id])
    assert as_declared(typed.airflow_params(cls)) == FORMS[dag_id]
    # what a task body reads from an empty run is the form's default: none is written in the task code
    run = cls.of({})
    assert {f.name: getattr(run, f.name) for f in dataclasses.fields(cls)} == {
        name: default for name, (default, _, _) in FORMS[dag_id].items()}
    # a run's value wins, unknown keys are left out, mutable defaults are not shared between runs
    assert cls.of({"aws_conn_id": "minio", "unknown": 1}).aws_conn_id == "minio"
    mutable = [f.name for f in dataclasses.fields(cls) if isinstance(getattr(run, f.name), (list, dict))]
    for name in mutable:
        assert getattr(cls.of({}), name) is not getattr(cls.of({}), name), name


def test_task_code_reads_params_through_the_typed_objects() -> None:
    # no `params.get(...)` with a default left in the annotation loop's task code or DAG files
    sources = [ROOT / "include" / "static_dicomweb_airflow" / "training.py",
               *(ROOT / "dags" / f"{dag_id}.py" for dag_id in FORMS)]
    for source in sources:
        text = source.read_text()
        assert "params.get(" not in text and "].get(" not in text, source.name
        assert "Param(" not in text, source.name
