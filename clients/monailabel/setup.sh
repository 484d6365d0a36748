#!/usr/bin/env bash
# MONAI Label 0.8.5 in its own virtualenv (clients/monailabel/.venv) and its radiology app
# (clients/monailabel/apps/radiology), for tests/test_monailabel.py.
#
# MONAI Label pins pydicom 2 and numpy 1 (the project's own .venv has pydicom 3 and numpy 2), so it
# cannot share the project's virtualenv. The pins below are the ones measured to work on this machine;
# pip takes torch and torchvision from the machine's local indexes (see `pip config list`), nothing is
# built from source except sam2 (pure Python, built against the installed torch, hence
# --no-build-isolation). The radiology app is copied from the monailabel wheel (offline).
#
# Idempotent: a stamp file in the virtualenv records the pins; a second run with the same pins does
# nothing. Delete clients/monailabel/.venv (and apps/) to start again.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/.venv"
APPS="$HERE/apps"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"

TORCH_PINS=(torch==2.14.1 torchvision==0.29.1)
SAM2_PIN=sam2==1.1.0
MONAI_PINS=(monailabel==0.8.5 monai==1.5.2 pydicom==2.4.4 "dicomweb-client[gcp]==0.59.3"
            pynetdicom==2.1.1 dcmqi==1.5.7)
PINS="${TORCH_PINS[*]} $SAM2_PIN ${MONAI_PINS[*]}"
STAMP="$VENV/.installed"

# one build at a time: a second caller (another test session) waits for the first, then finds it done
if [[ -z "${MONAILABEL_SETUP_LOCKED:-}" ]]; then
    exec env MONAILABEL_SETUP_LOCKED=1 flock "$HERE/.setup.lock" bash "${BASH_SOURCE[0]}" "$@"
fi

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$PINS" && -d "$APPS/radiology" ]]; then
    echo "monailabel: $VENV is up to date ($PINS)"
    exit 0
fi

"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version'

now() { date +%s.%N; }
took() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }
# the machine's pip config lists local indexes; pip warns about each missing project page: keep quiet
PIP=("$VENV/bin/python" -m pip install --quiet --quiet --disable-pip-version-check)

t_all=$(now)
t=$(now)
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
"${PIP[@]}" "pip>=24" "setuptools>=68" wheel
echo "monailabel: virtualenv ready ($(took "$t"))"

t=$(now)
"${PIP[@]}" "${TORCH_PINS[@]}"
echo "monailabel: ${TORCH_PINS[*]} ($(took "$t"))"

t=$(now)
"${PIP[@]}" --no-build-isolation "$SAM2_PIN"
echo "monailabel: $SAM2_PIN ($(took "$t"))"

t=$(now)
"${PIP[@]}" "${MONAI_PINS[@]}"
echo "monailabel: ${MONAI_PINS[*]} ($(took "$t"))"

t=$(now)
rm -rf "$APPS/radiology"
mkdir -p "$APPS"
# bin/monailabel runs whichever `python` is first on PATH; call the module with the venv's own
"$VENV/bin/python" -m monailabel.main apps --download --name radiology --output "$APPS" > /dev/null
test -f "$APPS/radiology/main.py"
echo "monailabel: radiology app in $APPS/radiology ($(took "$t"))"

# (pip check itself crashes here on itk's cp311-abi3 wheel tag, so check by importing instead)
"$VENV/bin/python" -c 'import dicomweb_client, monai, monailabel, pydicom, torch
print("monailabel: imports ok: monailabel", monailabel.__version__, "monai", monai.__version__, "torch",
      torch.__version__, "pydicom", pydicom.__version__, "dicomweb-client", dicomweb_client.__version__)'
echo "$PINS" > "$STAMP"
echo "monailabel: done in $(took "$t_all"); virtualenv $(du -sh "$VENV" | cut -f1)"
