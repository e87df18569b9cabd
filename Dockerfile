# syntax=docker/dockerfile:1
# convoy: the official Airflow image plus the convoy package, its DAG file,
# policies and plugins. One image serves the scheduler, API server, DAG
# processor, triggerer and KubernetesExecutor worker pods, and is the default
# `kubernetes.runnerImage` of the rollout pods (`python -m convoy.rollout`).
#
# Build:  docker build --build-arg CONVOY_VERSION=0.1.0 -t registry.example.com/convoy:0.1.0 .
# See docs/deploy.md. Lint: `make lint` (hadolint) and `make lint-deploy` (checkov).

# ---------------------------------------------------------------------------
# Stage 1: build the convoy wheel. Only the wheel leaves this stage, so the
# source tree, setuptools' build directories and pip's caches never reach the
# final image.
# ---------------------------------------------------------------------------
FROM apache/airflow:3.3.2-python3.11 AS build
# pip builds in-tree, so the sources are copied to a directory the airflow
# user (uid 50000) may write; this image expects pip to run as that user.
COPY pyproject.toml README.md /opt/convoy-src/
COPY include /opt/convoy-src/include
RUN cp -r /opt/convoy-src /tmp/convoy-src \
    && pip wheel --no-cache-dir --no-deps --wheel-dir /tmp/wheels /tmp/convoy-src

# ---------------------------------------------------------------------------
# Stage 2: the runtime image. Keep the tag in step with requirements.txt's
# apache-airflow pin (tests/deploy/test_requirements.py checks both).
# ---------------------------------------------------------------------------
FROM apache/airflow:3.3.2-python3.11

ARG CONVOY_VERSION=0.1.0
ARG AIRFLOW_VERSION=3.3.2
ARG VCS_REF=unknown
ARG BUILD_DATE=unknown

LABEL org.opencontainers.image.title="convoy" \
      org.opencontainers.image.description="Upgrade policies for Kubernetes services and their data, as Airflow DAGs" \
      org.opencontainers.image.version="${CONVOY_VERSION}" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.created="${BUILD_DATE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/apache/airflow:${AIRFLOW_VERSION}-python3.11" \
      org.opencontainers.image.vendor="convoy"

# The official image runs as `airflow` (uid 50000, gid 0) and installs Python
# packages into that user's site; it warns against `pip install` as root.
# Pods set runAsUser: 50000 / runAsNonRoot: true (deploy/pod_template.yaml,
# deploy/helm/values.yaml), so the numeric uid here must stay 50000.
USER 50000

# requirements.txt lists the top-level runtime dependencies; constraints.txt
# pins every transitive version (Airflow constraints-file style, one source of
# truth, checked by tests/deploy/test_requirements.py). apache-airflow is
# pinned in requirements.txt as well, so pip can never up- or downgrade the
# Airflow that the base image ships. The wheel is bind-mounted from the build
# stage, so it does not stay in a layer; --no-cache-dir keeps pip's cache out.
WORKDIR /opt/airflow
COPY --chown=airflow:0 requirements.txt constraints.txt /opt/convoy/
# The wheel is installed by file name (never resolved from an index), so a
# CONVOY_VERSION that differs from pyproject.toml fails the build instead of
# mislabelling the image.
RUN --mount=type=bind,from=build,source=/tmp/wheels,target=/tmp/convoy-wheels \
    pip install --no-cache-dir \
        --constraint /opt/convoy/constraints.txt \
        --requirement /opt/convoy/requirements.txt \
        "/tmp/convoy-wheels/convoy-${CONVOY_VERSION}-py3-none-any.whl" \
    && python -c "import convoy, airflow; assert airflow.__version__ == '${AIRFLOW_VERSION}', airflow.__version__" \
    && rm -rf /home/airflow/.cache

# DAGs and policies are baked into the image (git-sync is the documented
# alternative, see docs/deploy.md); read-only for the runtime user.
COPY --chown=root:0 --chmod=0755 dags /opt/airflow/dags
COPY --chown=root:0 --chmod=0755 plugins /opt/airflow/plugins

# Containers run with a read-only root filesystem: do not write bytecode
# next to the sources, and keep Python's output unbuffered for the task logs.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    CONVOY_VERSION=${CONVOY_VERSION}

# No Docker HEALTHCHECK: this one image runs as the scheduler, API server, DAG
# processor, triggerer, short-lived worker pods and rollout pods, and each role
# needs a different check (`airflow jobs check --job-type SchedulerJob`, an HTTP
# probe on /api/v2/monitor/health, none at all for batch pods). Kubernetes
# ignores the Dockerfile HEALTHCHECK anyway; the Helm chart defines per-role
# liveness/readiness/startup probes. `HEALTHCHECK NONE` states this explicitly
# and also disables any check inherited from the base image.
HEALTHCHECK NONE
