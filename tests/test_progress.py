"""Progress lines (instances, series, MB/s, ETA) where no bar is shown: logs, Airflow, pipes."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from static_dicomweb import pipeline
from static_dicomweb.progress import Progress
from static_dicomweb.store import LocalStore
from static_dicomweb_sample import SampleSpec, generate_sample


class Clock:
    """A clock the test moves by hand (the reporter's interval, without waiting)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_line_every_interval_with_counts_rate_and_eta(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    progress = Progress("convert", 10, interval=10, clock=clock)
    with caplog.at_level(logging.INFO, logger="static_dicomweb.progress"):
        for i in range(4):
            clock.now += 2
            progress.update(1, nbytes=5_000_000, series=("1.2", f"1.2.{i // 2}"))
        assert caplog.messages == []  # 8 s: not yet
        clock.now += 2
        progress.update(1, nbytes=5_000_000, series=("1.2", "1.2.2"))
        clock.now += 20
        progress.update(5, nbytes=25_000_000)
        progress.close()
    assert caplog.messages == [
        "convert: 5/10 instances (50%), 3 series, 25.0 MB, 2.5 MB/s, ETA 10s",
        "convert: 10/10 instances (100%), 3 series, 50.0 MB, 1.7 MB/s, in 30s",
    ]  # the final count once: close() does not repeat it


def test_a_short_step_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    with caplog.at_level(logging.INFO, logger="static_dicomweb.progress"):
        progress = Progress("aggregate: series", 3, unit="series", clock=clock)
        progress.update(3)
        progress.close()
    assert caplog.messages == []


def test_batch_conversion_and_aggregation_report_progress(tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # what an Airflow task logs: a line per interval; an interval of 0 logs every item
    monkeypatch.setattr("static_dicomweb.progress.INTERVAL_S", 0.0)
    generate_sample(tmp_path / "in", SampleSpec(patients=1, slices=4, rows=32, columns=32))
    files = sorted(str(p) for p in (tmp_path / "in").rglob("*.dcm"))
    store = LocalStore(tmp_path / "site")
    with caplog.at_level(logging.INFO, logger="static_dicomweb.progress"):
        result = pipeline.convert_batch(files, store)
        pipeline.aggregate_batches([result], store)
    converts = [m for m in caplog.messages if m.startswith("convert: ")]
    assert converts[-1].startswith(f"convert: {len(files)}/{len(files)} instances (100%), 5 series, ")
    assert " MB/s, " in converts[-1]
    assert any(m.startswith("aggregate: series: 5/5 series (100%)") for m in caplog.messages)
    assert any(m.startswith("aggregate: studies: 1/1 studies (100%)") for m in caplog.messages)


def test_cli_without_a_terminal_prints_progress_lines(tmp_path: Path) -> None:
    generate_sample(tmp_path / "in", SampleSpec(patients=1, slices=4, rows=32, columns=32))
    cli = str(Path(sys.executable).with_name("static-dicomweb"))
    env = {**os.environ, "STATIC_DICOMWEB_PROGRESS_S": "0"}  # a line per file, not per 10 s
    run = subprocess.run([cli, "convert", str(tmp_path / "in"), "--out", str(tmp_path / "site")],
                         env=env, capture_output=True, text=True, check=True)
    assert "INFO static_dicomweb.progress: convert: 12/12 instances (100%), 5 series" in run.stderr
    assert "INFO static_dicomweb.progress: aggregate: series: 5/5 series (100%)" in run.stderr
    quiet = subprocess.run([cli, "-q", "convert", str(tmp_path / "in"), "--out", str(tmp_path / "q")],
                           env=env, capture_output=True, text=True, check=True)
    assert "progress" not in quiet.stderr
