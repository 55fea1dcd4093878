# The Airflow 3 image for this project: Airflow, Beam, TensorFlow/TFDS from the pinned
# requirements.txt, the imagenet_beam package, and the DAGs and plugins.
# docker-compose.yaml builds it (`docker compose build`) and bind-mounts dags/ and plugins/
# over the copies baked in here, so edits show up without a rebuild.
FROM python:3.11-slim

ENV AIRFLOW_HOME=/opt/airflow \
    HOME=/opt/airflow \
    USER=airflow \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2

# uid 50000 as in the official Airflow image. docker-compose.yaml runs the containers as
# ${AIRFLOW_UID}:0, so everything the processes write to belongs to group 0 and is
# group-writable: any uid in group 0 works.
RUN useradd --uid 50000 --gid 0 --home-dir /opt/airflow --no-create-home \
        --shell /bin/bash airflow \
    && mkdir -p /opt/airflow/dags /opt/airflow/plugins /opt/airflow/logs \
        /data/imagenet/manual /data/imagenet/tfds

WORKDIR /opt/airflow

# Third-party dependencies first (the slow layer, rebuilt only when requirements.txt
# changes): every pinned line except `-e ./beam`. They include the Postgres drivers the
# metadata DB needs (psycopg2 for the sync engine, asyncpg for the async engine that
# Airflow 3 derives from the same URL).
COPY requirements.txt /opt/airflow/requirements.txt
RUN python -m venv /opt/venv \
    && grep -v '^-e ./beam$' requirements.txt > /tmp/requirements-third-party.txt \
    && pip install -r /tmp/requirements-third-party.txt \
    && rm /tmp/requirements-third-party.txt

# The Beam package, installed non-editable (its dependencies came from requirements.txt
# above). The source stays at /opt/airflow/beam so Dataflow runs can ship it with
# --setup_file; IMAGENET_BEAM_SETUP_FILE tells the DAG where it is (the package in
# site-packages has no setup.py beside it).
COPY beam/pyproject.toml beam/setup.py /opt/airflow/beam/
COPY beam/imagenet_beam /opt/airflow/beam/imagenet_beam
ENV IMAGENET_BEAM_SETUP_FILE=/opt/airflow/beam/setup.py
RUN pip install --no-deps ./beam \
    && pip check \
    && python -c "import imagenet_beam, airflow, psycopg2, asyncpg"

COPY dags /opt/airflow/dags
COPY plugins /opt/airflow/plugins

RUN chown -R airflow:0 /opt/airflow /data/imagenet \
    && chmod -R g+rwX /opt/airflow /data/imagenet

USER 50000:0

EXPOSE 8080
CMD ["airflow", "--help"]
