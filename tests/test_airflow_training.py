"""The retry contract of the training task bodies: errors a retry cannot fix fail the task at once.

Airflow retries every exception but ``AirflowFailException`` (and skips); a ``PermanentError``
that escapes ``permanent_errors_fail()`` is retried like a transient one.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowFailException  # noqa: TID251 - tests the Airflow adapter

from static_dicomweb_airflow import training


def test_import_labels_without_series_fails_without_retry(tmp_path: Path) -> None:
    with pytest.raises(AirflowFailException, match="series_uids is empty"):
        training.import_labels({"series_uids": [], "destination": str(tmp_path / "site")})


def test_missing_trainer_python_fails_without_retry(tmp_path: Path) -> None:
    dataset = {"folder": str(tmp_path / "data"), "model": "spine_cpu", "digest": "d" * 16}
    params = {"destination": str(tmp_path / "site"), "work_dir": str(tmp_path / "work"),
              "trainer_python": str(tmp_path / "no-such-python"), "fine_tune": False}
    with pytest.raises(AirflowFailException, match="does not exist"):
        training.train_local(dataset, params, "manual__1")


def test_sagemaker_needs_an_s3_site(tmp_path: Path) -> None:
    dataset = {"folder": str(tmp_path / "data"), "model": "spine_cpu", "digest": "d" * 16}
    with pytest.raises(AirflowFailException, match="needs an s3:// destination"):
        training.sagemaker_config(dataset, {"destination": str(tmp_path / "site")}, "manual__1")


def test_export_with_every_case_rejected_fails_without_retry(tmp_path: Path) -> None:
    cases = [{"study": "1.2.3", "series": f"1.2.3.{n}", "seg_series": f"1.2.3.{n}0", "patient": f"P{n}",
              "split": split} for n, split in ((1, "train"), (2, "heldout"))]
    manifest = {"model": "spine_cpu", "cases": cases, "skipped": []}
    params = {"destination": str(tmp_path / "site"), "work_dir": str(tmp_path / "work")}
    with pytest.raises(AirflowFailException, match="nothing left to train on"):
        training.export(manifest, params)
