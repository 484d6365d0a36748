#!/usr/bin/env bash
# Runs the project image's compose commands in containers, without Compose and without the other
# images (no PostgreSQL, Redis or MinIO image needed): moto's S3 server on the host stands in for
# MinIO, every container uses the host's network and listens on 127.0.0.1, free ports.
#
#   docker compose build            # or: docker build -t static-dicomweb-airflow:dev .
#   docker/check-image.sh [IMAGE]   # default static-dicomweb-airflow:dev; DOCKER_HOST is honoured
#
# Checks: the default command (airflow version), uid 50000 in group 0, OHIF's build where
# STATIC_DICOMWEB_OHIF_DIST says, nginx and njs; the DAGs parse with no import errors; `dicomweb`'s
# command (serve s3://dicomweb/site --endpoint-url ... --viewer, MinIO's keys, a STOW token) on a
# converted site: the query routing, /viewer/ and its app-config.js, the service's health check run
# inside the container; the nginx profile's command as uid 50000 on a folder site (the same answer
# to series?Modality=CT as the S3 front, a hidden file refused) and a STOW-RS through nginx to
# `serve` in the image, read back through nginx. Needs the project's .venv (moto, the CLI).
set -euo pipefail
cd "$(dirname "$0")/.."
IMG=${1:-static-dicomweb-airflow:dev}
V=$PWD/.venv/bin
W=$(mktemp -d -t sdw-image-check.XXXXXX)
chmod 777 "$W"
port() { $V/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
cleanup() {
  docker rm -f sdw-dicomweb sdw-nginx sdw-folder >/dev/null 2>&1 || true
  if [[ -n "${MOTO:-}" ]]; then kill "$MOTO" 2>/dev/null || true; fi
  rm -rf "$W"
}
trap cleanup EXIT

echo "== image: default command, user, OHIF build, nginx"
docker run --rm $IMG
docker run --rm $IMG bash -c 'id; ls /opt/ohif-dist/index.html /opt/ohif-dist/app-config.js; echo "STATIC_DICOMWEB_OHIF_DIST=$STATIC_DICOMWEB_OHIF_DIST"; nginx -v; ls /usr/lib/nginx/modules/ngx_http_js_module.so; static-dicomweb --version'
echo "== the DAGs parse in the image"
docker run --rm -e AIRFLOW__CORE__LOAD_EXAMPLES=false $IMG python -c 'from airflow.dag_processing.dagbag import DagBag; b = DagBag("/opt/airflow/dags"); print("import errors:", b.import_errors); print("dags:", sorted(b.dag_ids)); assert not b.import_errors and "dicomweb_site" in b.dag_ids'

echo "== dicomweb: serve s3://dicomweb/site --viewer in the image, moto on the host as MinIO"
MP=$(port); $V/moto_server -H 127.0.0.1 -p $MP > $W/moto.log 2>&1 & MOTO=$!
export AWS_ACCESS_KEY_ID=minioadmin AWS_SECRET_ACCESS_KEY=minioadmin AWS_DEFAULT_REGION=us-east-1
for i in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:$MP && break; sleep 0.2; done
$V/python -c "import boto3; boto3.client('s3', endpoint_url='http://127.0.0.1:$MP').create_bucket(Bucket='dicomweb')"
$V/static-dicomweb sample $W/in --patients 1 --slices 8 --rows 64 > /dev/null 2>&1
$V/static-dicomweb convert $W/in --out s3://dicomweb/site --endpoint-url http://127.0.0.1:$MP 2> $W/convert.log
SP=$(port)
docker run -d --name sdw-dicomweb --network host --user 50000:0 -e AWS_ACCESS_KEY_ID -e AWS_SECRET_ACCESS_KEY -e AWS_DEFAULT_REGION \
  -e STATIC_DICOMWEB_STOW_TOKEN=tok $IMG static-dicomweb serve s3://dicomweb/site --endpoint-url http://127.0.0.1:$MP \
  --host 127.0.0.1 --port $SP --viewer > /dev/null
for i in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:$SP/viewer/ && break; sleep 0.2; done
docker logs sdw-dicomweb
for p in 'series?Modality=CT' studies viewer/ viewer/app-config.js; do
  curl -sf -o /dev/null -w "GET /$p -> %{http_code} %{content_type} %{size_download} B\n" "http://127.0.0.1:$SP/$p"; done
curl -sf --compressed "http://127.0.0.1:$SP/series?Modality=CT" | $V/python -c 'import json,sys; n = len(json.load(sys.stdin)); print(n, "CT series"); assert n == 5'
docker exec sdw-dicomweb python -c "import urllib.request; urllib.request.urlopen('http://localhost:$SP/series?Modality=CT', timeout=10)" && echo "dicomweb health check (in the container): ok"

echo "== nginx profile: nginx-config + nginx as uid 50000 on a folder site, STOW to serve in the image"
$V/static-dicomweb convert $W/in --out $W/site 2> /dev/null; chmod -R a+rwX $W/site  # the volume: written by the DAG as AIRFLOW_UID, group 0
NP=$(port); FP=$(port)
docker run -d --name sdw-folder --network host --user 50000:0 -e STATIC_DICOMWEB_STOW_TOKEN=tok -v $W/site:/data/site $IMG \
  static-dicomweb serve /data/site --host 127.0.0.1 --port $FP > /dev/null
docker run -d --name sdw-nginx --network host --user 50000:0 -v $W/site:/data/site:ro $IMG bash -c "set -eu
static-dicomweb nginx-config /data/site --listen 127.0.0.1:$NP --upstream http://127.0.0.1:$FP --out /tmp/dicomweb-nginx
exec nginx -e /tmp/dicomweb-nginx/startup.log -p /tmp/dicomweb-nginx -c /tmp/dicomweb-nginx/nginx.conf" > /dev/null
for i in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:$NP/studies && break; sleep 0.2; done
docker logs sdw-nginx 2>&1 | tail -5
for p in 'series?Modality=CT' studies; do
  curl -sf -o /dev/null -w "nginx GET /$p -> %{http_code} %{content_type}\n" "http://127.0.0.1:$NP/$p"; done
code=$(curl -s -o /dev/null -w "%{http_code}" "http://127.0.0.1:$NP/_site/.lock")
echo "nginx GET /_site/.lock -> $code"; [[ $code == 4* ]]
$V/python - "$NP" "$SP" <<'PY'
import sys, requests
nginx, front = (f"http://127.0.0.1:{p}" for p in sys.argv[1:3])
a = requests.get(f"{nginx}/series?Modality=CT", timeout=30); b = requests.get(f"{front}/series?Modality=CT", timeout=30)
print("nginx (folder site) and dicomweb (S3 site) answer series?Modality=CT alike:", a.content == b.content)
assert a.status_code == b.status_code == 200 and a.content == b.content
PY
$V/python - "$NP" "$W/in" <<'PY'
import sys, pathlib, pydicom, requests
from dicomweb_client.api import DICOMwebClient
url, folder = f"http://127.0.0.1:{sys.argv[1]}", pathlib.Path(sys.argv[2])
ds = pydicom.dcmread(sorted(folder.rglob("*.dcm"))[0])
ds.SeriesInstanceUID = ds.SOPInstanceUID = pydicom.uid.generate_uid()
s = requests.Session(); s.headers["Authorization"] = "Bearer tok"
DICOMwebClient(url, session=s).store_instances([ds])
got = requests.get(f"{url}/series", params={"SeriesInstanceUID": ds.SeriesInstanceUID}, timeout=30).json()
print("STOW through nginx into the folder, read back through nginx:", len(got) == 1)
assert len(got) == 1
PY
docker logs sdw-folder 2>&1 | tail -3
echo "== all image checks done"
