"""The training side of the annotation loop: manifest, data set, model registry, MONAI Label client,
and the ``sagemaker`` backend of ``spine_training`` against moto's SageMaker and S3."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from pydicom.filewriter import dcmwrite

from static_dicomweb.convert import convert
from static_dicomweb.monailabel import (
    MonaiLabelClient,
    MonaiLabelError,
    TrainingBusyError,
    TrainingFailedError,
)
from static_dicomweb.spine import registry
from static_dicomweb.spine.dataset import export_dataset
from static_dicomweb.spine.labels import model_labels
from static_dicomweb.spine.manifest import build_manifest, held_out
from static_dicomweb.spine.seg import write_seg
from static_dicomweb.spine.volume import SeriesVolume, read_series_volume
from static_dicomweb.store import LocalStore
from static_dicomweb_sample import SampleSpec, generate_sample, phantom_seed, phantom_volume

from .spine_fixtures import expected_spine, phantom_order
from .test_s3 import moto_endpoint  # noqa: F401  (the moto server fixture)

SPEC = SampleSpec(patients=3, slices=12, rows=32, columns=32, multiframe=False, localizer=False)


def phantom_seed_of(volume: SeriesVolume, spec: SampleSpec) -> int:
    """The phantom seed of a series' study, found by its voxels."""
    z, y, x = volume.shape
    for index in range(spec.patients * spec.studies_per_patient):
        seed = phantom_seed(spec.seed, index)
        if np.array_equal(phantom_order(volume, phantom_volume(z, y, x, seed)), volume.hu):
            return seed
    raise AssertionError(f"series {volume.series_uid} is no phantom of {spec}")


def phantom_truth(volume: SeriesVolume, spec: SampleSpec) -> np.ndarray:
    """The spine labels (vertebral bodies) of a phantom series."""
    return expected_spine(volume, seed=phantom_seed_of(volume, spec))


@pytest.fixture(scope="module")
def labelled_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A site of 3 patients (6 CT series) with a spine SEG on each patient's STANDARD series."""
    tmp = tmp_path_factory.mktemp("labelled")
    generate_sample(tmp / "in", SPEC)
    site = tmp / "site"
    store = LocalStore(site)
    assert convert([tmp / "in"], store).ok
    (tmp / "segs").mkdir()
    studies = sorted(store.children("studies/"))
    for n, study in enumerate(studies):
        for series in store.children(f"studies/{study}/series/"):
            volume = read_series_volume(store, study, series)
            if "STANDARD" not in str(volume.headers[0].SeriesDescription):
                continue
            labels = phantom_truth(volume, SPEC)
            seg = write_seg(volume, labels, model_labels("spine_cpu"), series_description="spine",
                            algorithm_name="test", algorithm_type="MANUAL")
            dcmwrite(tmp / "segs" / f"{n}.dcm", seg, enforce_file_format=True)
    assert convert([tmp / "segs"], store).ok
    return site


def test_held_out_split_is_by_patient_and_deterministic() -> None:
    patients = [f"P{i}" for i in range(10)]
    out = held_out(patients, 0.25)  # 2.5 patients: rounds up
    assert len(out) == 3 and out == held_out(list(reversed(patients)), 0.25)
    assert held_out(["A"], 0.5) == set()  # one patient: nothing to hold out
    assert len(held_out(["A", "B"], 0.9)) == 1  # always one left to train on


def test_manifest_pairs_each_ct_series_with_its_seg(labelled_site: Path) -> None:
    store = LocalStore(labelled_site)
    manifest = build_manifest(store, "spine_cpu", heldout_fraction=0.34)
    assert len(manifest.cases) == 3 and not manifest.skipped
    assert len(manifest.heldout) == 1 and len(manifest.train) == 2
    assert {c.patient for c in manifest.heldout}.isdisjoint({c.patient for c in manifest.train})
    assert manifest.digest == build_manifest(store, "spine_cpu", heldout_fraction=0.34).digest


def test_data_set_holds_image_and_label_in_xyz(labelled_site: Path, tmp_path: Path) -> None:
    store = LocalStore(labelled_site)
    manifest = build_manifest(store, "spine_cpu", heldout_fraction=0.34)
    data = export_dataset(store, manifest, tmp_path)
    assert len(data["train"]) == 2 and len(data["heldout"]) == 1 and not data["rejected"]  # type: ignore[arg-type]
    case = manifest.cases[0]
    with np.load(tmp_path / f"cases/{case.series}.npz") as npz:
        image, label, spacing = npz["image"], npz["label"], npz["spacing"]
    volume = read_series_volume(store, case.study, case.series)
    assert image.shape == (SPEC.columns, SPEC.rows, SPEC.slices) == label.shape
    np.testing.assert_array_equal(image, volume.hu.transpose(2, 1, 0))
    assert set(np.unique(label)) == {0, 1} and spacing[2] == pytest.approx(5.0)
    # every labelled voxel is bone in the phantom
    assert image[label == 1].min() > 150


