#!/usr/bin/env bash
# Start MONAI Label 0.8.5 (radiology app) on a static DICOMweb site, offline.
#
#   clients/monailabel/start.sh SITE_URL [PORT] [extra start_server args...]
#
# SITE_URL is the DICOMweb root (what `static-dicomweb serve` prints, or the CloudFront URL of the
# site's prefix). MONAI Label listens on 127.0.0.1:PORT (default 8000). Run clients/monailabel/setup.sh
# first.
#
# Environment (all optional):
#   MONAILABEL_WORK   folder for the app copy, the DICOMweb cache and sessions (default: a new mktemp -d);
#                     the app writes model/, logs/ and bin/ into its own folder, so it runs from a copy
#   MONAILABEL_MODELS the models to load, comma-separated (default spine_cpu, the project's small CPU
#                     model; the radiology app's localization_spine etc. load too, without weights:
#                     pretrained weights are never downloaded: use_pretrained_model false, sam2 false)
#   MONAI_LABEL_QIDO_PREFIX / _WADO_PREFIX / _STOW_PREFIX
#                     path segments that dicomweb-client appends to SITE_URL for each service; leave them
#                     unset when SITE_URL is the site root (dicomweb-client refuses an empty prefix)
#   MONAI_LABEL_DICOMWEB_USERNAME / _PASSWORD
#                     HTTP Basic credentials, sent on every request (GETs too); the password is the
#                     STOW token of `static-dicomweb serve --stow-token TOKEN`
#   any other MONAI_LABEL_* setting (monailabel/config.py), e.g. MONAI_LABEL_DICOMWEB_SEARCH_FILTER
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/.venv"
SITE_URL="${1:?usage: start.sh SITE_URL [PORT] [extra start_server args...]}"
PORT="${2:-8000}"
shift $(( $# >= 2 ? 2 : 1 ))

if [[ ! -f "$VENV/.installed" || ! -d "$HERE/apps/radiology" ]]; then
    echo "start.sh: MONAI Label is not set up; run $HERE/setup.sh" >&2
    exit 2
fi

WORK="${MONAILABEL_WORK:-$(mktemp -d -t monailabel.XXXXXX)}"
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
if [[ ! -f "$WORK/app/main.py" ]]; then
    rm -rf "$WORK/app"
    cp -r "$HERE/apps/radiology" "$WORK/app"
fi
# the project's own configs (spine_cpu) over the radiology app, every start (they may have changed)
cp -r "$HERE/app/." "$WORK/app/"
# spine_cpu's network and preprocessing come from the project's spine_model package
export PYTHONPATH="$(cd "$HERE/../../include" && pwd)${PYTHONPATH:+:$PYTHONPATH}"

# dicomweb-client raises on an empty prefix: drop empty ones instead of passing them on
for name in MONAI_LABEL_QIDO_PREFIX MONAI_LABEL_WADO_PREFIX MONAI_LABEL_STOW_PREFIX; do
    if [[ -z "${!name:-}" ]]; then unset "$name"; fi
done

# The venv's bin first: MONAI Label finds dcmqi's itkimage2segimage there (else it downloads dcmqi
# from GitHub when it starts) and runs `python -m pynetdicom` with whatever `python` is on PATH.
export PATH="$VENV/bin:$PATH"
export MONAI_LABEL_DICOMWEB_CACHE_PATH="${MONAI_LABEL_DICOMWEB_CACHE_PATH:-$WORK/cache}"
export MONAI_LABEL_SESSION_PATH="${MONAI_LABEL_SESSION_PATH:-$WORK/sessions}"
# no accidental downloads: Hugging Face and the MONAI model zoo are never reached from here
export HF_HUB_OFFLINE=1
# no MLflow experiment tracking unless asked for (it needs a tracking store)
export MONAI_LABEL_TRACKING_ENABLED="${MONAI_LABEL_TRACKING_ENABLED:-false}"

echo "start.sh: MONAI Label on http://127.0.0.1:$PORT/ for $SITE_URL (work folder $WORK)" >&2
# pydantic-settings also reads ./.env: run in the work folder, where there is none
cd "$WORK"
exec "$VENV/bin/python" -m monailabel.main start_server \
    --app "$WORK/app" --studies "$SITE_URL" \
    --conf models "${MONAILABEL_MODELS:-spine_cpu}" \
    --conf use_pretrained_model false --conf sam2 false \
    --host 127.0.0.1 --port "$PORT" "$@"
