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
# Build: docker compose build   (or: docker build -t static-dicomweb:dev .)
FROM python:3.11-slim-bookworm

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    AIRFLOW_HOME=/opt/airflow \
    HOME=/opt/airflow

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
EXPOSE 8080
CMD ["airflow", "version"]
