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

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Self

PROFILES = ["default", "viewer", "full"]
MODELS = ["spine_cpu", "localization_spine"]
SPINE_MODEL = "spine_cpu"
WORK_DIR = "/tmp/static-dicomweb-training"


def _m(description: str, **schema: Any) -> dict[str, Any]:
    """A field's metadata: the param's description and JSON schema."""
    return {"description": description, "schema": schema}


@dataclass(frozen=True)
class DagParams:
    """A DAG run's params: subclasses declare them as fields (default, ``_m`` metadata)."""

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
    return field(default="", metadata=_m(
        "site folder or s3://bucket/prefix (empty: the triggering event's)", type="string"))


def _monailabel_conn_id() -> Any:
    return field(default="monailabel_default", metadata=_m(
        "Airflow HTTP connection of the MONAI Label server", type="string"))


def _profile() -> Any:
    return field(default="default", metadata=_m(
        "which objects to write (docs/site-layout.md)", enum=PROFILES))


def _s3_site_conn_id() -> Any:
    return field(default="aws_default", metadata=_m("Airflow connection for an S3 site", type="string"))


@dataclass(frozen=True)
class SiteParams(DagParams):
    """A ``dicomweb_site`` run's params."""

    source: str = field(default="/data/dicom", metadata=_m(
        "folder, s3://bucket/prefix, nbia:COLLECTION or idc:collection", type="string"))
    destination: str = field(default="/data/site", metadata=_m(
        "site folder or s3://bucket/prefix", type="string"))
    series_uids: list[str] = field(default_factory=list, metadata=_m(
        "only these SeriesInstanceUIDs (empty: all)", type="array"))
    patient_ids: list[str] = field(default_factory=list, metadata=_m(
        "only these PatientIDs (empty: all)", type="array"))
    limit: int = field(default=0, metadata=_m(
        "at most this many series (0: all)", type="integer", minimum=0))
    skip_localizers: bool = field(default=True, metadata=_m(
        "leave out series of 1-3 images", type="boolean"))
    batch_size: int = field(default=50, metadata=_m(
        "series per mapped convert task (at most 1,024 tasks)", type="integer", minimum=1))
    profile: str = _profile()
    download_dir: str = field(default="/tmp/static-dicomweb-downloads", metadata=_m(
        "worker folder for files downloaded from remote sources", type="string"))
    aws_conn_id: str = field(default="aws_default", metadata=_m(
        "Airflow connection for S3 sources and sites", type="string"))
    validate_url: str = field(default="", metadata=_m(
        "validate over HTTP at this base URL instead of the destination", type="string"))
    site_url: str = field(default="", metadata=_m(
        "the site's public base URL, e.g. what `static-dicomweb serve SITE --viewer` prints "
        "(empty: the Variable dicomweb_site_url); the run's viewer link opens <site_url>/viewer/",
        type="string"))


@dataclass(frozen=True)
class TrainingParams(DagParams):
    """A ``spine_training`` run's params."""

    destination: str = _event_destination()
    model: str = field(default=SPINE_MODEL, metadata=_m(
        "MONAI Label model to train: one spine label, or C1..L5", enum=MODELS))
    backend: str = field(default="local", metadata=_m(
        "where to train: this worker (CPU), the MONAI Label server, SageMaker",
        enum=["local", "monailabel", "sagemaker"]))
    min_new_labels: int = field(default=1, metadata=_m(
        "train only when this many labels are new", type="integer", minimum=0))
    heldout_fraction: float = field(default=0.25, metadata=_m(
        "share of patients held out to compare models", type="number", minimum=0, maximum=0.9))
    epochs: int = field(default=20, metadata=_m("training epochs", type="integer", minimum=1))
    fine_tune: bool = field(default=True, metadata=_m(
        "local: start from the current weights", type="boolean"))
    min_improvement: float = field(default=0.0, metadata=_m(
        "Dice the new model must gain", type="number"))
    trainer_python: str = field(default="", metadata=_m(
        "a Python with torch and MONAI (default: MONAI Label's venv)", type="string"))
    work_dir: str = field(default=WORK_DIR, metadata=_m(
        "worker folder for the exported data set and weights", type="string"))
    aws_conn_id: str = field(default="aws_default", metadata=_m(
        "Airflow connection for S3 and SageMaker", type="string"))
    monailabel_conn_id: str = _monailabel_conn_id()
    sagemaker_role_arn: str = field(default="", metadata=_m(
        "sagemaker: the training job's IAM role", type="string"))
    sagemaker_image_uri: str = field(default="", metadata=_m(
        "an image whose entry point runs python -m spine_model.train", type="string"))
    sagemaker_instance_type: str = field(default="ml.g5.xlarge", metadata=_m(
        "sagemaker: the training instance type", type="string"))
    train_timeout_s: int = field(default=7200, metadata=_m(
        "fail the training after this many seconds", type="integer", minimum=60))
    artifact_timeout_s: int = field(default=0, metadata=_m(
        "wait this long for model.tar.gz after the job ends", type="integer", minimum=0))


@dataclass(frozen=True)
class RefreshParams(DagParams):
    """A ``monailabel_refresh`` run's params."""

    destination: str = _event_destination()
    model: str = field(default=SPINE_MODEL, metadata=_m(
        "the MONAI Label model whose weights to upload", type="string"))
    search_filter: dict[str, Any] = field(default_factory=lambda: {"Modality": "CT"}, metadata=_m(
        "MONAI_LABEL_DICOMWEB_SEARCH_FILTER of the server", type="object"))
    monailabel_conn_id: str = _monailabel_conn_id()
    aws_conn_id: str = _s3_site_conn_id()
    work_dir: str = field(default=WORK_DIR, metadata=_m(
        "worker folder the weights are fetched to", type="string"))
    check_timeout_s: int = field(default=120, metadata=_m(
        "wait this long for the server to list the site's images", type="integer", minimum=0))


@dataclass(frozen=True)
class LabelsImportParams(DagParams):
    """A ``spine_labels_import`` run's params."""

    destination: str = field(default="/data/site", metadata=_m(
        "site folder or s3://bucket/prefix", type="string"))
    series_uids: list[str] = field(default_factory=list, metadata=_m(
        "NLST CT SeriesInstanceUIDs to label", type="array"))
    model: str = field(default=SPINE_MODEL, metadata=_m(
        "map the vertebrae to one spine label, or to C1..L5", enum=MODELS))
    download_dir: str = field(default="/tmp/static-dicomweb-totalseg", metadata=_m(
        "worker folder for the downloaded SEG and CT files", type="string"))
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
