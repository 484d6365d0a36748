# The project's image: Airflow 3.3 on Python 3.11 with this project installed from the pinned files.
FROM python:3.11-slim-bookworm
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 AIRFLOW_HOME=/opt/airflow
WORKDIR /opt/airflow
COPY requirements.txt constraints-airflow.txt pyproject.toml README.md ./
COPY include ./include
RUN pip install --no-cache-dir -r requirements.txt -c constraints-airflow.txt
COPY dags ./dags
COPY plugins ./plugins
