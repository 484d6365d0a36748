# The project's Airflow image: Airflow 3.3.2 on Python 3.11 with this project, installed from the
# same pinned files as the development and CI virtualenv:
#
#   pip install -r requirements.txt -c constraints-airflow.txt
#
# Base: python:3.11-slim-bookworm, not apache/airflow:3.3.2-python3.11. constraints-airflow.txt is
# frozen from the environment the tests pass in (Airflow 3.3.2, the Amazon provider, boto3, numpy 2,
# pydicom 3, ...). The official image already holds a larger, differently pinned set (Airflow's own
# constraints and some 40 providers); installing this project's pins over it would move packages
# under those providers in ways nothing has tested. On the slim base the containers run exactly the
# tested set. What the official image's entrypoint did is spelled out in docker-compose.yaml
# (airflow-init runs `airflow db migrate`; health checks use Python rather than curl).
#
# The same image runs `static-dicomweb serve s3://... --viewer` (the `dicomweb` service), so it holds
# OHIF's published viewer build (@ohif/app's dist/, at /opt/ohif-dist, named by
# STATIC_DICOMWEB_OHIF_DIST): a first stage fetches it with clients/ohif/setup.sh --build-only, the
# script `make view` uses, which checks the tarball against the integrity in package.json. And it
# holds Debian's nginx with its njs module, for compose's `nginx` profile (a site folder served by
# `static-dicomweb nginx-config`).
#
# Build: docker compose build   (or: docker build -t static-dicomweb:dev .)
# -- OHIF's published build (only its dist/ is kept; node is not in the final image) ----------
FROM node:20-bookworm-slim AS ohif
WORKDIR /ohif
COPY clients/ohif/package.json clients/ohif/package-lock.json clients/ohif/setup.sh ./
RUN bash setup.sh --build-only

# -- the project ----------------------------------------------------------------------------
FROM python:3.11-slim-bookworm

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    AIRFLOW_HOME=/opt/airflow \
    HOME=/opt/airflow \
    STATIC_DICOMWEB_OHIF_DIST=/opt/ohif-dist

# Like the official image: user `airflow` (uid 50000) in group 0, and every writable folder
# group-0-writable, so the containers also run as any AIRFLOW_UID in group 0 (user: "UID:0").
# The folders that docker-compose.yaml mounts named volumes on exist here with that ownership, so
# a new volume starts with it: logs, /data/site (the DAG's default destination) and the DAG's
# default download folder.
RUN useradd --uid 50000 --gid 0 --home-dir /opt/airflow --no-create-home --shell /bin/bash airflow \
    && mkdir -p /opt/airflow/dags /opt/airflow/plugins /opt/airflow/logs /opt/airflow/config \
                /data/dicom /data/site /tmp/static-dicomweb-downloads \
    && chown -R 50000:0 /opt/airflow /data /tmp/static-dicomweb-downloads \
    && chmod -R g+rwX /opt/airflow /data /tmp/static-dicomweb-downloads

# nginx and njs for the `nginx` profile; Debian's package would start a server on port 80 when
# installed, which a policy-rc.d forbids (the profile runs nginx in the foreground, as AIRFLOW_UID)
RUN printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d \
    && apt-get update \
    && apt-get install -y --no-install-recommends nginx libnginx-mod-http-js \
    && rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d

COPY --from=ohif /ohif/ohif-dist /opt/ohif-dist

WORKDIR /opt/airflow
COPY requirements.txt constraints-airflow.txt pyproject.toml README.md ./
COPY include ./include
# `-e .` (last line of requirements.txt) installs this project from /opt/airflow/include; the
# compose file mounts ./include there, so the containers run the working tree's library.
RUN pip install -r requirements.txt -c constraints-airflow.txt \
    && chown -R 50000:0 /opt/airflow && chmod -R g+rwX /opt/airflow
COPY --chown=50000:0 dags ./dags
COPY --chown=50000:0 plugins ./plugins

USER 50000
EXPOSE 8080 8042 8043
CMD ["airflow", "version"]
