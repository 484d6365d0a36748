"""Task bodies of ``spine_training``, ``monailabel_refresh`` and ``spine_labels_import``.

One call into the library each.  Each body reads a run's params (a dict, as XCom
carries them) through its DAG's typed params (:mod:`.params`), so no default is
written here.

Training runs out of process: the ``local`` backend runs ``python -m spine_model.train``
with the trainer's interpreter (``trainer_python``: one with torch and MONAI, by default
MONAI Label's virtualenv), so Airflow's own environment never needs torch.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

from airflow.sdk.exceptions import AirflowException, AirflowSkipException

import static_dicomweb
from static_dicomweb.errors import PermanentError
from static_dicomweb.qido import stored_answer
from static_dicomweb.spine import registry
from static_dicomweb.spine.dataset import export_dataset, upload_dataset
from static_dicomweb.spine.manifest import TrainingManifest, build_manifest
from static_dicomweb.store import Store

from .monailabel import MonaiLabelHook
from .params import LabelsImportParams, RefreshParams, TrainingParams
from .runtime import permanent_errors_fail, report_lineage, site_uri, store_for

log = logging.getLogger(__name__)
INCLUDE = Path(static_dicomweb.__file__).resolve().parents[1]
REPO = INCLUDE.parent
DEFAULT_TRAINER_PYTHON = REPO / "clients" / "monailabel" / ".venv" / "bin" / "python"


def _store(p: TrainingParams | RefreshParams | LabelsImportParams) -> Store:
    return store_for(p.destination, p.aws_conn_id)


def _work(p: TrainingParams | RefreshParams, *parts: str) -> Path:
    path = Path(p.work_dir, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


# --- spine_training ---------------------------------------------------------------------------
def plan(params: dict[str, Any]) -> dict[str, Any]:
    """The training manifest, or a skip when there are too few new labels to train on.

    New labels are SEG series the current model was not trained on; a run needs at
    least ``min_new_labels`` of them, and at least one training and one held-out case.
    """
    p = TrainingParams.of(params)
    with permanent_errors_fail():
        store = _store(p)
        manifest = build_manifest(store, p.model, heldout_fraction=p.heldout_fraction)
    current = registry.current(store, p.model) or {}
    seen = set(current.get("seg_series", []))
    new = [c.seg_series for c in manifest.cases if c.seg_series not in seen]
    log.info("%d labelled series (%d train, %d held out), %d new since the current model; skipped: %s",
             len(manifest.cases), len(manifest.train), len(manifest.heldout), len(new), manifest.skipped)
    if len(new) < p.min_new_labels:
        raise AirflowSkipException(f"{len(new)} new label(s), fewer than min_new_labels={p.min_new_labels}")
    if not manifest.train or not manifest.heldout:
        raise AirflowSkipException(f"{len(manifest.cases)} labelled series of "
                                   f"{len({c.patient for c in manifest.cases})} patient(s): need a training "
                                   "and a held-out patient")
    return {**manifest.to_json(), "new_labels": len(new)}


def export(manifest_json: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """Write the data set (one ``.npz`` per case); for SageMaker also into the site's store."""
    p = TrainingParams.of(params)
    manifest = TrainingManifest.from_json(manifest_json)
    store = _store(p)
    folder = _work(p, manifest.model, manifest.digest, "data")
    with permanent_errors_fail():  # the same site gives the same data set: a retry cannot help
        data = export_dataset(store, manifest, folder)
        if not data["train"] or not data["heldout"]:
            raise PermanentError(f"nothing left to train on or to hold out: {data['rejected']}")
    out: dict[str, Any] = {"folder": str(folder), "model": manifest.model, "digest": manifest.digest,
                           "rejected": data["rejected"]}
    if p.backend == "sagemaker":
        prefix = upload_dataset(folder, store, f"_training/{manifest.model}/{manifest.digest}/data")
        out["s3_uri"] = f"{p.destination.rstrip('/')}/{prefix}/"
        out["output_uri"] = f"{p.destination.rstrip('/')}/_training/{manifest.model}/output"
    site = site_uri(p.destination)
    report_lineage(export, (f"{site}/studies/{c.study}/series/{s}" for c in manifest.cases
                            for s in (c.series, c.seg_series)), folder.as_uri())
    return out


