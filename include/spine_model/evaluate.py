"""Dice of a weights file on a data set's held-out split.

``python -m spine_model.evaluate --data D --weights model.pt [--out metrics.json]``
prints one JSON line (``dice``, ``per_case``); weights that are missing give
``{"dice": null}`` so a first model always has something to beat.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import checkpoint
from .data import load_split, read_manifest
from .metrics import evaluate
from .specs import spec


def main(argv: list[str] | None = None) -> int:
    """Command line: evaluate weights on the held-out split."""
    p = argparse.ArgumentParser(prog="python -m spine_model.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--weights", type=Path, required=True)
    p.add_argument("--model", default="")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    model = spec(args.model or read_manifest(args.data).get("model") or "spine_cpu")
    if not args.weights.exists():
        result: dict[str, object] = {"model": model.name, "dice": None, "per_case": {}, "cases": 0}
    else:
        net = checkpoint.load(args.weights, model)
        result = {"model": model.name, **evaluate(net, load_split(args.data, "heldout", model), model)}
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
