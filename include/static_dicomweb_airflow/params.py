"""Each DAG's params, typed and with each default written once.

A frozen dataclass per DAG is the one place its params are declared: each field's
default, its JSON schema for the trigger form and its description.  The DAG's
``params`` come from it (:func:`airflow_params`) and the task bodies read a run's
params through it (``TrainingParams.of(params)``), so a default never has to be
repeated as ``params.get(...) or default``.  XCom carries params as the plain dict
Airflow gives; a task converts at the reader.  Importing this module imports only
Airflow's ``Param``, and only when :func:`airflow_params` runs (DAG files call it at
parse time).

=======================  ======================
DAG                      params
=======================  ======================
``dicomweb_site``        :class:`SiteParams`
``spine_training``       :class:`TrainingParams`
``monailabel_refresh``   :class:`RefreshParams`
``spine_labels_import``  :class:`LabelsImportParams`
=======================  ======================
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Self

PROFILES = ["default", "viewer", "full"]
MODELS = ["spine_cpu", "localization_spine"]
SPINE_MODEL = "spine_cpu"
WORK_DIR = "/tmp/static-dicomweb-training"


def _param(default: Any, description: str, **schema: Any) -> Any:
    """A params field: its default (a list or dict copied for each run), description and JSON schema."""
    metadata = {"description": description, "schema": schema}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class DagParams:
    """A DAG run's params: subclasses declare them as fields (with :func:`_param`)."""

    @classmethod
    def of(cls, params: dict[str, Any] | None) -> Self:
        """A run's params (Airflow passes every declared one; missing ones take the default).

        Keys the class does not declare are left out: a run's conf may carry keys the DAG
        does not declare, and Airflow merges them into its params.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        # replace() on the defaults keeps this typed for every subclass; the base's cls(**…) is not
        return dataclasses.replace(cls(), **{k: v for k, v in (params or {}).items() if k in names})


# declared once for the DAGs that share them, with the same default and description
def _event_destination() -> Any:
    return _param("", "site folder or s3://bucket/prefix (empty: the triggering event's)", type="string")


def _monailabel_conn_id() -> Any:
    return _param("monailabel_default", "Airflow HTTP connection of the MONAI Label server", type="string")


def _profile() -> Any:
    return _param("default", "which objects to write (docs/site-layout.md)", enum=PROFILES)


def _s3_site_conn_id() -> Any:
    return _param("aws_default", "Airflow connection for an S3 site", type="string")


@dataclass(frozen=True)
class SiteParams(DagParams):
    """A ``dicomweb_site`` run's params."""

    source: str = _param(
        "/data/dicom", "folder, s3://bucket/prefix, nbia:COLLECTION or idc:collection", type="string")
    destination: str = _param("/data/site", "site folder or s3://bucket/prefix", type="string")
    series_uids: list[str] = _param([], "only these SeriesInstanceUIDs (empty: all)", type="array")
    patient_ids: list[str] = _param([], "only these PatientIDs (empty: all)", type="array")
    limit: int = _param(0, "at most this many series (0: all)", type="integer", minimum=0)
    skip_localizers: bool = _param(True, "leave out series of 1-3 images", type="boolean")
    batch_size: int = _param(
        50, "series per mapped convert task (at most 1,024 tasks)", type="integer", minimum=1)
    profile: str = _profile()
    download_dir: str = _param(
        "/tmp/static-dicomweb-downloads", "worker folder for files downloaded from remote sources",
        type="string")
    aws_conn_id: str = _param("aws_default", "Airflow connection for S3 sources and sites", type="string")
    validate_url: str = _param(
        "", "validate over HTTP at this base URL instead of the destination", type="string")
    site_url: str = _param(
        "", "the site's public base URL, e.g. what `static-dicomweb serve SITE --viewer` prints "
        "(empty: the Variable dicomweb_site_url); the run's viewer link opens <site_url>/viewer/",
        type="string")


@dataclass(frozen=True)
class TrainingParams(DagParams):
    """A ``spine_training`` run's params."""

    destination: str = _event_destination()
    model: str = _param(SPINE_MODEL, "MONAI Label model to train: one spine label, or C1..L5", enum=MODELS)
    backend: str = _param(
        "local", "where to train: this worker (CPU), the MONAI Label server, SageMaker",
        enum=["local", "monailabel", "sagemaker"])
    min_new_labels: int = _param(1, "train only when this many labels are new", type="integer", minimum=0)
    heldout_fraction: float = _param(
        0.25, "share of patients held out to compare models", type="number", minimum=0, maximum=0.9)
    epochs: int = _param(20, "training epochs", type="integer", minimum=1)
    fine_tune: bool = _param(True, "local: start from the current weights", type="boolean")
    min_improvement: float = _param(0.0, "Dice the new model must gain", type="number")
    trainer_python: str = _param(
        "", "a Python with torch and MONAI (default: MONAI Label's venv)", type="string")
    work_dir: str = _param(WORK_DIR, "worker folder for the exported data set and weights", type="string")
    aws_conn_id: str = _param("aws_default", "Airflow connection for S3 and SageMaker", type="string")
    monailabel_conn_id: str = _monailabel_conn_id()
    sagemaker_role_arn: str = _param("", "sagemaker: the training job's IAM role", type="string")
    sagemaker_image_uri: str = _param(
        "", "an image whose entry point runs python -m spine_model.train", type="string")
    sagemaker_instance_type: str = _param(
        "ml.g5.xlarge", "sagemaker: the training instance type", type="string")
    train_timeout_s: int = _param(
        7200, "fail the training after this many seconds", type="integer", minimum=60)
    artifact_timeout_s: int = _param(
        0, "wait this long for model.tar.gz after the job ends", type="integer", minimum=0)


@dataclass(frozen=True)
class RefreshParams(DagParams):
    """A ``monailabel_refresh`` run's params."""

    destination: str = _event_destination()
    model: str = _param(SPINE_MODEL, "the MONAI Label model whose weights to upload", type="string")
    search_filter: dict[str, Any] = _param(
        {"Modality": "CT"}, "MONAI_LABEL_DICOMWEB_SEARCH_FILTER of the server", type="object")
    monailabel_conn_id: str = _monailabel_conn_id()
    aws_conn_id: str = _s3_site_conn_id()
    work_dir: str = _param(WORK_DIR, "worker folder the weights are fetched to", type="string")
    check_timeout_s: int = _param(
        120, "wait this long for the server to list the site's images", type="integer", minimum=0)


@dataclass(frozen=True)
class LabelsImportParams(DagParams):
    """A ``spine_labels_import`` run's params."""

    destination: str = _param("/data/site", "site folder or s3://bucket/prefix", type="string")
    series_uids: list[str] = _param([], "NLST CT SeriesInstanceUIDs to label", type="array")
    model: str = _param(SPINE_MODEL, "map the vertebrae to one spine label, or to C1..L5", enum=MODELS)
    download_dir: str = _param(
        "/tmp/static-dicomweb-totalseg", "worker folder for the downloaded SEG and CT files", type="string")
    profile: str = _profile()
    aws_conn_id: str = _s3_site_conn_id()


def airflow_params(cls: type[DagParams] = SiteParams) -> dict[str, Any]:
    """A DAG's ``params``: one ``Param`` per field of ``cls``, default, schema and description.

    Parameters
    ----------
    cls
        The DAG's params class (``dicomweb_site``'s :class:`SiteParams` when left out).
    """
    from airflow.sdk import Param

    out = {}
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        out[f.name] = Param(default, description=f.metadata["description"], **f.metadata["schema"])
    return out
