"""A typed client of the MONAI Label 0.8.5 REST API: the calls the annotation loop needs.

Every call has a timeout; every failure raises :class:`MonaiLabelError` naming
the method, the URL, the HTTP status and the start of the body, so a task log
says what the server answered.  A training start that the server refuses
because one is running (HTTP 429) raises :class:`TrainingBusyError`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from .errors import PermanentError

#: Training states of ``GET /train/`` that end a run.
FINISHED = frozenset({"DONE", "ERROR", "STOPPED"})


class MonaiLabelError(RuntimeError):
    """A MONAI Label request failed: the status (0 when no answer came) and the body say why."""

    def __init__(self, method: str, url: str, status: int, body: str) -> None:
        self.method, self.url, self.status, self.body = method, url, status, body
        super().__init__(f"MONAI Label {method} {url}: HTTP {status}: {body[:500]}")


class TrainingBusyError(MonaiLabelError):
    """``POST /train/{model}`` answered 429: a training task is already running."""


class TrainingFailedError(MonaiLabelError, PermanentError):
    """A training run ended in ERROR (or was stopped); the status body holds its details."""


@dataclass(frozen=True)
class ModelInfo:
    """What ``GET /model/info/{name}`` says of the weights a server uses."""

    checksum: str
    modified_time: int


class MonaiLabelClient:
    """MONAI Label over HTTP.

    Parameters
    ----------
    url : str
        The server's root, e.g. ``http://127.0.0.1:8000``.
    auth : tuple of str, optional
        HTTP Basic user and password (MONAI Label's ``MONAI_LABEL_AUTH_*`` settings).
    timeout : float, optional
        Seconds each request may take (connect and read).
    session : requests.Session, optional
        Reuse a session (connection pooling, retries).
    """

    def __init__(self, url: str, *, auth: tuple[str, str] | None = None, timeout: float = 60.0,
                 session: requests.Session | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = session or _retrying_session()
        if auth:
            self.session.auth = auth

    # --- plumbing ---------------------------------------------------------------------------
    def _request(self, method: str, path: str, *, timeout: float | None = None,
                 **kwargs: Any) -> requests.Response:
        url = f"{self.url}{path}"
        try:
            response = self.session.request(method, url, timeout=timeout or self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise MonaiLabelError(method, url, 0, f"no answer: {exc}") from exc
        if response.status_code == 429:
            raise TrainingBusyError(method, url, 429, response.text)
        if response.status_code >= 400:
            raise MonaiLabelError(method, url, response.status_code, response.text)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            raise MonaiLabelError(method, response.url, response.status_code,
                                  f"not JSON: {response.text}") from exc

    # --- app and datastore ------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """``GET /info/``: the app's models, trainers and labels."""
        result: dict[str, Any] = self._json("GET", "/info/")
        return result

    def datastore_stats(self) -> dict[str, Any]:
        """``GET /datastore/?output=stats``: ``total`` images, ``completed`` (labelled) and more."""
        result: dict[str, Any] = self._json("GET", "/datastore/", params={"output": "stats"})
        return result

    def image_count(self) -> int:
        """How many images (series) the datastore lists."""
        return int(self.datastore_stats()["total"])

    def reload(self) -> None:
        """``POST /reload``: rebuild the app, so its datastore lists the site anew."""
        self._request("POST", "/reload", timeout=max(self.timeout, 300.0))

    # --- models -----------------------------------------------------------------------------
    def model_info(self, name: str) -> ModelInfo | None:
        """The checksum of the weights ``name`` uses, or None when it has none (HTTP 404)."""
        try:
            data = self._json("GET", f"/model/info/{name}")
        except MonaiLabelError as exc:
            if exc.status == 404:
                return None
            raise
        return ModelInfo(checksum=str(data["checksum"]), modified_time=int(data.get("modified_time", 0)))

    def upload_model(self, name: str, weights: Path) -> ModelInfo:
        """``PUT /model/{name}``: replace the model's weights; the next inference uses them."""
        with weights.open("rb") as f:
            data = self._json("PUT", f"/model/{name}", files={"file": (weights.name, f)},
                              timeout=max(self.timeout, 300.0))
        return ModelInfo(checksum=str(data["checksum"]), modified_time=int(data.get("modified_time", 0)))

    def download_model(self, name: str, dest: Path) -> Path:
        """``GET /model/{name}``: the weights the server uses, written to ``dest``."""
        response = self._request("GET", f"/model/{name}", timeout=max(self.timeout, 300.0))
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(response.content)
        return dest

    # --- training ---------------------------------------------------------------------------
    def start_training(self, model: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """``POST /train/{model}`` with a JSON body of overrides (e.g. ``max_epochs``)."""
        result: dict[str, Any] = self._json("POST", f"/train/{model}", json=overrides or {})
        return result

    def training_status(self) -> dict[str, Any] | None:
        """``GET /train/``: the last training task (``status``, ``details``), None if there is none."""
        try:
            result: dict[str, Any] = self._json("GET", "/train/")
        except MonaiLabelError as exc:
            if exc.status == 404:
                return None
            raise
        return result

    def wait_training(self, task_id: str | None = None, *, timeout: float = 3600.0, poll: float = 5.0,
                      progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Poll ``GET /train/`` until the task ends; return its status or raise :class:`TrainingFailedError`.

        Parameters
        ----------
        task_id : str, optional
            The id ``start_training`` returned; another task's end does not count.
        timeout : float
            Seconds to wait in all (then :class:`MonaiLabelError` with status 0).
        poll : float
            Seconds between polls.
        progress : callable, optional
            Called with each status (for logs).
        """
        deadline = time.monotonic() + timeout
        while True:
            status = self.training_status()
            if status and progress:
                progress(status)
            if status and (task_id is None or status.get("id") == task_id):
                state = str(status.get("status", "")).upper()
                if state == "DONE":
                    return status
                if state in FINISHED:
                    raise TrainingFailedError("GET", f"{self.url}/train/", 200, json.dumps(status)[-2000:])
            if time.monotonic() > deadline:
                raise MonaiLabelError("GET", f"{self.url}/train/", 0,
                                      f"training did not finish within {timeout:.0f} s: {status}")
            time.sleep(poll)

    # --- annotation -------------------------------------------------------------------------
    def infer(self, model: str, image: str, params: dict[str, Any] | None = None,
              *, timeout: float = 900.0) -> bytes:
        """``POST /infer/{model}?image=ID&output=image``: the label image (NIfTI bytes)."""
        response = self._request("POST", f"/infer/{model}", params={"image": image, "output": "image"},
                                 data={"params": json.dumps(params or {})}, timeout=timeout)
        return response.content

    def save_label(self, image: str, label: Path, *, tag: str = "final",
                   params: dict[str, Any] | None = None) -> dict[str, Any]:
        """``PUT /datastore/label``: save a label of ``image`` (``final`` goes to the site as SEG)."""
        with label.open("rb") as f:
            result: dict[str, Any] = self._json(
                "PUT", "/datastore/label", params={"image": image, "tag": tag},
                files={"label": (label.name, f)}, data={"params": json.dumps(params or {})},
                timeout=max(self.timeout, 600.0))
        return result


def _retrying_session() -> requests.Session:
    """A session that retries idempotent requests whose connection failed.

    MONAI Label's server (uvicorn) closes a keep-alive connection after 5 s idle;
    a poll every 5 s can reuse one just as it closes and get a reset. A GET asked
    again on a new connection is the same request, so it is retried; POSTs are not.
    """
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    retry = Retry(total=3, connect=3, read=3, status=0, backoff_factor=0.5,
                  allowed_methods=frozenset({"GET", "HEAD", "OPTIONS"}), raise_on_status=False)
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
