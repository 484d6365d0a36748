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
from airflow.sdk import dag, task

from static_dicomweb_airflow.assets import LABELS, MODEL, SITE
from static_dicomweb_airflow.params import TrainingParams, airflow_params

# declared once, with their defaults and descriptions, in static_dicomweb_airflow.params
PARAMS = airflow_params(TrainingParams)
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
        chosen = TrainingParams.of(exported["params"]).backend
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
