"""The AI-assisted annotation loop, end to end, against a real MONAI Label server (``make e2e-annotation``).

sample → ``dicomweb_site`` → MONAI Label lists the series → TotalSegmentator-style SEGs of three
patients imported as the first labels → ``spine_training`` (local backend) publishes a first
model → ``monailabel_refresh`` uploads it → inference on an unlabelled series returns a label → a
corrected label saved as ``final`` lands in the site as SEG (STOW-RS) → ``spine_training`` trains
again, beats the first model on the held-out patient and publishes → ``monailabel_refresh``
uploads it (the checksum MONAI Label reports changes) → the next inference uses it.  Then the
``monailabel`` backend: ``spine_training`` asks MONAI Label to train and judges its weights.

Every DAG runs with ``airflow dags test`` (Airflow's own executor in-process, a real metadata
database). Prints ``DICE:`` lines; timings and logs go to ``.artifacts/annotation-loop/``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.filewriter import dcmwrite

from static_dicomweb.convert import convert
from static_dicomweb.dicomjson import first
from static_dicomweb.monailabel import MonaiLabelClient
from static_dicomweb.qido import stored_answer
from static_dicomweb.serve import serve_in_thread
from static_dicomweb.spine import registry
from static_dicomweb.spine.labels import model_labels
from static_dicomweb.spine.manifest import seg_rows
from static_dicomweb.spine.totalseg import map_totalseg
from static_dicomweb.spine.volume import read_series_volume
from static_dicomweb.store import LocalStore
from static_dicomweb_sample import SampleSpec, generate_sample

from .monailabel_server import INSTALLED, free_port, running_monailabel
from .spine_fixtures import totalseg_like_seg
from .test_monailabel import nifti_label, read_nifti
from .test_spine_training import phantom_seed_of, phantom_truth

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
ARTIFACTS = ROOT / ".artifacts" / "annotation-loop"
SPEC = SampleSpec(patients=4, slices=24, rows=64, columns=64, multiframe=False, localizer=False)
TOKEN = "annotation-loop-token"
MODEL = "spine_cpu"
log = logging.getLogger(__name__)

pytestmark = [pytest.mark.integration, pytest.mark.clients, pytest.mark.slow, pytest.mark.timeout(2400)]


class Airflow:
    """``airflow`` commands on a project-local home (SQLite metadata, the project's DAGs)."""

    def __init__(self, home: Path, monailabel_url: str) -> None:
        self.env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
                    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                    "AIRFLOW_CONN_MONAILABEL_DEFAULT": monailabel_url,
                    "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
                        {"type": "file", "log_file_path": str(home / "openlineage.jsonl"), "append": True})}
        subprocess.run([AIRFLOW, "db", "migrate"], env=self.env, check=True, capture_output=True)
        subprocess.run([sys.executable, "-m", "static_dicomweb_airflow.pools"], env=self.env, check=True)

    def dags_test(self, dag_id: str, conf: dict[str, Any], name: str) -> str:
        run = subprocess.run([AIRFLOW, "dags", "test", dag_id, "-c", json.dumps(conf)], env=self.env,
                             capture_output=True, text=True, timeout=1200, check=False)
        out = run.stdout + run.stderr
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / f"{name}.log").write_text(out)
        assert run.returncode == 0 and "state=success, run_type" in out, f"{dag_id}: {out[-4000:]}"
        return out


def axial_series(store: LocalStore) -> list[dict[str, str]]:
    """The site's CT series with their study, patient and description, in patient order."""
    rows = stored_answer(store, "series", {"Modality": ["CT"]})
    out = [{"study": first(r, "0020000D"), "series": first(r, "0020000E"), "patient": first(r, "00100020"),
            "description": first(r, "0008103E", "")} for r in rows]
    return sorted(out, key=lambda r: (r["patient"], r["description"]))


def nifti_order(voxels: np.ndarray, hu: np.ndarray) -> bool:
    """Whether a NIfTI's [k, j, i] voxels run in the volume's slice order (else reversed)."""
    if np.allclose(voxels, hu, atol=1.0):
        return True
    assert np.allclose(voxels[::-1], hu, atol=1.0), "the NIfTI is not this series"
    return False