def _trainer(p: TrainingParams, module: str, *args: str) -> dict[str, Any]:
    # an empty trainer_python (the param's default) means MONAI Label's virtualenv
    python = p.trainer_python or str(DEFAULT_TRAINER_PYTHON)
    with permanent_errors_fail():  # a missing interpreter is not installed by a retry
        if not Path(python).exists():
            raise PermanentError(f"trainer_python {python} does not exist: run clients/monailabel/setup.sh "
                                 "or set the param to a Python with torch and MONAI")
    env = {**os.environ, "PYTHONPATH": str(INCLUDE), "PYTHONWARNINGS": "ignore"}
    cmd = [python, "-m", module, *args]
    log.info("running %s", " ".join(cmd))
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if run.returncode != 0:
        raise AirflowException(f"{module} exited {run.returncode}: {run.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    return result


def train_local(dataset: dict[str, Any], params: dict[str, Any], run_id: str) -> dict[str, Any]:
    """Train with ``spine_model.train`` on this worker (from the current weights if ``fine_tune``)."""
    p = TrainingParams.of(params)
    out = _work(p, dataset["model"], dataset["digest"], _safe(run_id))
    args = ["--data", dataset["folder"], "--model-dir", str(out), "--model", dataset["model"],
            "--epochs", str(int(p.epochs))]
    if p.fine_tune:
        current = registry.fetch_weights(_store(p), dataset["model"], out / "current.pt")
        if current:
            args += ["--init", str(out / "current.pt")]
    metrics = _trainer(p, "spine_model.train", *args)
    log.info("trained %s: loss %s, held-out Dice %s in %s s", dataset["model"], metrics["loss"][-1:],
             metrics["dice"], metrics["train_seconds"])
    return {"weights": str(out / "model.pt"), "backend": "local", "train_seconds": metrics["train_seconds"]}


def train_monailabel(dataset: dict[str, Any], params: dict[str, Any], run_id: str) -> dict[str, Any]:
    """``POST /train/{model}`` on the MONAI Label server, wait for DONE, download its weights."""
    p = TrainingParams.of(params)
    client = MonaiLabelHook(p.monailabel_conn_id).get_conn()
    client.reload()  # its datastore lists the site's labels anew
    model = dataset["model"]
    # no MLflow (its store is not set up on a static site's server); all labelled series train
    started = client.start_training(model, {"max_epochs": int(p.epochs), "val_split": 0.0,
                                            "multi_gpu": False, "tracking": "None"})
    log.info("MONAI Label training started: %s", started)
    status = client.wait_training(started.get("id"), timeout=p.train_timeout_s,
                                  progress=lambda s: log.info("MONAI Label training: %s", s.get("status")))
    out = _work(p, model, dataset["digest"], _safe(run_id))
    client.download_model(model, out / "model.pt")
    return {"weights": str(out / "model.pt"), "backend": "monailabel", "status": status.get("status")}


def sagemaker_config(dataset: dict[str, Any], params: dict[str, Any], run_id: str) -> dict[str, Any]:
    """The ``CreateTrainingJob`` request: the site's ``_training`` prefix as the ``training`` channel."""
    p = TrainingParams.of(params)
    with permanent_errors_fail():
        if "s3_uri" not in dataset:
            raise PermanentError("the sagemaker backend needs an s3:// destination")
    name = f"spine-{dataset['model'].replace('_', '-')}-{dataset['digest'][:8]}-{int(time.time())}"
    return {
        "TrainingJobName": name[:63],
        "AlgorithmSpecification": {"TrainingImage": p.sagemaker_image_uri,
                                   "TrainingInputMode": "File"},
        "RoleArn": p.sagemaker_role_arn,
        "InputDataConfig": [{"ChannelName": "training", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": dataset["s3_uri"],
            "S3DataDistributionType": "FullyReplicated"}}}],
        "OutputDataConfig": {"S3OutputPath": dataset["output_uri"]},
        "ResourceConfig": {"InstanceType": p.sagemaker_instance_type,
                           "InstanceCount": 1, "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": int(p.train_timeout_s)},
        "HyperParameters": {"epochs": str(int(p.epochs)), "model": dataset["model"]},
        "Tags": [{"Key": "static-dicomweb:run", "Value": run_id[:256]}],
    }


def collect_sagemaker(job: dict[str, Any], dataset: dict[str, Any], params: dict[str, Any],
                      run_id: str) -> dict[str, Any]:
    """Fetch ``model.tar.gz`` of a finished training job and unpack its ``model.pt``."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    p = TrainingParams.of(params)
    uri = job["Training"]["ModelArtifacts"]["S3ModelArtifacts"]
    from static_dicomweb.s3store import parse_s3_url

    bucket, key = parse_s3_url(uri)
    hook = S3Hook(aws_conn_id=p.aws_conn_id)
    deadline = time.monotonic() + p.artifact_timeout_s
    while not hook.check_for_key(key, bucket_name=bucket):
        if time.monotonic() > deadline:
            raise AirflowException(f"{uri}: the training job wrote no model artifact")
        time.sleep(2)
    out = _work(p, dataset["model"], dataset["digest"], _safe(run_id))
    archive = Path(hook.download_file(key, bucket_name=bucket, local_path=str(out),
                                      preserve_file_name=True, use_autogenerated_subdir=False))
    with tarfile.open(archive) as tar:
        member = tar.getmember("model.pt")
        tar.extract(member, out, filter="data")
    return {"weights": str(out / "model.pt"), "backend": "sagemaker",
            "job": job["Training"]["TrainingJobName"]}


def evaluate(candidate: dict[str, Any], dataset: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """Held-out Dice of the candidate and of the current model, on the same cases."""
    p = TrainingParams.of(params)
    model = dataset["model"]
    new = _trainer(p, "spine_model.evaluate", "--data", dataset["folder"],
                   "--weights", candidate["weights"], "--model", model)
    current_path = Path(candidate["weights"]).with_name("current.pt")
    record = registry.fetch_weights(_store(p), model, current_path)
    old = (_trainer(p, "spine_model.evaluate", "--data", dataset["folder"],
                    "--weights", str(current_path), "--model", model) if record else {"dice": None})
    better = registry.should_publish(new["dice"], old["dice"],
                                     min_improvement=p.min_improvement)
    log.info("held-out Dice: candidate %s, current %s (%s): %s", new["dice"], old["dice"],
             record and record["sha256"][:12], "publish" if better else "keep the current model")
    return {**candidate, "dice": new["dice"], "per_case": new["per_case"], "current_dice": old["dice"],
            "current_sha256": record and record["sha256"], "better": better}


def publish(evaluation: dict[str, Any], manifest_json: dict[str, Any], params: dict[str, Any],
            run_id: str) -> dict[str, Any]:
    """Store the weights as the current model (only when they beat it); the Asset event's extra."""
    if not evaluation["better"]:
        raise AirflowSkipException(f"held-out Dice {evaluation['dice']} does not beat the current "
                                   f"model's {evaluation['current_dice']}: not published")
    p = TrainingParams.of(params)
    manifest = TrainingManifest.from_json(manifest_json)
    record = registry.publish(
        _store(p), manifest.model, Path(evaluation["weights"]), dice=evaluation["dice"],
        previous_dice=evaluation["current_dice"], backend=evaluation["backend"], run_id=run_id,
        manifest_digest=manifest.digest, seg_series=sorted(c.seg_series for c in manifest.cases),
        train_series=sorted(c.series for c in manifest.train),
        heldout_series=sorted(c.series for c in manifest.heldout))
    report_lineage(publish, [Path(evaluation["weights"]).resolve().as_uri()],
                   f"{site_uri(p.destination)}/{record['key']}")
    return record


