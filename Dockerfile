# convoy: Airflow image with the convoy package, its DAG file and policies.
# The same image is the rollout runner (`python -m convoy.rollout`), so the
# policy's kubernetes.runnerImage can point at it.
FROM apache/airflow:3.3.2-python3.11

LABEL org.opencontainers.image.title="convoy" \
      org.opencontainers.image.description="Upgrade policies for Kubernetes services and their data, as Airflow DAGs"

WORKDIR /opt/convoy
COPY --chown=airflow:0 pyproject.toml README.md requirements.txt constraints.txt ./
COPY --chown=airflow:0 include ./include
# Constraints pin every transitive dependency, as Airflow's own images do.
RUN pip install --no-cache-dir -c constraints.txt -r requirements.txt . \
    && rm -rf /home/airflow/.cache

COPY --chown=airflow:0 dags /opt/airflow/dags
COPY --chown=airflow:0 plugins /opt/airflow/plugins

WORKDIR /opt/airflow
# The official image's non-root user; pods set runAsNonRoot and this uid.
USER 50000