class Laps:
    """The seconds each step of the loop took, printed as it ends and kept for .artifacts/."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self.clock = time.monotonic()

    def __call__(self, name: str) -> None:
        self.timings[name] = round(time.monotonic() - self.clock, 1)
        print(f"  {name}: {self.timings[name]} s", flush=True)
        self.clock = time.monotonic()


def test_annotation_loop(tmp_path: Path) -> None:
    if not INSTALLED.is_file():
        pytest.skip("MONAI Label is not installed: run clients/monailabel/setup.sh (make monailabel-setup)")
    lap = Laps()
    generate_sample(tmp_path / "in", SPEC)
    site = tmp_path / "site"
    port = free_port()
    airflow = Airflow(tmp_path / "airflow", f"http://127.0.0.1:{port}")
    lap("sample and airflow db migrate")
    airflow.dags_test("dicomweb_site", {"source": str(tmp_path / "in"), "destination": str(site),
                                        "skip_localizers": False, "batch_size": 4}, "1-dicomweb_site")
    lap("dicomweb_site")
    store = LocalStore(site)
    cts = axial_series(store)
    assert len(cts) == 2 * SPEC.patients
    refresh = {"destination": str(site), "model": MODEL, "work_dir": str(tmp_path / "training")}

    server, site_url = serve_in_thread(str(site), stow_token=TOKEN)
    try:
        with running_monailabel(site_url, tmp_path / "monailabel", TOKEN, port) as (url, ml_log):
            client = MonaiLabelClient(url, timeout=120)
            lap("MONAI Label start")
            # 1. MONAI Label lists the site's series
            assert client.image_count() == len(cts)
            assert MODEL in client.info()["models"]

            # 2. the first labels: TotalSegmentator-style SEGs of three patients, imported (vertebrae → spine)
            bootstrap = import_totalseg_labels(store, cts, tmp_path / "labels")
            lap("TotalSegmentator-style labels imported")

            # 3. the first model (local backend, few epochs), published
            conf = {"destination": str(site), "model": MODEL, "backend": "local",
                    "work_dir": str(tmp_path / "training"), "heldout_fraction": 0.34}
            airflow.dags_test("spine_training", {**conf, "epochs": 30}, "2-spine_training")
            first = registry.current(store, MODEL)
            assert first is not None, "the first model was not published"
            lap("spine_training 1 (local)")

            # 4. monailabel_refresh serves it
            airflow.dags_test("monailabel_refresh", refresh, "3-refresh")
            check_served(client, first["sha256"])
            lap("monailabel_refresh 1")

            # 5. inference on an unlabelled series returns a label
            target = unlabelled_series(cts, bootstrap)
            header, image, predicted = first_inference(client, url, target["series"])
            lap("inference 1")

            # 6. the radiologist corrects it and saves it as final: a SEG in the site, by STOW-RS
            save_corrected_label(client, store, target, header, image, tmp_path / "label.nii.gz")
            lap("final label saved (STOW-RS)")

            # 7. spine_training again: more labels, more epochs, from the current weights
            airflow.dags_test("spine_training", {**conf, "epochs": 20}, "4-spine_training")
            second = check_second_model(store, first["sha256"])
            lap("spine_training 2 (local)")

            # 8. monailabel_refresh: the datastore still lists every CT series; the new weights are served
            airflow.dags_test("monailabel_refresh", refresh, "5-refresh")
            served_checksum = check_served(client, second["sha256"])
            assert served_checksum != f"SHA256:{first['sha256']}"
            _, predicted2, _ = read_nifti(client.infer(MODEL, target["series"]))
            assert predicted2.any() and not np.array_equal(predicted, predicted2)
            lap("monailabel_refresh 2 and inference 2")
            print(f"DICE: spine_cpu held-out Dice {second['dice']:.3f} (previous model "
                  f"{second['previous_dice']:.3f}; first model on its own split {first['dice']:.3f}); "
                  f"held out: {', '.join(second['heldout_series'])}", flush=True)

            # 9. the monailabel backend: MONAI Label trains on the site's SEGs; Dice decides
            train_with_the_monailabel_backend(airflow, client, store, conf, second["sha256"], refresh, lap)
            (ARTIFACTS / "monailabel.log").write_bytes(ml_log.read_bytes())
    finally:
        server.shutdown()
        server.server_close()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "timings.json").write_text(json.dumps(lap.timings, indent=1) + "\n")


def import_totalseg_labels(store: LocalStore, cts: list[dict[str, str]],
                           folder: Path) -> list[dict[str, str]]:
    """Convert TotalSegmentator-style SEGs of three STANDARD series, mapped onto the model's labels,
    into the site; those three series."""
    folder.mkdir()
    bootstrap = [c for c in cts if "STANDARD" in c["description"]][:3]
    for n, ct in enumerate(bootstrap):
        volume = read_series_volume(store, ct["study"], ct["series"])
        ts = totalseg_like_seg(volume, seed=phantom_seed_of(volume, SPEC),
                               series_uid=f"1.2.826.0.1.3680043.8.498.77.{n}.1",
                               sop_uid=f"1.2.826.0.1.3680043.8.498.77.{n}.2")
        mapped = map_totalseg(ts, volume, model_labels(MODEL))
        dcmwrite(folder / f"seg{n}.dcm", mapped, enforce_file_format=True)
    assert convert([folder], store).ok
    assert len(seg_rows(store)) == 3
    return bootstrap


def check_served(client: MonaiLabelClient, sha256: str) -> str:
    """MONAI Label serves the model whose weights have ``sha256``; its checksum."""
    served = client.model_info(MODEL)
    assert served is not None and served.checksum == f"SHA256:{sha256}"
    return served.checksum


def unlabelled_series(cts: list[dict[str, str]], labelled: list[dict[str, str]]) -> dict[str, str]:
    """A STANDARD series of a patient none of whose series is labelled."""
    patients = {b["patient"] for b in labelled}
    return next(c for c in cts if c["patient"] not in patients and "STANDARD" in c["description"])


def first_inference(client: MonaiLabelClient, url: str,
                    series: str) -> tuple[bytes, np.ndarray, np.ndarray]:
    """The NIfTI header and voxels of ``series`` as MONAI Label gives them, and the model's label of it."""
    header, image, _ = read_nifti(client.session.get(f"{url}/datastore/image", params={"image": series},
                                                     timeout=300).content)
    _, predicted, _ = read_nifti(client.infer(MODEL, series))
    assert predicted.shape == image.shape and predicted.any(), "the first model labelled nothing"
    return header, image, predicted