def _safe(run_id: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in run_id)


# --- monailabel_refresh -----------------------------------------------------------------------
def refresh_datastore(params: dict[str, Any]) -> dict[str, Any]:
    """``POST /reload``, then check that the datastore lists every series the site answers."""
    p = RefreshParams.of(params)
    client = MonaiLabelHook(p.monailabel_conn_id).get_conn()
    query = {k: [str(v)] for k, v in p.search_filter.items()}
    expected = len(stored_answer(_store(p), "series", query))
    before = client.image_count()
    client.reload()
    deadline = time.monotonic() + p.check_timeout_s
    while (count := client.image_count()) != expected:
        if time.monotonic() > deadline:
            raise AirflowException(f"MONAI Label lists {count} images after /reload; the site answers "
                                   f"{expected} series for {query}")
        time.sleep(3)
    log.info("MONAI Label datastore: %d images before, %d after /reload (site: %d)", before, count, expected)
    return {"before": before, "after": count, "expected": expected}


def refresh_model(params: dict[str, Any]) -> dict[str, Any]:
    """Upload the published weights if MONAI Label serves others; check the checksum it reports."""
    p = RefreshParams.of(params)
    model = p.model
    store = _store(p)
    weights = _work(p, model, "refresh") / f"{model}.pt"
    with permanent_errors_fail():
        record = registry.fetch_weights(store, model, weights)
    if record is None:
        raise AirflowSkipException(f"no published weights of {model} yet")
    want = f"SHA256:{record['sha256']}"
    client = MonaiLabelHook(p.monailabel_conn_id).get_conn()
    served = client.model_info(model)
    if served and served.checksum == want:
        log.info("MONAI Label already serves %s %s", model, want)
        return {"model": model, "checksum": want, "uploaded": False}
    uploaded = client.upload_model(model, weights)
    served = client.model_info(model)
    with permanent_errors_fail():
        if uploaded.checksum != want or served is None or served.checksum != want:
            raise PermanentError(f"MONAI Label serves {served and served.checksum} for {model} after "
                                 f"uploading {want}")
    log.info("MONAI Label now serves %s %s (was %s)", model, want, served.checksum)
    return {"model": model, "checksum": want, "uploaded": True, "dice": record.get("dice")}


# --- spine_labels_import ----------------------------------------------------------------------
def import_labels(params: dict[str, Any]) -> dict[str, Any]:
    """Import the TotalSegmentator SEGs of the requested CT series (vertebrae → the model's labels)."""
    from static_dicomweb.spine.totalseg import import_totalseg

    p = LabelsImportParams.of(params)
    with permanent_errors_fail():
        if not p.series_uids:
            raise PermanentError("series_uids is empty: name the NLST CT series to label")
        summary = import_totalseg(list(p.series_uids), _store(p), p.download_dir, model=p.model,
                                  profile=p.profile)
    log.info("imported %d SEG(s); skipped %s", len(summary["imported"]), summary["skipped"])
    return dict(summary)


def aggregate_labels(summary: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """Index the imported SEGs; the ``spine_labels`` event's extra (names the site)."""
    from static_dicomweb import pipeline

    p = LabelsImportParams.of(params)
    with permanent_errors_fail():
        done = pipeline.aggregate_batches([summary], _store(p), p.profile)  # type: ignore[list-item]
    return {**done, "destination": p.destination, "imported": len(summary["imported"]),
            "skipped": summary["skipped"]}