def test_registry_publishes_only_better_weights(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "site")
    assert registry.current(store, "spine_cpu") is None
    assert registry.should_publish(0.1, None) and not registry.should_publish(None, None)
    assert registry.should_publish(0.8, 0.7) and not registry.should_publish(0.7, 0.7)
    assert not registry.should_publish(0.71, 0.7, min_improvement=0.05)
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"weights v1")
    record = registry.publish(store, "spine_cpu", weights, dice=0.5)
    assert record["sha256"] == hashlib.sha256(b"weights v1").hexdigest()
    assert registry.current(store, "spine_cpu") == record
    fetched = registry.fetch_weights(store, "spine_cpu", tmp_path / "back.pt")
    assert fetched == record and (tmp_path / "back.pt").read_bytes() == b"weights v1"
    assert store.headers(record["key"])["Content-Type"] == "application/octet-stream"  # type: ignore[index]


# --- the MONAI Label client against a real HTTP server that answers like MONAI Label's errors ----

class _Handler(http.server.BaseHTTPRequestHandler):
    answers: ClassVar[dict[tuple[str, str], tuple[int, str]]] = {}
    seen: ClassVar[list[tuple[str, str, str]]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode(errors="replace") if length else ""
        self.seen.append((self.command, self.path, body))
        route = (self.command, self.path.split("?")[0])
        status, text = self.answers.get(route, (404, '{"detail":"Not Found"}'))
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = _answer  # noqa: N815  (http.server's names)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def fake_server() -> Iterator[tuple[str, type[_Handler]]]:
    _Handler.answers, _Handler.seen = {}, []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Handler
    server.shutdown()
    server.server_close()


def test_client_errors_name_status_and_body(fake_server: tuple[str, type[_Handler]]) -> None:
    url, handler = fake_server
    handler.answers[("POST", "/train/spine_cpu")] = (429, '{"detail":"Training Task already running"}')
    handler.answers[("GET", "/info/")] = (500, "Internal Server Error: datastore unreachable")
    client = MonaiLabelClient(url, timeout=5)
    with pytest.raises(TrainingBusyError, match=r"429.*already running"):
        client.start_training("spine_cpu", {"max_epochs": 1})
    assert json.loads(handler.seen[-1][2]) == {"max_epochs": 1}
    with pytest.raises(MonaiLabelError, match=r"GET .*/info/: HTTP 500: Internal Server Error: datastore"):
        client.info()
    assert client.model_info("spine_cpu") is None  # 404: no weights yet
    with pytest.raises(MonaiLabelError, match="HTTP 0: no answer"):
        MonaiLabelClient("http://127.0.0.1:9", timeout=2).info()


def test_wait_training_ends_on_done_or_error(fake_server: tuple[str, type[_Handler]]) -> None:
    url, handler = fake_server
    client = MonaiLabelClient(url, timeout=5)
    handler.answers[("GET", "/train/")] = (200, json.dumps({"id": "t1", "status": "DONE"}))
    assert client.wait_training("t1", poll=0.01)["status"] == "DONE"
    failed = {"id": "t2", "status": "ERROR", "details": ["boom"]}
    handler.answers[("GET", "/train/")] = (200, json.dumps(failed))
    with pytest.raises(TrainingFailedError, match="boom"):
        client.wait_training("t2", poll=0.01)
    handler.answers[("GET", "/train/")] = (200, json.dumps({"id": "t3", "status": "RUNNING"}))
    with pytest.raises(MonaiLabelError, match="did not finish"):
        client.wait_training("t3", poll=0.01, timeout=0.05)


# --- the sagemaker backend: SageMakerTrainingOperator against moto's SageMaker and S3 ------------

TRAINER_PYTHON = Path(__file__).resolve().parents[1] / "clients" / "monailabel" / ".venv" / "bin" / "python"


class TrainingContainer(threading.Thread):
    """Plays SageMaker's training container: for each new job, run ``spine_model.train`` on its
    ``training`` channel (copied from S3) and upload ``model.tar.gz`` where the job says.

    moto records jobs as Completed at once and runs nothing; this stands in for the container image
    whose entry point is ``python -m spine_model.train`` (SM_CHANNEL_TRAINING, SM_MODEL_DIR).
    """

    def __init__(self, endpoint: str, work: Path) -> None:
        super().__init__(daemon=True)
        import boto3

        self.sm = boto3.client("sagemaker", endpoint_url=endpoint, region_name="us-east-1")
        self.s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        self.work, self.stop, self.jobs, self.errors = work, threading.Event(), [], []

    def run(self) -> None:
        while not self.stop.wait(1.0):
            for summary in self.sm.list_training_jobs()["TrainingJobSummaries"]:
                if summary["TrainingJobName"] not in self.jobs:
                    self.jobs.append(summary["TrainingJobName"])
                    try:
                        self.train(self.sm.describe_training_job(TrainingJobName=summary["TrainingJobName"]))
                    except Exception as exc:  # reported by the test
                        self.errors.append(repr(exc))

    def train(self, job: dict[str, Any]) -> None:
        import subprocess
        import tarfile

        name = job["TrainingJobName"]
        channel = job["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"]
        bucket, _, prefix = channel.removeprefix("s3://").partition("/")
        data, model = self.work / name / "data", self.work / name / "model"
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                target = data / obj["Key"][len(prefix):].lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(self.s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
        flags = [arg for k, v in sorted(job["HyperParameters"].items()) for arg in (f"--{k}", v)]
        env = {"SM_CHANNEL_TRAINING": str(data), "SM_MODEL_DIR": str(model), "PYTHONWARNINGS": "ignore",
               "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "include")}
        subprocess.run([str(TRAINER_PYTHON), "-m", "spine_model.train", *flags], env=env, check=True,
                       capture_output=True, timeout=900)
        archive = self.work / name / "model.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            for path in sorted(model.iterdir()):
                tar.add(path, arcname=path.name)
        artifact = job["ModelArtifacts"]["S3ModelArtifacts"]
        out_bucket, _, out_key = artifact.removeprefix("s3://").partition("/")
        self.s3.put_object(Bucket=out_bucket, Key=out_key, Body=archive.read_bytes())


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_sagemaker_backend_trains_from_the_site_prefix_and_publishes(
        moto_endpoint: str, labelled_site: Path, tmp_path: Path) -> None:  # noqa: F811
    import os
    import subprocess
    import sys

    from static_dicomweb.s3store import S3Store

    if not TRAINER_PYTHON.exists():
        pytest.skip("no trainer environment: run clients/monailabel/setup.sh")
    store = S3Store("s3://spine-site/nlst", endpoint_url=moto_endpoint)
    store.client.create_bucket(Bucket="spine-site")
    local = LocalStore(labelled_site)
    for key in local.walk():
        headers = local.headers(key) or {}
        from static_dicomweb.keys import ObjectSpec

        store.put(ObjectSpec(key, headers["Content-Type"], headers.get("Content-Encoding"),
                             headers.get("Cache-Control", "no-cache")), [local.get(key)])
    airflow = str(Path(sys.executable).with_name("airflow"))
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow"),
           "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW_CONN_AWS_DEFAULT": json.dumps({"conn_type": "aws", "extra": {
               "endpoint_url": moto_endpoint, "region_name": "us-east-1"}})}
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True)
    container = TrainingContainer(moto_endpoint, tmp_path / "container")
    container.start()
    conf = {"destination": "s3://spine-site/nlst", "backend": "sagemaker", "epochs": 2,
            "heldout_fraction": 0.34, "work_dir": str(tmp_path / "work"), "artifact_timeout_s": 900,
            "sagemaker_role_arn": "arn:aws:iam::123456789012:role/spine-training",
            "sagemaker_image_uri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/spine-model:latest"}
    try:
        run = subprocess.run([airflow, "dags", "test", "spine_training", "-c", json.dumps(conf)], env=env,
                             capture_output=True, text=True, timeout=1100, check=False)
    finally:
        container.stop.set()
    out = run.stdout + run.stderr
    assert run.returncode == 0 and "state=success, run_type" in out, out[-4000:]
    assert not container.errors, container.errors
    (job_name,) = container.jobs
    job = container.sm.describe_training_job(TrainingJobName=job_name)
    channel = job["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"]
    assert channel.startswith("s3://spine-site/nlst/_training/spine_cpu/")
    assert job["HyperParameters"] == {"epochs": "2", "model": "spine_cpu"}
    record = registry.current(store, "spine_cpu")
    assert record is not None and record["backend"] == "sagemaker", record
    assert record["key"].startswith("_models/spine_cpu/") and store.headers(record["key"]) is not None
    assert len(record["heldout_series"]) == 1 and len(record["train_series"]) == 2
