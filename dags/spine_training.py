"""Train the spine model on the site's SEG labels; publish it only when it beats the current one.

``plan`` builds the training manifest from the site (CT series with SEG labels, a
held-out split by patient) and skips the run when fewer than ``min_new_labels``
labels are new since the current model; ``export`` writes the data set;
``backend`` picks one of ``train_local`` (``spine_model.train`` on this worker,
CPU: the embedded default), ``train_monailabel`` (``POST /train/{model}`` on the
MONAI Label server, then its weights) or ``train_sagemaker`` (the Amazon
provider's ``SageMakerTrainingOperator``, the site's ``_training/`` prefix as
the ``training`` channel); ``evaluate`` computes the held-out Dice of the new and
of the current weights; ``publish`` stores the new weights under the site's
``_models/`` and emits the ``spine_model`` Asset, only when they are better.

Scheduled on the ``dicomweb_site`` and ``spine_labels`` Assets (the site comes
from the event); trigger by hand with e.g. ``{"destination": "s3://bucket/nlst",
"backend": "sagemaker", "sagemaker_role_arn": "...", "sagemaker_image_uri": "..."}``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.providers.amazon.aws.operators.sagemaker import SageMakerTrainingOperator
from airflow.sdk import Param, dag, task

from static_dicomweb_airflow.assets import LABELS, MODEL, SITE

PARAMS = {
    "destination": Param("", type="string",
                         description="site folder or s3://bucket/prefix (empty: the triggering event's)"),
    "model": Param("spine_cpu", enum=["spine_cpu", "localization_spine"],
                   description="MONAI Label model to train: one spine label, or C1..L5"),
    "backend": Param("local", enum=["local", "monailabel", "sagemaker"],
                     description="where to train: this worker (CPU), the MONAI Label server, SageMaker"),
    "min_new_labels": Param(1, type="integer", minimum=0,
                            description="train only when this many labels are new"),
    "heldout_fraction": Param(0.25, type="number", minimum=0, maximum=0.9,
                              description="share of patients held out to compare models"),
    "epochs": Param(20, type="integer", minimum=1, description="training epochs"),
    "fine_tune": Param(True, type="boolean", description="local: start from the current weights"),
    "min_improvement": Param(0.0, type="number", description="Dice the new model must gain"),
    "trainer_python": Param("", type="string",
                            description="a Python with torch and MONAI (default: MONAI Label's venv)"),
    "work_dir": Param("/tmp/static-dicomweb-training", type="string",
                      description="worker folder for the exported data set and weights"),
    "aws_conn_id": Param("aws_default", type="string", description="Airflow connection for S3 and SageMaker"),
    "monailabel_conn_id": Param("monailabel_default", type="string",
                                description="Airflow HTTP connection of the MONAI Label server"),
    "sagemaker_role_arn": Param("", type="string", description="sagemaker: the training job's IAM role"),
    "sagemaker_image_uri": Param("", type="string",
                                 description="an image whose entry point runs python -m spine_model.train"),
    "sagemaker_instance_type": Param("ml.g5.xlarge", type="string",
                                     description="sagemaker: the training instance type"),
    "train_timeout_s": Param(7200, type="integer", minimum=60,
                             description="fail the training after this many seconds"),
    "artifact_timeout_s": Param(0, type="integer", minimum=0,
                                description="wait this long for model.tar.gz after the job ends"),
}
RETRIES = {"retries": 2, "retry_delay": timedelta(seconds=30), "retry_exponential_backoff": True,
           "max_retry_delay": timedelta(minutes=10)}
AFTER_ONE_BACKEND = "none_failed_min_one_success"


@dag(dag_id="spine_training", description="train the spine model on the site's labels; publish it if better",
     schedule=(SITE | LABELS), start_date=datetime(2026, 1, 1), catchup=False,
     params=PARAMS, default_args=RETRIES, tags=["static-dicomweb", "annotation"], doc_md=__doc__,
     max_active_runs=1)
def spine_training() -> None:

    @task
    def plan(params: dict[str, Any] | None = None, triggering_asset_events: Any = None) -> dict[str, Any]:
        from static_dicomweb_airflow import training
        from static_dicomweb_airflow.runtime import with_destination

        p = with_destination(params or {}, triggering_asset_events)
        return {"params": p, "manifest": training.plan(p)}

    @task
    def export(planned: dict[str, Any]) -> dict[str, Any]:
        from static_dicomweb_airflow import training

        return {**planned, "dataset": training.export(planned["manifest"], planned["params"])}

    @task.branch
    def backend(exported: dict[str, Any]) -> str:
        chosen = exported["params"].get("backend") or "local"
        return "sagemaker_config" if chosen == "sagemaker" else f"train_{chosen}"

    @task
    def train_local(exported: dict[str, Any], run_id: str | None = None) -> dict[str, Any]:
        from static_dicomweb_airflow import training

        return training.train_local(exported["dataset"], exported["params"], run_id or "manual")

    @task
    def train_monailabel(exported: dict[str, Any], run_id: str | None = None) -> dict[str, Any]:
        from static_dicomweb_airflow import training

        return training.train_monailabel(exported["dataset"], exported["params"], run_id or "manual")

    @task
    def sagemaker_config(exported: dict[str, Any], run_id: str | None = None) -> dict[str, Any]:
        from static_dicomweb_airflow import training

        return training.sagemaker_config(exported["dataset"], exported["params"], run_id or "manual")

    @task
    def collect_sagemaker(job: dict[str, Any], exported: dict[str, Any],
                          run_id: str | None = None) -> dict[str, Any]:
        from static_dicomweb_airflow import training

        return training.collect_sagemaker(job, exported["dataset"], exported["params"], run_id or "manual")

    @task(trigger_rule=AFTER_ONE_BACKEND)
    def evaluate(exported: dict[str, Any], ti: Any = None) -> dict[str, Any]:
        from static_dicomweb_airflow import training

        pulled = ti.xcom_pull(task_ids=["train_local", "train_monailabel", "collect_sagemaker"])
        candidate = next(c for c in pulled if c)
        return training.evaluate(candidate, exported["dataset"], exported["params"])

    @task(outlets=[MODEL])
    def publish(evaluation: dict[str, Any], exported: dict[str, Any], run_id: str | None = None,
                outlet_events: Any = None) -> dict[str, Any]:
        from static_dicomweb_airflow import training

        record = training.publish(evaluation, exported["manifest"], exported["params"], run_id or "manual")
        outlet_events[MODEL].extra = {**record, "destination": exported["params"]["destination"]}
        return record

    exported = export(plan())
    chosen = backend(exported)
    config = sagemaker_config(exported)
    job = SageMakerTrainingOperator(
        task_id="train_sagemaker", config=config,
        aws_conn_id="{{ params.aws_conn_id }}", wait_for_completion=True, print_log=False,
        check_interval=10, max_ingestion_time=None)
    local, monai, collected = train_local(exported), train_monailabel(exported), collect_sagemaker(
        job.output, exported)
    chosen >> [local, monai, config]
    config >> job
    evaluation = evaluate(exported)
    [local, monai, collected] >> evaluation
    publish(evaluation, exported)


spine_training()
