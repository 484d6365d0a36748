#!/bin/sh
# Creates the site bucket in MinIO and makes it readable anonymously (plain GETs, as a static
# DICOMweb site is read), once MinIO answers. Idempotent: run it again and nothing changes.
#
# Run by the `minio-init` service of docker-compose.yaml with the MinIO image's own `mc`.
# Environment: MINIO_URL (http://minio:9000), MINIO_ROOT_USER, MINIO_ROOT_PASSWORD,
# MINIO_BUCKET (dicomweb).
#
# CORS: MinIO's community edition has no per-bucket CORS (`mc cors set` is an AIStor feature);
# the server's MINIO_API_CORS_ALLOW_ORIGIN (set in docker-compose.yaml) answers browsers instead.
set -eu

url="${MINIO_URL:-http://minio:9000}"
bucket="${MINIO_BUCKET:-dicomweb}"

# `mc alias set` contacts the server, so it doubles as the wait for MinIO
tries=0
until mc alias set site "$url" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null 2>&1; do
  tries=$((tries + 1))
  if [ "$tries" -ge 60 ]; then
    echo "minio-init: MinIO at $url did not answer in 120 s" >&2
    exit 1
  fi
  sleep 2
done

mc mb --ignore-existing "site/$bucket"
# download: anonymous GetObject (and listing) on the bucket; writes still need the keys
mc anonymous set download "site/$bucket"
mc anonymous get "site/$bucket"
echo "minio-init: s3://$bucket ready; anonymous read at $url/$bucket/"