def save_corrected_label(client: MonaiLabelClient, store: LocalStore, target: dict[str, str],
                         header: bytes, image: np.ndarray, path: Path) -> None:
    """Save the phantom's true spine of ``target`` as its final label; it lands in the site as a SEG."""
    volume = read_series_volume(store, target["study"], target["series"])
    truth = phantom_truth(volume, SPEC)
    corrected = truth if nifti_order(image, volume.hu) else truth[::-1]
    path.write_bytes(nifti_label(header, corrected.astype(bool)))
    client.save_label(target["series"], path)
    assert len(seg_rows(store)) == 4, "the final label is not in the site"


def check_second_model(store: LocalStore, first_sha256: str) -> dict[str, Any]:
    """The second training published new weights, better than the model before it; their record."""
    second = registry.current(store, MODEL)
    assert second is not None and second["sha256"] != first_sha256, \
        f"the second model was not published: {second}"
    assert second["dice"] > (second["previous_dice"] or 0.0)
    return second


def train_with_the_monailabel_backend(airflow: Airflow, client: MonaiLabelClient, store: LocalStore,
                                      conf: dict[str, Any], second_sha256: str, refresh: dict[str, Any],
                                      lap: Laps) -> None:
    """spine_training with MONAI Label training; the next refresh serves whichever model is published."""
    airflow.dags_test("spine_training", {**conf, "backend": "monailabel", "epochs": 2,
                                         "min_new_labels": 0}, "6-spine_training-monailabel")
    status = client.training_status()
    assert status is not None and status["status"] == "DONE", status
    lap("spine_training 3 (monailabel backend)")
    # MONAI Label serves its own training result now; the next refresh serves the published one
    published = registry.current(store, MODEL)
    assert published is not None
    assert published["sha256"] == second_sha256 or published["backend"] == "monailabel"
    airflow.dags_test("monailabel_refresh", refresh, "7-refresh")
    check_served(client, published["sha256"])
    lap("monailabel_refresh 3")
