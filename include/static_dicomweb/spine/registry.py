"""Published model weights, kept in the site's store next to the images they learned from.

::

    _models/<model>/<sha256>.pt     the weights (immutable)
    _models/<model>/current.json    which weights are current, their held-out Dice, where from

A model is published only when it beats the current one on the same held-out
split (:func:`should_publish`); ``current.json`` is written after the weights,
so a reader never sees it name missing weights.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from static_dicomweb import keys
from static_dicomweb.errors import KeyNotFoundError
from static_dicomweb.keys import ObjectSpec
from static_dicomweb.store import Store

PREFIX = "_models"


def weights_key(model: str, sha256: str) -> str:
    """The key of one weights file."""
    return f"{PREFIX}/{model}/{sha256}.pt"


def current_key(model: str) -> str:
    """The key of a model's ``current.json``."""
    return f"{PREFIX}/{model}/current.json"


def current(store: Store, model: str) -> dict[str, Any] | None:
    """The record of the current weights of ``model``, or None before the first publication."""
    try:
        record: dict[str, Any] = json.loads(store.get(current_key(model)))
    except KeyNotFoundError:
        return None
    return record


def fetch_weights(store: Store, model: str, dest: Path) -> dict[str, Any] | None:
    """Write the current weights of ``model`` to ``dest``; their record, or None if there are none."""
    record = current(store, model)
    if record is None:
        return None
    data = store.get(record["key"])
    if hashlib.sha256(data).hexdigest() != record["sha256"]:
        raise ValueError(f"{record['key']}: the weights do not match their SHA-256 in {current_key(model)}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)
    return record


def should_publish(candidate_dice: float | None, current_dice: float | None, *,
                   min_improvement: float = 0.0) -> bool:
    """Publish when there is no current model, or the candidate beats it by more than ``min_improvement``."""
    if candidate_dice is None:
        return False
    if current_dice is None:
        return True
    return candidate_dice > current_dice + min_improvement


def publish(store: Store, model: str, weights: Path, **info: Any) -> dict[str, Any]:
    """Store ``weights`` as the current weights of ``model``; return the new ``current.json``."""
    data = weights.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    key = weights_key(model, sha)
    if store.headers(key) is None:
        store.put(ObjectSpec(key, "application/octet-stream", cache_control=keys.INDEX), [data])
    record = {"model": model, "sha256": sha, "key": key, "bytes": len(data),
              "published_at": datetime.now(UTC).isoformat(timespec="seconds"), **info}
    store.put(ObjectSpec(current_key(model), "application/json", cache_control=keys.INDEX),
              [json.dumps(record, indent=1).encode()])
    return record
