"""The ``dicomweb_site`` DAG from an S3 source to an S3 site (moto's S3 server over HTTP), validated
with no ``validate_url``, every S3 call through the Airflow connection ``aws_default``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from static_dicomweb.s3store import S3Store
from static_dicomweb_sample import SampleSpec, generate_sample

from .test_s3 import moto_endpoint  # noqa: F401  (the moto server fixture)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


def test_dag_from_s3_to_s3_through_the_connection(moto_endpoint: str, tmp_path: Path) -> None:  # noqa: F811
    generate_sample(tmp_path / "in", SampleSpec(patients=1, slices=4, rows=32, columns=32))
    source = S3Store("s3://dag-source/nlst", endpoint_url=moto_endpoint)
    source.client.create_bucket(Bucket="dag-source")
    source.client.create_bucket(Bucket="dag-site")
    for path in sorted((tmp_path / "in").rglob("*.dcm")):
        source.client.upload_file(str(path), "dag-source",
                                  f"nlst/{path.relative_to(tmp_path / 'in').as_posix()}")
    # only the connection knows the endpoint: boto3's own chain would go to AWS, which is unreachable
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT")}
    env.update({
        "AIRFLOW_HOME": str(tmp_path / "airflow"), "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps({
            "conn_type": "aws", "login": "testing", "password": "testing",
            "extra": {"endpoint_url": moto_endpoint, "region_name": "us-east-1"}})})
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "static_dicomweb_airflow.pools"], env=env, check=True)
    conf = {"source": "s3://dag-source/nlst", "destination": "s3://dag-site/site",
            "download_dir": str(tmp_path / "downloads"), "batch_size": 2, "skip_localizers": False}
    run = subprocess.run([AIRFLOW, "dags", "test", "dicomweb_site", "-c", json.dumps(conf)],
                         env=env, capture_output=True, text=True, timeout=900, check=False)
    log = run.stdout + run.stderr
    assert run.returncode == 0 and "state=success, run_type" in log, log[-4000:]
    site = S3Store("s3://dag-site/site", endpoint_url=moto_endpoint)
    report = json.loads(site.get("_site/validation-report.json"))
    assert report["errors"] == 0 and report["checked"]["instances"] == len(
        list((tmp_path / "in").rglob("*.dcm")))
    manifest = json.loads(site.get("_site/manifest.json"))
    assert manifest["counts"]["instances"] == report["checked"]["instances"]
