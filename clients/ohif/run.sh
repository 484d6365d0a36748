#!/usr/bin/env bash
# OHIF against a site folder, in headless Chromium, by hand:
#   clients/ohif/run.sh SITE_DIR [OUT_DIR]        (default OUT_DIR: .artifacts/ohif/run)
# Serves SITE_DIR with `static-dicomweb serve` and the OHIF build with serve_ohif.py (both on
# 127.0.0.1, free ports), runs viewer-test.mjs, stops both servers; exit status that of the test.
# OHIF_ISOLATION=1 serves OHIF with COOP/COEP. Needs clients/ohif/setup.sh to have run.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
SITE="${1:?usage: run.sh SITE_DIR [OUT_DIR]}"
OUT="${2:-$ROOT/.artifacts/ohif/run}"
PY="$ROOT/.venv/bin/python"
[[ -x "$PY" ]] || PY=python3
[[ -d "$HERE/node_modules/playwright-core" && -f "$HERE/ohif-dist/index.html" ]] || {
    echo "run.sh: run clients/ohif/setup.sh first" >&2; exit 2; }

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
SITE_PORT=$(free_port)
LOGS=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$LOGS"; }
trap cleanup EXIT

"$PY" -m static_dicomweb serve "$SITE" --host 127.0.0.1 --port "$SITE_PORT" 2> "$LOGS/site.log" &
pids+=($!)
isolation=()
[[ "${OHIF_ISOLATION:-}" == 1 ]] && isolation=(--isolation)
"$PY" "$HERE/serve_ohif.py" --site-url "http://127.0.0.1:$SITE_PORT" "${isolation[@]}" > "$LOGS/ohif.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do
    grep -q '^OHIF http' "$LOGS/ohif.log" && curl -s -o /dev/null "http://127.0.0.1:$SITE_PORT/studies" && break
    sleep 0.2
done
OHIF_URL=$(awk '/^OHIF http/ {print $2}' "$LOGS/ohif.log")
[[ -n "$OHIF_URL" ]] || { cat "$LOGS/ohif.log" "$LOGS/site.log" >&2; exit 3; }
echo "site http://127.0.0.1:$SITE_PORT/  OHIF $OHIF_URL"
node "$HERE/viewer-test.mjs" --ohif "$OHIF_URL" --site "http://127.0.0.1:$SITE_PORT" --out "$OUT"
